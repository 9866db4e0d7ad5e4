"""VTI (plugins/methods/vti.py): the steering formula and the direction by hand, parity at strength 0,
no hook or weight left behind, directions cached per checkpoint, and a run on the committed tiny model."""
from __future__ import annotations

import pytest
import torch

from plugins.benchmarks.pope import answer_clarity
from plugins.methods.vti import VTI, SteerOutput, mask_patches, mean_plus_principal_axis, steer_toward
from plugins.models.batch import Batch
from plugins.models.llava import TINY_LLAVA_CHECKPOINT, LlavaAdapter
from plugins.world import SceneSampler, WorldConfig, existence_questions, render
from tests.test_llava_adapter import all_hooks

SMALL = {"num_demos": 4, "num_trials": 3}  # a few seconds' worth of demos; the formulas are the same


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private, empty artifact cache for one test."""
    monkeypatch.setenv("ALIGNSCOPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def world_batch() -> Batch:
    """Four test-split world scenes, each with one object question."""
    world = WorldConfig()
    scenes = [SceneSampler(world).sample_split("test", i) for i in range(4)]
    return Batch([render(s, world) for s in scenes], [existence_questions(s, world, n=1)[0].text for s in scenes])


def counting(monkeypatch) -> list[int]:
    """Count calls of VTI.compute_directions (the wrapped method still computes)."""
    calls: list[int] = []
    original = VTI.compute_directions

    def wrapped(self, model):
        calls.append(1)
        return original(self, model)

    monkeypatch.setattr(VTI, "compute_directions", wrapped)
    return calls


# ---------------------------------------------------------------- formulas by hand

def test_steer_toward_by_hand():
    # x/‖x‖ = (0.6, 0.8); + 1.2·(−1, 0) = (−0.6, 0.8), already of norm 1; times ‖x‖ = 5 → (−3, 4)
    x = torch.tensor([3.0, 4.0])
    assert torch.allclose(steer_toward(x, torch.tensor([-7.0, 0.0]), 1.2), torch.tensor([-3.0, 4.0]), atol=1e-6)
    assert torch.allclose(steer_toward(x, torch.tensor([-7.0, 0.0]), 0.0), x)  # no strength, no change
    # per-token directions (T, D) broadcast over the batch; each token keeps its own norm
    tokens = torch.tensor([[[3.0, 4.0], [0.0, 2.0]]])  # (B=1, T=2, D=2)
    directions = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])  # (T, D)
    hook_out = SteerOutput(directions, 1.2)(None, (), tokens)
    s = 1.2 / (1 + 1.2 ** 2) ** 0.5  # second token: (0, 1) + 1.2·(1, 0), normalised, times 2
    assert torch.allclose(hook_out, torch.tensor([[[-3.0, 4.0], [2 * s, 2 / (1 + 1.2 ** 2) ** 0.5]]]), atol=1e-6)
    assert torch.allclose(hook_out.norm(dim=-1), tokens.norm(dim=-1))
    assert tokens.tolist() == [[[3.0, 4.0], [0.0, 2.0]]]  # input untouched


def test_direction_is_mean_plus_signed_principal_axis():
    # differences along x: mean (2, 1); centred scores (−2, −1, 3)/√14, the largest (3) made positive → axis (1, 0)
    diffs = torch.tensor([[0.0, 1.0], [1.0, 1.0], [5.0, 1.0]])
    assert torch.allclose(mean_plus_principal_axis(diffs), torch.tensor([3.0, 1.0]), atol=1e-6)
    # negated differences: mean (−2, −1), largest score now −3 → flipped axis (−1, 0); batched over a leading dim
    both = mean_plus_principal_axis(torch.stack([diffs, -diffs]))
    assert torch.allclose(both, torch.tensor([[3.0, 1.0], [-3.0, -1.0]]), atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 demos"):
        mean_plus_principal_axis(diffs[:1])


def test_mask_patches_sets_the_chosen_patches_to_the_channel_mean():
    pixels = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 4, 4)  # 2 channels, 2×2 patches of 2 px
    masked = mask_patches(pixels, 3, 2, torch.Generator().manual_seed(0))
    means = pixels.mean(dim=(1, 2))  # channel 0: 7.5, channel 1: 23.5
    patches = [(r, c) for r in range(2) for c in range(2)]
    kept = [p for p in patches if torch.equal(masked[:, 2 * p[0]:2 * p[0] + 2, 2 * p[1]:2 * p[1] + 2],
                                              pixels[:, 2 * p[0]:2 * p[0] + 2, 2 * p[1]:2 * p[1] + 2])]
    assert len(kept) == 1
    for r, c in set(patches) - set(kept):
        block = masked[:, 2 * r:2 * r + 2, 2 * c:2 * c + 2]
        assert torch.equal(block, means.view(2, 1, 1).expand(2, 2, 2))


def test_config_defaults_are_the_official_ones_and_typos_fail():
    config = VTI().config
    assert (config.alpha_image, config.alpha_text, config.scale) == (0.9, 0.9, 0.1)
    assert (config.num_demos, config.num_trials, config.mask_ratio, config.seed) == (70, 50, 0.99, 42)
    with pytest.raises(ValueError, match="did you mean 'alpha_text'"):
        VTI({"alpha_txt": 1.0})


# ---------------------------------------------------------------- on a model

def test_strength_zero_is_plain_greedy(adapter, world_batch, monkeypatch):
    plain = adapter.generate(world_batch, max_new_tokens=6)
    monkeypatch.setattr(VTI, "compute_directions", lambda self, model: pytest.fail("nothing to compute at strength 0"))
    for config in ({"alpha_image": 0, "alpha_text": 0}, {"scale": 0}):
        assert adapter.generate(world_batch, max_new_tokens=6, method=VTI(config)) == plain


def test_steering_changes_the_logits_and_leaves_no_hook_or_weight(adapter, world_batch, cache):
    adapter.generate(world_batch[:1], max_new_tokens=1)  # transformers installs its own capturing hooks once
    hooks_before = all_hooks(adapter)
    weights_before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    plain = adapter.next_token_logits(world_batch)
    method = VTI(SMALL)
    with method.hooks(adapter, world_batch):
        n_vision, n_text = len(adapter.vision_tower.encoder.layers), len(adapter.decoder_layers)
        assert len(all_hooks(adapter) - hooks_before) == n_vision + n_text  # one per MLP
        steered = adapter.next_token_logits(world_batch)
    assert not torch.allclose(plain, steered, atol=1e-4)
    answers = adapter.generate(world_batch, max_new_tokens=6, method=method)
    assert len(answers) == len(world_batch)
    assert all_hooks(adapter) == hooks_before
    after = adapter.model.state_dict()
    assert all(torch.equal(weights_before[k], after[k]) for k in weights_before)
    assert torch.equal(adapter.next_token_logits(world_batch), plain)


def test_directions_have_one_entry_per_layer_and_token(adapter):
    directions = VTI(SMALL).compute_directions(adapter)
    vision, text = directions["vision"], directions["text"]
    config = adapter.config
    tokens = (config.vision_config.image_size // config.vision_config.patch_size) ** 2 + 1  # patches + CLS
    assert vision.shape == (config.vision_config.num_hidden_layers, tokens, config.vision_config.hidden_size)
    assert text.shape == (config.text_config.num_hidden_layers, config.text_config.hidden_size)
    assert torch.isfinite(vision).all() and torch.isfinite(text).all() and text.norm() > 0
    assert VTI({**SMALL, "alpha_image": 0}).compute_directions(adapter)["vision"] is None


def test_directions_are_computed_once_per_checkpoint_and_config(adapter, world_batch, cache, monkeypatch):
    calls = counting(monkeypatch)
    first = VTI(SMALL)
    first.hooks(adapter, world_batch)
    first.hooks(adapter, world_batch[:2])  # the next chunk: from memory
    assert len(calls) == 1 and len(list((cache / "vti-directions").glob("*.pt"))) == 1
    second = VTI(SMALL)  # a new instance: from disk
    assert torch.equal(second.directions(adapter)["text"], first.directions(adapter)["text"])
    assert len(calls) == 1
    VTI({**SMALL, "seed": 1}).directions(adapter)  # another config: computed afresh
    assert len(calls) == 2
    in_memory = LlavaAdapter(adapter.model, adapter.processor)  # no checkpoint directory: never cached
    VTI(SMALL).directions(in_memory)
    assert len(calls) == 3 and len(list((cache / "vti-directions").glob("*.pt"))) == 2


def test_committed_tiny_checkpoint_answers_world_questions(world_batch, cache):
    model = LlavaAdapter.load(TINY_LLAVA_CHECKPOINT, device="cpu")
    answers = model.generate(world_batch, max_new_tokens=6, method=VTI({"num_demos": 8, "num_trials": 10}))
    assert len(answers) == len(world_batch) and all(answer_clarity(a) in ("yes", "no") for a in answers), answers
