"""OPERA (over-trust penalty in beam search); plain beam search, its baseline, is the baseline under a beam protocol."""
from __future__ import annotations

import pytest
import torch

from plugins.methods.attention import AttentionEdit
from plugins.models.decoding import Protocol
from plugins.methods.opera import IMAGE_PHASE_TOKENS, OperaProcessor, column_scores, opera_penalty
from plugins.models.batch import Batch
from plugins.registry import create_method, list_methods
from tests.test_methods_contrastive import all_hooks
from tests.tiny_llava import language_model_passes, pope_style_batch, random_images


@pytest.fixture(scope="module")
def batch():
    return Batch(images=random_images(4, seed=5), prompts=["is there a cat ?", "what color ?", "describe the image .",
                                                           "is the dog left of the cat ?"], seed=2)


BEAMS3 = Protocol(decoding="beam", num_beams=3)


def test_registered_with_official_defaults_and_the_beams_are_the_protocols():
    assert "opera" in list_methods() and "beam" not in list_methods()
    opera = create_method("opera")
    assert (opera.config.scale_factor, opera.config.num_attn_candidates, opera.config.penalty_weight) == (50.0, 5, 1.0)
    with pytest.raises(ValueError, match="num_beams"):
        create_method("opera", {"num_beams": 5})  # the protocol searches, not the method


# ---------------------------------------------------------------- the penalty on hand-computed tensors

def test_column_scores_multiply_each_columns_scaled_attention():
    window = torch.tensor([[0.6, 0.0, 0.0],
                           [0.5, 0.5, 0.0],
                           [0.2, 0.3, 0.5]], dtype=torch.float64)
    # scale 10: column 0: 6·5·2 = 60; column 1: 5·3 = 15; column 2: 5
    assert torch.allclose(column_scores(window, 10.0), torch.tensor([60e-7, 15e-7, 5e-7], dtype=torch.float64))


def test_penalty_is_the_image_bonus_early_and_the_largest_column_later():
    short = torch.eye(3, dtype=torch.float64)
    image_attention = torch.tensor(0.25, dtype=torch.float64)
    assert opera_penalty(short, image_attention, 50.0).item() == -0.25  # short answer: look at the image
    length = IMAGE_PHASE_TOKENS + 1
    long = torch.zeros(length, length, dtype=torch.float64)
    long[:, 0] = 0.5  # every token attends to the first answer token
    long[torch.arange(length), torch.arange(length)] = 0.5
    long[0, 0] = 1.0
    expected = 1e-7 * 50.0 * 25.0 ** (length - 1)  # column 0: 50·1 then 25 per later row
    assert torch.isclose(opera_penalty(long, image_attention, 50.0), torch.tensor(expected, dtype=torch.float64))


# ---------------------------------------------------------------- on the tiny model

def test_candidate_attention_equals_a_full_pass_with_the_candidate_appended(adapter, batch):
    """The one-pass candidate rows (cache copy + 4-D mask) match running each candidate alone without a cache."""
    from transformers import DynamicCache

    method = create_method("opera", {"num_attn_candidates": 3})
    encoded = adapter.encode(batch)
    with torch.inference_mode(), method.hooks(adapter, batch):
        processor = method.logits_processors(adapter, batch)[0]
        cache = DynamicCache()
        out = adapter.model(**encoded.model_inputs(), past_key_values=cache, use_cache=True)
        method._state.pop("probs")
        before = [(keys.clone(), values.clone()) for keys, values, *_ in cache]
        logits = out.logits[:, -1].clone()
        logits[:, adapter.image_token_id] = float("-inf")  # the random model may favour it; the full pass would refuse
        candidates = logits.topk(3).indices  # (B, 3)
        rows = processor._candidate_rows(encoded.input_ids, candidates)  # (B, 3, T + 1)
        some = processor._candidate_rows(encoded.input_ids, candidates, [2, 0])  # the same, on rows 2 and 0 of the cache
        assert torch.allclose(some, rows[[2, 0]], atol=1e-6)
        for c in range(3):
            ids = torch.cat([encoded.input_ids, candidates[:, c:c + 1]], dim=1)
            mask = torch.cat([encoded.attention_mask, encoded.attention_mask.new_ones(len(batch), 1)], dim=1)
            adapter.model(input_ids=ids, attention_mask=mask, pixel_values=encoded.pixel_values,
                          position_ids=(mask.cumsum(-1) - 1).clamp_min(0))
            alone = method._state.pop("probs")[:, :, -1, :].double().amax(dim=1)
            alone = alone / alone.sum(dim=-1, keepdim=True)
            assert torch.allclose(rows[:, c], alone, atol=1e-5), c
    assert cache.get_seq_length() == encoded.input_ids.shape[1]  # generate's cache is left as it was
    assert all(torch.equal(k0, k1) and torch.equal(v0, v1) for (k0, v0), (k1, v1, *_) in zip(before, cache))


