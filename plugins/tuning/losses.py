"""The objectives of the parameter-tuning methods, as plain functions of tensors.

Each function takes already-computed quantities (summed log-probabilities, embeddings, logits) so
that it can be checked on a handful of numbers worked out by hand (``tests/test_tuning_losses.py``);
the trainer (:mod:`plugins.tuning.trainer`) produces those quantities from the model. Notation:
``π`` is the model being tuned (the *policy*), ``ref`` the frozen copy it started from, ``x`` the
image and prompt, ``y_w`` the preferred (faithful) answer, ``y_l`` the rejected (hallucinated) one,
``log π(y|x)`` the sum of the log-probabilities of the answer's tokens, ``σ`` the logistic function.

* :func:`dpo_loss` — DPO (Rafailov et al. 2023), as HA-DPO trains it;
* :func:`rdpo_loss` — Re-Align's rDPO: DPO plus a visual preference term;
* :func:`contrastive_loss` — HACL's image-text contrastive loss with hallucinated captions as
  extra negatives;
* :func:`sft_loss` — the token-level cross-entropy of instruction tuning (LRV, and the language
  loss HACL adds to its contrastive term);
* :func:`sequence_logps` and :func:`runner_up_logps` — how ``log π(y|x)`` is read off the logits,
  the second being the variant Re-Align's released trainer actually uses (see there).

>>> import torch
>>> losses = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]))
>>> round(float(losses[0]), 4)  # -log σ(0.1 · ((-1 + 3) - (-2 + 2))) = -log σ(0.2)
0.5981
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from plugins.models.data import IGNORE  # label of positions without loss (prompt, image tokens, padding)

__all__ = ["IGNORE", "dpo_loss", "rdpo_loss", "contrastive_loss", "sft_loss", "sequence_logps", "runner_up_logps"]

def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        listing = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"expected one summed log-probability per pair in every argument, got {listing}")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """Per-pair DPO loss (B,) from summed answer log-probabilities, each (B,).

    ``L = −log σ(β · [(log π(y_w|x) − log π(y_l|x)) − (log ref(y_w|x) − log ref(y_l|x))])``

    The policy gains by raising the faithful answer's likelihood relative to the reference more
    than the hallucinated one's. Official default ``β = 0.1`` (HA-DPO's ``BaseDPOTrainer`` and its
    LLaVA-1.5 run command ``--beta 0.1``; Re-Align's ``train_lora_rdpo.sh``). The loss at the
    start of training, when the policy equals the reference, is ``log 2 ≈ 0.693`` for every pair.
    """
    _check_same_shape(policy_chosen=policy_chosen, policy_rejected=policy_rejected,
                      reference_chosen=reference_chosen, reference_rejected=reference_rejected)
    if beta <= 0:
        raise ValueError(f"beta is {beta!r}, expected a positive number (the official default is 0.1)")
    margin = (policy_chosen - policy_rejected) - (reference_chosen - reference_rejected)  # (B,)
    return -F.logsigmoid(beta * margin)


def rdpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, policy_chosen_retrieved: torch.Tensor,
              reference_chosen: torch.Tensor, reference_rejected: torch.Tensor,
              reference_chosen_retrieved: torch.Tensor, beta: float = 0.1, visual_weight: float = 1.0) -> torch.Tensor:
    """Per-pair rDPO loss (B,): DPO on the answers plus a preference for the right image, each input (B,).

    ``L = −log σ(β · [(log π(y_w|x) − log π(y_l|x)) − (log ref(y_w|x) − log ref(y_l|x))])``
    ``    − λ · log σ(β · [(log π(y_w|x) − log π(y_w|x̃)) − (log ref(y_w|x) − log ref(y_w|x̃))])``

    where ``x̃`` is the same prompt with the *retrieved* image (a similar but different image):
    the second term asks the faithful answer to become more likely with its own image than with
    the retrieved one, relative to the reference. In Re-Align's ``rDPOtrainer.py`` (``dpo_loss``,
    taco-group/Re-Align at a82ce56) the two terms are simply added, i.e. ``λ = 1``; ``λ =
    visual_weight`` is ours, and ``λ = 0`` gives :func:`dpo_loss` exactly (the term is skipped, not
    multiplied by zero). Official defaults: ``β = 0.1`` (``train_lora_rdpo.sh``), ``λ = 1``.
    Re-Align's optional SFT term on the chosen answer (``sft_weight``, default 0) is
    :func:`sft_loss`, added by the trainer when asked for.
    """
    _check_same_shape(policy_chosen=policy_chosen, policy_chosen_retrieved=policy_chosen_retrieved,
                      reference_chosen=reference_chosen, reference_chosen_retrieved=reference_chosen_retrieved)
    if visual_weight < 0:
        raise ValueError(f"visual_weight is {visual_weight!r}, expected 0 (plain DPO) or more (official: 1)")
    losses = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
    if visual_weight == 0:
        return losses
    visual_margin = (policy_chosen - policy_chosen_retrieved) - (reference_chosen - reference_chosen_retrieved)  # (B,)
    return losses - visual_weight * F.logsigmoid(beta * visual_margin)


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, hallucinated: Optional[torch.Tensor] = None,
                     temperature: float | torch.Tensor = 0.07) -> torch.Tensor:
    """HACL's image-text contrastive loss (a scalar) over B matching pairs and H hallucinated captions.

    ``image`` (B, D) and ``text`` (B, D) are the global representations of B images and their
    faithful captions (row i matches row i); ``hallucinated`` (H, D) are representations of
    captions with hallucinations written in. Every vector is L2-normalised here. With ``s(a, b) =
    a·b / τ``::

        L_i2t = −1/B Σ_i log [ exp s(v_i, t_i) / (Σ_j exp s(v_i, t_j) + Σ_h exp s(v_i, h_h)) ]
        L_t2i = −1/B Σ_i log [ exp s(t_i, v_i) / Σ_j exp s(t_i, v_j) ]
        L     = (L_i2t + L_t2i) / 2

    so an image is pulled towards its faithful caption and pushed away from the other captions
    and, as hard negatives, from every hallucinated caption; the hallucinated captions appear only
    on the image-to-text side, as in the official code (``llava_llama.py`` of
    X-PLUG/mPLUG-HalOwl/hacl: the hallucinated embeddings are appended to ``text_feat_all``, the
    columns of ``sim_i2t``). Official temperature: a learned ``itc_temp`` initialised at 0.07 and
    clamped to [0.001, 0.5]; the trainer keeps it learnable and clamped the same way.
    """
    if image.ndim != 2 or text.shape != image.shape:
        raise ValueError(f"image {tuple(image.shape)} and text {tuple(text.shape)} must both be (B, D), row i matching row i")
    if hallucinated is not None and (hallucinated.ndim != 2 or hallucinated.shape[1] != image.shape[1]):
        raise ValueError(f"hallucinated is {tuple(hallucinated.shape)}, expected (H, {image.shape[1]})")
    v = F.normalize(image, dim=-1)  # (B, D)
    t = F.normalize(text, dim=-1)  # (B, D)
    columns = t if hallucinated is None else torch.cat([t, F.normalize(hallucinated, dim=-1)])  # (B + H, D)
    target = torch.arange(len(v), device=v.device)  # (B,) row i's positive is column i
    i2t = F.cross_entropy(v @ columns.t() / temperature, target)
    t2i = F.cross_entropy(t @ v.t() / temperature, target)
    return (i2t + t2i) / 2


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions (a scalar).

    ``logits`` (B, T, V) at every position, ``labels`` (B, T) the input ids where the loss applies
    and :data:`IGNORE` elsewhere; position t predicts label t+1 (the shift a causal LM needs)::

        L = −1/N Σ_{b,t: labels[b,t+1] ≠ IGNORE} log softmax(logits[b,t])[labels[b,t+1]]

    with N the number of labelled positions. This is what ``LlamaForCausalLM`` computes from
    ``labels``, and what LRV-Instruction and HACL's language loss use (prompt tokens masked).
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on (B, T)")
    shifted = labels[:, 1:]  # (B, T-1)
    if not (shifted != IGNORE).any():
        raise ValueError("no labelled position: every label is IGNORE, so there is nothing to learn from")
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), shifted.flatten(), ignore_index=IGNORE)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log π(y|x)`` per sequence (B,): the summed log-probabilities of the labelled tokens.

    Same shift and mask as :func:`sft_loss`, summed instead of averaged (DPO compares whole
    answers; ``_get_batch_logps(average_log_prob=False)`` in the official trainers).
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on (B, T)")
    shifted = labels[:, 1:]  # (B, T-1)
    mask = shifted != IGNORE  # (B, T-1)
    logp = logits[:, :-1].float().log_softmax(-1)  # (B, T-1, V)
    picked = logp.gather(-1, shifted.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return (picked * mask).sum(-1)


def runner_up_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log-probability (B,) of the strongest *other* token at each labelled position.

    At each position the token scored is the argmax of the logits unless that is the label, in
    which case it is the second-best token. This is ``_get_noisy_batch_logps`` of the
    ``dpo_trainer.py`` that Re-Align ships (its README replaces trl's file with it), which
    ``rDPOtrainer.py`` uses for the rejected answer and for the chosen answer under the retrieved
    image — not the log-probability of the text itself, as the paper's equation reads. Offered by
    the ``rdpo`` method as ``scoring="official"``; the default scores the text.
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on (B, T)")
    shifted = labels[:, 1:]  # (B, T-1)
    mask = shifted != IGNORE  # (B, T-1)
    scores = logits[:, :-1].float()  # (B, T-1, V)
    top2 = scores.topk(2, dim=-1).indices  # (B, T-1, 2)
    other = torch.where(top2[..., 0] == shifted, top2[..., 1], top2[..., 0])  # (B, T-1)
    picked = scores.log_softmax(-1).gather(-1, other.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return (picked * mask).sum(-1)
