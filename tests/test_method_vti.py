"""VTI (plugins/methods/vti.py): the steering formula and the direction by hand, parity at strength 0,
no hook or weight left behind, directions cached per checkpoint, and a run on the committed tiny model."""
from __future__ import annotations

import pytest
import torch

from plugins.benchmarks.pope import answer_clarity
from plugins.methods.vti import VTI
from plugins.models.adapter import LlavaAdapter
from plugins.models.lookup import TINY_LLAVA_CHECKPOINT
from plugins.trainers.vti import SteerOutput, mask_patches, mean_plus_principal_axis, steer_toward
from tests.method_checks import computations_while_caching, hooks_while_steering

SMALL = {"num_demos": 4, "num_trials": 3}  # a few seconds' worth of demos; the formulas are the same


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


def test_principal_axis_is_a_unit_vector_whose_largest_score_is_positive():
    # a raw SVD returns either sign (about half of these sets would come out negative); the rule fixes it
    diffs = torch.randn(20, 5, 3, generator=torch.Generator().manual_seed(0))  # 20 sets of 5 demos
    axis = mean_plus_principal_axis(diffs) - diffs.mean(1)  # (20, 3)
    scores = torch.einsum("bnf,bf->bn", diffs - diffs.mean(1, keepdim=True), axis)  # (20, 5)
    assert torch.allclose(axis.norm(dim=-1), torch.ones(20))
    assert (scores.gather(1, scores.abs().argmax(1, keepdim=True)) > 0).all()


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

def test_strength_zero_is_plain_greedy(adapter, world_questions, monkeypatch):
    plain = adapter.generate(world_questions, max_new_tokens=6)
    monkeypatch.setattr(VTI, "trainer", staticmethod(lambda *a, **k: pytest.fail("nothing to compute at strength 0")))
    for config in ({"alpha_image": 0, "alpha_text": 0}, {"scale": 0}):
        assert adapter.generate(world_questions, max_new_tokens=6, method=VTI(config)) == plain


def test_steering_changes_the_logits_and_leaves_no_hook_or_weight(adapter, world_questions, artifact_cache):
    added = hooks_while_steering(adapter, world_questions, VTI(SMALL))
    mlps = {f"model.vision_tower.encoder.layers.{i}.mlp" for i in range(len(adapter.vision_tower.encoder.layers))}
    mlps |= {f"model.language_model.layers.{i}.mlp" for i in range(len(adapter.decoder_layers))}
    assert {(name, kind) for name, kind, _ in added} == {(name, "forward") for name in mlps}  # one per MLP


def test_directions_have_one_entry_per_layer_and_token(adapter):
    directions = VTI(SMALL).compute_directions(adapter)
    vision, text = directions["vision"], directions["text"]
    config = adapter.config
    tokens = (config.vision_config.image_size // config.vision_config.patch_size) ** 2 + 1  # patches + CLS
    assert vision.shape == (config.vision_config.num_hidden_layers, tokens, config.vision_config.hidden_size)
    assert text.shape == (config.text_config.num_hidden_layers, config.text_config.hidden_size)
    assert torch.isfinite(vision).all() and torch.isfinite(text).all() and text.norm() > 0
    assert VTI({**SMALL, "alpha_image": 0}).compute_directions(adapter)["vision"] is None


def test_directions_are_computed_once_per_checkpoint_and_config(adapter, world_questions, artifact_cache, monkeypatch):
    calls = computations_while_caching(adapter, world_questions, VTI, SMALL, artifact_cache, monkeypatch)
    in_memory = LlavaAdapter(adapter.model, adapter.processor)  # no checkpoint directory: computed, never cached
    VTI(SMALL).directions(in_memory)
    assert len(calls) == 3 and len(list((artifact_cache / "vti-directions").glob("*.pt"))) == 2


def test_committed_tiny_checkpoint_answers_world_questions(world_questions, artifact_cache):
    model = LlavaAdapter.load(TINY_LLAVA_CHECKPOINT, device="cpu")
    answers = model.generate(world_questions, max_new_tokens=6, method=VTI({"num_demos": 8, "num_trials": 10}))
    assert len(answers) == len(world_questions) and all(answer_clarity(a) in ("yes", "no") for a in answers), answers