def test_without_penalty_over_all_tokens_opera_is_plain_beam_search(adapter, batch):
    vocab = adapter.model.config.text_config.vocab_size
    off = create_method("opera", {"penalty_weight": 0.0, "num_attn_candidates": vocab})
    assert adapter.generate(batch, max_new_tokens=6, method=off, protocol=BEAMS3) == \
        adapter.generate(batch, max_new_tokens=6, protocol=BEAMS3)


def test_answers_do_not_depend_on_the_batch_size(adapter, batch):
    method = create_method("opera", {"scale_factor": 5.0})
    assert adapter.generate(batch, max_new_tokens=12, method=method, batch_size=1, protocol=BEAMS3) == \
        adapter.generate(batch, max_new_tokens=12, method=method, batch_size=4, protocol=BEAMS3)


@pytest.mark.parametrize("name", ["opera", "baseline"])
def test_a_shared_prompt_prefix_leaves_beam_answers_unchanged(adapter, name):
    """Three questions per image: the prompt prefix is encoded once per image (2 rows), then each
    item's remaining tokens once, then its last token once per beam; answers are as alone."""
    batch = pope_style_batch()
    method = create_method(name, {"scale_factor": 5.0} if name == "opera" else {})
    with language_model_passes(adapter) as passes:
        together = adapter.generate(batch, max_new_tokens=8, method=method, batch_size=len(batch), protocol=BEAMS3)
    rows = [r for r, _ in passes]
    assert rows[:3] == [2, len(batch), 3 * len(batch)], rows
    if name == "opera":  # at the first step the 3 beams of an item are alike: one candidate row per item
        assert passes[3] == (len(batch), 5), passes
    assert together == [adapter.generate(batch[i], max_new_tokens=8, method=method, protocol=BEAMS3)[0]
                        for i in range(len(batch))]


def test_the_model_is_unchanged_afterwards(adapter, batch):
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    hooks = all_hooks(adapter)
    implementation = adapter.model.config.text_config._attn_implementation
    adapter.generate(batch, max_new_tokens=4, method=create_method("opera"), protocol=BEAMS3)
    assert all_hooks(adapter) == hooks
    assert adapter.model.config.text_config._attn_implementation == implementation
    after = adapter.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_penalty_changes_beam_scores_on_the_default_model():
    """On the committed world model the image bonus re-ranks candidates (not a no-op)."""
    from plugins.models.adapter import LlavaAdapter
    from plugins.models.lookup import TINY_LLAVA_CHECKPOINT
    from plugins.world import WorldConfig
    from plugins.world.render import render
    from plugins.world.scene import SceneSampler

    model = LlavaAdapter.load(TINY_LLAVA_CHECKPOINT, device="cpu")
    sampler = SceneSampler(WorldConfig())
    images = [render(sampler.sample_split("test", i), WorldConfig()) for i in range(3)]
    batch = Batch(images=images, prompts=["is there a red circle in the image ?"] * 3, seed=0)
    method = create_method("opera")
    encoded = model.encode(batch)
    with torch.inference_mode(), method.hooks(model, batch):
        processor = method.logits_processors(model, batch)[0]
        from transformers import DynamicCache

        out = model.model(**encoded.model_inputs(), past_key_values=DynamicCache(), use_cache=True)
        log_probs = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        scores = processor(encoded.input_ids, log_probs)
    top = log_probs.topk(5)
    assert torch.isfinite(scores.gather(-1, top.indices)).all()
    renormalised = torch.log_softmax(top.values, dim=-1)
    assert not torch.allclose(scores.gather(-1, top.indices), renormalised, atol=1e-4)  # the bonus moved them
    assert (scores.scatter(-1, top.indices, -1000.0) < -900).all()  # every other token is excluded


def test_attention_edit_rows_are_restored_for_other_methods(adapter, batch):
    """The edit OPERA installs is gone afterwards: a later plain AttentionEdit sees only its own callbacks."""
    adapter.generate(batch[:1], max_new_tokens=2, method=create_method("opera"))
    seen = []
    with AttentionEdit(adapter, {0}, after=lambda layer, probs, mask: seen.append(layer)):
        adapter.next_token_logits(batch[:1])
    assert seen == [0]
