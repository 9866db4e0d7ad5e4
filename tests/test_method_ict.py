"""ICT (plugins/methods/ict.py): the head shift and the directions by hand, the probes' head selection,
parity at alpha 0, no hook or weight left behind, directions cached per checkpoint, and a run on the
committed tiny model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from plugins.benchmarks.pope import answer_clarity
from plugins.methods.ict import ICT, AddAtLastPosition, layer_shifts
from plugins.models.adapter import LlavaAdapter
from plugins.models.lookup import TINY_LLAVA_CHECKPOINT
from plugins.trainers.ict import _fit_logistic, blur_box, gaussian_blur, probe_accuracies, select_heads, trusted_directions
from tests.method_checks import computations_while_caching, hooks_while_steering

SMALL = {"num_demos": 24}  # 4 demo scenes of 6 questions


# ---------------------------------------------------------------- formulas by hand

def test_shift_goes_to_the_last_position_only():
    x = torch.zeros(2, 3, 4)  # (B, T, H·hd) with 2 heads of 2
    shift = torch.tensor([0.0, 0.0, 2.4, 3.2])  # α=8 · σ=0.5 · u=(0.6, 0.8) on head 1
    out, extra = AddAtLastPosition(shift)(None, (x, "kept"))
    assert torch.equal(out[:, :-1], torch.zeros(2, 2, 4))
    assert torch.allclose(out[:, -1], torch.tensor([[0.0, 0.0, 2.4, 3.2]] * 2))
    assert extra == "kept" and torch.equal(x, torch.zeros(2, 3, 4))  # the input is not modified


def test_layer_shifts_add_the_levels_per_head():
    image = {"heads": torch.tensor([[0, 1], [1, 0]]), "directions": torch.tensor([[0.6, 0.8], [1.0, 0.0]]),
             "stds": torch.tensor([0.5, 2.0])}
    obj = {"heads": torch.tensor([[0, 1]]), "directions": torch.tensor([[0.0, 1.0]]), "stds": torch.tensor([1.0])}
    shifts = layer_shifts([image, obj], 8.0, n_layers=3, n_heads=2, head_dim=2)
    assert sorted(shifts) == [0, 1]  # layer 2 holds no selected head: no hook there
    assert torch.allclose(shifts[0], torch.tensor([0.0, 0.0, 8 * 0.5 * 0.6, 8 * 0.5 * 0.8 + 8 * 1.0]))
    assert torch.allclose(shifts[1], torch.tensor([16.0, 0.0, 0.0, 0.0]))


def test_trusted_direction_and_std_by_hand():
    trusted = torch.tensor([[[1.0, 0.0]], [[3.0, 0.0]]])  # (n=2, U=1, d=2)
    untrusted = torch.tensor([[[-1.0, 2.0]], [[-3.0, 2.0]]])
    units, stds = trusted_directions(trusted, untrusted)
    # mean difference (2, 0) − (−2, 2) = (4, −2) → unit (2, −1)/√5; projections 2, 6, −4, −8 (over √5)
    assert torch.allclose(units, torch.tensor([[2.0, -1.0]]) / 5 ** 0.5)
    projections = torch.tensor([2.0, 6.0, -4.0, -8.0]) / 5 ** 0.5
    assert torch.allclose(stds, projections.std(unbiased=False).view(1))


def test_probes_solve_the_logistic_objective_and_rank_the_informative_unit_first():
    generator = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2  # balanced, alternating labels
    x = torch.randn(200, 2, 3, generator=generator)  # unit 1: noise
    x[:, 0, 0] += 4.0 * (2 * y - 1)  # unit 0: the label shows in its first coordinate
    accuracy = probe_accuracies(x, y, folds=2)
    assert accuracy[0] > 0.95 and accuracy[1] < 0.7
    w, b = _fit_logistic(x, y, 1.0)  # at the optimum the objective's gradient vanishes
    w, b = w.requires_grad_(), b.requires_grad_()
    margins = (2 * y.double() - 1)[:, None] * (torch.einsum("nud,ud->nu", x.double(), w) + b)
    (0.5 * (w * w).sum() + F.softplus(-margins).sum()).backward()
    assert w.grad.abs().max() < 1e-4 and b.grad.abs().max() < 1e-4


def test_select_heads_keeps_the_separating_head_with_its_shift():
    generator = torch.Generator().manual_seed(1)
    trusted = torch.randn(40, 2, 2, 3, generator=generator)  # (n, L, H, hd)
    untrusted = torch.randn(40, 2, 2, 3, generator=generator)
    trusted[:, 1, 0, 2] += 5.0  # only layer 1, head 0 tells them apart
    chosen = select_heads(trusted, untrusted, k=1, folds=2, seed=55)
    assert chosen["heads"].tolist() == [[1, 0]]
    assert chosen["accuracy"].shape == (2, 2) and chosen["accuracy"].argmax().item() == 2
    assert chosen["directions"][0, 2] > 0.9  # points from untrusted to trusted
    assert chosen["stds"][0] > 2.0  # both clouds, 5 apart along that axis


def test_blur_keeps_flat_images_and_spreads_a_point():
    flat = np.full((9, 9, 3), 100, np.uint8)
    assert np.array_equal(gaussian_blur(flat, 2.0), flat)
    point = np.zeros((21, 21, 3), np.uint8)
    point[10, 10] = 255
    blurred = gaussian_blur(point, 1.0).astype(int)
    assert blurred[10, 10, 0] < 255 and blurred[10, 11, 0] == blurred[11, 10, 0] == blurred[9, 10, 0] > 0
    assert abs(blurred[..., 0].sum() - 255) < 10  # the kernel sums to 1 (up to rounding)
    hidden = blur_box(flat * 0, flat, (2, 3, 5, 7))  # rows 3..6, columns 2..4 come from the other image
    assert hidden[3:7, 2:5].min() == 100 and hidden.sum() == 100 * 3 * 4 * 3


def test_config_defaults_are_the_official_ones_and_typos_fail():
    config = ICT().config
    assert (config.alpha, config.levels, config.num_demos, config.folds, config.seed) == (8.0, "both", 1500, 2, 55)
    assert config.head_fraction == 256 / (32 * 128) and config.blur_radius == 5.0
    with pytest.raises(ValueError, match="did you mean 'alpha'"):
        ICT({"alpah": 1.0})


# ---------------------------------------------------------------- on a model

def test_alpha_zero_is_plain_greedy(adapter, world_questions, monkeypatch):
    plain = adapter.generate(world_questions, max_new_tokens=6)
    monkeypatch.setattr(ICT, "trainer", staticmethod(lambda *a, **k: pytest.fail("nothing to compute at alpha 0")))
    assert adapter.generate(world_questions, max_new_tokens=6, method=ICT({"alpha": 0})) == plain


def test_shifting_changes_the_logits_and_leaves_no_hook_or_weight(adapter, world_questions, artifact_cache):
    added = hooks_while_steering(adapter, world_questions, ICT(SMALL))
    assert added and all(name.endswith("self_attn.o_proj") and kind == "pre" for name, kind, _ in added)


def test_directions_hold_the_selected_heads_of_each_level(adapter):
    config = adapter.config.text_config
    n_heads = config.num_attention_heads
    directions = ICT({**SMALL, "head_fraction": 0.25}).compute_directions(adapter)
    assert sorted(directions) == ["image", "object"]
    for chosen in directions.values():
        k = round(0.25 * config.num_hidden_layers * n_heads)
        assert chosen["heads"].shape == (k, 2) and chosen["directions"].shape == (k, config.hidden_size // n_heads)
        assert torch.allclose(chosen["directions"].norm(dim=-1), torch.ones(k)) and (chosen["stds"] > 0).all()
        best = chosen["accuracy"].flatten().topk(k).values.min()
        assert all(chosen["accuracy"][layer, head] >= best for layer, head in chosen["heads"].tolist())
    assert sorted(ICT({**SMALL, "levels": "object"}).compute_directions(adapter)) == ["object"]


def test_directions_are_computed_once_per_checkpoint_and_config(adapter, world_questions, artifact_cache, monkeypatch):
    computations_while_caching(adapter, world_questions, ICT, SMALL, artifact_cache, monkeypatch)


def test_committed_tiny_checkpoint_answers_world_questions(world_questions, artifact_cache):
    model = LlavaAdapter.load(TINY_LLAVA_CHECKPOINT, device="cpu")
    answers = model.generate(world_questions, max_new_tokens=6, method=ICT({"num_demos": 60}))
    assert len(answers) == len(world_questions) and all(answer_clarity(a) in ("yes", "no") for a in answers), answers


def test_prefix_passes_are_not_shifted_so_shared_prefixes_change_no_answer(adapter, artifact_cache):
    """Three questions per image share the image and the prompt's start: that prefix is encoded once,
    in a pass the shift skips; every answer equals the answer of its item alone (no shared prefix)."""
    from tests.tiny_llava import language_model_passes, pope_style_batch

    batch = pope_style_batch()
    method = ICT({**SMALL, "alpha": 50.0})  # large enough to change answers of the random tiny model
    method.directions(adapter)  # computed (and cached) before the passes are counted
    with language_model_passes(adapter) as passes:
        together = adapter.generate(batch, max_new_tokens=6, method=method, batch_size=len(batch))
    assert passes[0][0] == 2, passes  # the prefix pass: one row per image
    alone = [adapter.generate(batch[i], max_new_tokens=6, method=method)[0] for i in range(len(batch))]
    assert together == alone
    assert together != adapter.generate(batch, max_new_tokens=6, batch_size=len(batch))  # the shift did act
    shift = torch.ones(4)
    hook = AddAtLastPosition(shift, adapter)
    x = torch.zeros(1, 2, 4)
    with adapter._encoding_prefix(True):
        assert hook(None, (x,)) is None  # a prefix pass is left alone
    assert torch.equal(hook(None, (x,))[0][:, -1], torch.ones(1, 4))
