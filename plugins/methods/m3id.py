"""M3ID — Multi-Modal Mutual-Information Decoding (Favero et al., CVPR 2024).

The contrast stream is the question *without the image*. The longer the answer, the more the
language model's own continuation takes over (the paper measures visual information fading
with length), so the correction grows with the generated-token index t::

    γ_t = exp(−λ·t)
    scores = l(v, x) + (1 − γ_t)/γ_t · (l(v, x) − l(x))    on plausible tokens, −inf elsewhere

λ = 0.02 and the plausibility cut β = 0.1 follow the reference implementation in RITUAL's
official code (``ritual_utils/ritual_sample.py``, which re-implements M3ID; the authors did not
release theirs). At t = 0, γ = 1 and the first token is plain greedy: on yes/no benchmarks,
where the answer is the first token, M3ID cannot change anything by construction. ``lam = 0``
turns it off entirely.

>>> import torch
>>> from plugins.registry import create_method
>>> m3id = create_method("m3id")
>>> l, text_only = torch.tensor([[2.0, 1.0]]), torch.tensor([[0.0, 1.0]])
>>> m3id.scores(l, text_only, step=0)  # γ_0 = 1: no correction on the first token
tensor([[2., 1.]])
>>> w = (1 - math.exp(-0.2)) / math.exp(-0.2)   # t = 10
>>> torch.allclose(m3id.scores(l, text_only, step=10), torch.tensor([[2 + 2 * w, 1.0]]))
True
"""
from __future__ import annotations

import math

import torch
from pydantic import Field

from plugins.methods.contrastive import ContrastiveConfig, ContrastiveMethod
from plugins.models.batch import Batch
from plugins.registry import register_method


@register_method("m3id")
class M3ID(ContrastiveMethod):
    """Contrast with the text-only stream, more strongly as the answer grows."""

    class Config(ContrastiveConfig):
        lam: float = Field(0.02, ge=0)  # decay of γ_t = exp(−λ t); 0 disables the correction
        beta: float = Field(0.1, ge=0, lt=1)  # plausibility cut on the image-conditioned distribution

    def active(self) -> bool:
        return self.config.lam != 0

    def contrast_inputs(self, model, batch: Batch) -> Batch:
        return batch.replace(images=[None] * len(batch))

    def combine(self, logits: torch.Tensor, contrast: torch.Tensor, step: int) -> torch.Tensor:
        gamma = math.exp(-self.config.lam * step)
        return logits + (1 - gamma) / gamma * (logits - contrast)
