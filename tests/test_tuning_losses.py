"""The tuning objectives (plugins/tuning/losses.py) on tensors small enough to work out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from plugins.tuning.losses import IGNORE, contrastive_loss, dpo_loss, rdpo_loss, runner_up_logps, sequence_logps, sft_loss


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


# ---------------------------------------------------------------- DPO and rDPO

def test_dpo_loss_by_hand():
    # pair 1: policy margin (-1) - (-3) = 2, reference margin (-2) - (-2) = 0 → -log σ(0.1 · 2)
    # pair 2: policy margin (-4) - (-1) = -3, reference margin (-2) - (-1) = -1 → -log σ(0.1 · -2)
    losses = dpo_loss(torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -1.0]),
                      torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -1.0]), beta=0.1)
    assert losses.tolist() == pytest.approx([-log_sigmoid(0.2), -log_sigmoid(-0.2)], abs=1e-6)
    assert losses[0] < math.log(2) < losses[1]  # preferring the chosen answer more than the reference does lowers it


def test_dpo_loss_is_log_two_when_the_policy_is_the_reference():
    chosen, rejected = torch.tensor([-3.0, -0.5, -7.0]), torch.tensor([-1.0, -9.0, -7.0])
    assert torch.allclose(dpo_loss(chosen, rejected, chosen, rejected), torch.full((3,), math.log(2)))


def test_beta_scales_the_margin():
    args = torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0])
    assert float(dpo_loss(*args, beta=0.5)) == pytest.approx(-log_sigmoid(1.0), abs=1e-6)  # 0.5 · 2
    with pytest.raises(ValueError, match="beta is 0"):
        dpo_loss(*args, beta=0)
    with pytest.raises(ValueError, match="one summed log-probability per pair"):
        dpo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2))


def test_rdpo_loss_by_hand():
    # text term as in the DPO test (margin 2); visual term: policy (-1) - (-5) = 4, reference (-2) - (-3) = 1 → margin 3
    loss = rdpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-5.0]),
                     torch.tensor([-2.0]), torch.tensor([-2.0]), torch.tensor([-3.0]), beta=0.1, visual_weight=1.0)
    assert float(loss) == pytest.approx(-log_sigmoid(0.2) - log_sigmoid(0.3), abs=1e-6)
    half = rdpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-5.0]),
                     torch.tensor([-2.0]), torch.tensor([-2.0]), torch.tensor([-3.0]), beta=0.1, visual_weight=0.5)
    assert float(half) == pytest.approx(-log_sigmoid(0.2) - 0.5 * log_sigmoid(0.3), abs=1e-6)


def test_rdpo_with_visual_weight_zero_equals_dpo_exactly():
    g = torch.Generator().manual_seed(0)
    pc, pr, pv, rc, rr, rv = (torch.randn(16, generator=g) * 20 for _ in range(6))
    pv[0] = float("-inf")  # even an impossible retrieved-image answer leaves DPO untouched at weight 0
    assert torch.equal(rdpo_loss(pc, pr, pv, rc, rr, rv, beta=0.1, visual_weight=0.0), dpo_loss(pc, pr, rc, rr, beta=0.1))
    assert not torch.equal(rdpo_loss(pc, pr, pv, rc, rr, rv, visual_weight=1.0), dpo_loss(pc, pr, rc, rr))
    with pytest.raises(ValueError, match="visual_weight is -1"):
        rdpo_loss(pc, pr, pv, rc, rr, rv, visual_weight=-1)


def test_losses_have_gradients_towards_the_chosen_answer():
    chosen = torch.tensor([-2.0], requires_grad=True)
    rejected = torch.tensor([-2.0], requires_grad=True)
    retrieved = torch.tensor([-2.0], requires_grad=True)
    rdpo_loss(chosen, rejected, retrieved, torch.tensor([-2.0]), torch.tensor([-2.0]), torch.tensor([-2.0])).sum().backward()
    # d/dx -log σ(βx) at x = 0 is -β/2 per term: the chosen answer appears in both terms
    assert chosen.grad.item() == pytest.approx(-0.1, abs=1e-6)
    assert rejected.grad.item() == pytest.approx(0.05, abs=1e-6)
    assert retrieved.grad.item() == pytest.approx(0.05, abs=1e-6)


# ---------------------------------------------------------------- log-probabilities of sequences

def test_sequence_logps_sums_the_labelled_tokens_after_the_shift():
    # one sequence of 3 positions over a vocabulary of 2; labels at positions 1 and 2 (position 0 is prompt)
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, 5.0]]])  # (1, 3, 2)
    labels = torch.tensor([[IGNORE, 1, 0]])
    # position 0 predicts label 1: p = 1/2; position 1 predicts label 0: p = 3/4
    assert sequence_logps(logits, labels).tolist() == pytest.approx([math.log(0.5) + math.log(0.75)], abs=1e-6)
    assert sequence_logps(logits, torch.tensor([[IGNORE, IGNORE, IGNORE]])).tolist() == [0.0]


def test_runner_up_logps_scores_the_best_token_that_is_not_the_label():
    logits = torch.tensor([[[1.0, 3.0, 2.0], [4.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])  # (1, 3, 3)
    labels = torch.tensor([[IGNORE, 1, 2]])
    logp = logits.log_softmax(-1)
    # position 0: label 1 is the argmax → the runner-up, token 2; position 1: label 2 is not the argmax → token 0
    expected = logp[0, 0, 2] + logp[0, 1, 0]
    assert runner_up_logps(logits, labels).tolist() == pytest.approx([float(expected)], abs=1e-6)


def test_sft_loss_is_the_mean_cross_entropy_of_the_labelled_tokens():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, 5.0]],
                           [[0.0, math.log(4.0)], [1.0, 1.0], [1.0, 1.0]]])  # (2, 3, 2)
    labels = torch.tensor([[IGNORE, 1, 0], [IGNORE, 1, IGNORE]])
    # three labelled tokens: p = 1/2, 3/4 (first row), 4/5 (second row)
    expected = -(math.log(0.5) + math.log(0.75) + math.log(0.8)) / 3
    assert float(sft_loss(logits, labels)) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="no labelled position"):
        sft_loss(logits, torch.full_like(labels, IGNORE))


# ---------------------------------------------------------------- HACL's contrastive loss

def test_contrastive_loss_by_hand():
    image = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # normalised: e1, e2
    text = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # normalised: e1, (e1 + e2)/√2
    hallucinated = torch.tensor([[0.0, -5.0]])  # normalised: -e2
    t = 0.5
    r = 1 / math.sqrt(2)
    # image→text rows over [t1, t2, h]: image 1: (1, r, 0)/t; image 2: (0, r, -1)/t
    i2t = (-math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(r / t) + 1))
           - math.log(math.exp(r / t) / (1 + math.exp(r / t) + math.exp(-1 / t)))) / 2
    # text→image rows over [v1, v2]: text 1: (1, 0)/t; text 2: (r, r)/t
    t2i = (-math.log(math.exp(1 / t) / (math.exp(1 / t) + 1)) - math.log(0.5)) / 2
    assert float(contrastive_loss(image, text, hallucinated, t)) == pytest.approx((i2t + t2i) / 2, abs=1e-6)


def test_hallucinated_captions_close_to_the_image_raise_the_loss():
    image, text = torch.eye(3), torch.eye(3)
    far, near = -torch.eye(3), torch.eye(3) + 0.1
    assert contrastive_loss(image, text, far) < contrastive_loss(image, text, near)
    assert contrastive_loss(image, text) < contrastive_loss(image, text, near)
    with pytest.raises(ValueError, match=r"expected \(H, 3\)"):
        contrastive_loss(image, text, torch.zeros(2, 4))
