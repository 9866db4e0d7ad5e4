"""PAI — Paying more Attention to Image (Liu et al., ECCV 2024; github.com/LALBJ/PAI).

Two parts, both on by default:

1. **Attention amplification.** In decoder layers ``start_layer`` ≤ i < ``end_layer``, the
   newest query token's pre-softmax attention scores to the image tokens are enlarged by a share
   of their magnitude before the softmax (``attention.py``, ``llama_new_forward``)::

       s[-1, img] ← s[-1, img] + α·|s[-1, img]|

2. **Image-free guidance.** A contrast stream asks the question without the image; on
   log-probabilities (``CFG.py``, ``CFGLogits``)::

       scores = γ·(log p(y | v, x) − log p(y | x)) + log p(y | x)   where p(y|v,x) >= 0.1·max, −inf elsewhere

   The contrast stream is not amplified (the official code switches the edit off for it).

Official defaults (README commands for LLaVA-1.5): α = 0.2, γ = 1.1, layers 2 to 32 (all
after the second of LLaVA-1.5's 32 layers; ``end_layer = None`` means "to the last layer"
here), plausibility cut 0.1. The attention edit runs through transformers' public attention
interface (:mod:`plugins.methods.attention`), not a patched forward.

>>> import torch
>>> from plugins.registry import create_method
>>> pai = create_method("pai", {"beta": 0.0})
>>> l, text_only = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])
>>> [round(v, 4) for v in pai.scores(l, text_only, 0)[0].tolist()]  # γ(ls − lu) + lu
[-0.7311, -0.6311]
"""
from __future__ import annotations

from typing import Optional

import torch
from pydantic import Field

from plugins.methods.attention import AttentionEdit
from plugins.methods.contrastive import ContrastiveConfig, ContrastiveMethod
from plugins.models.batch import Batch
from plugins.registry import register_method


def amplify_image_attention(scores: torch.Tensor, image_mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """(B, H, Q, K) pre-softmax scores with the last query's image-token scores raised by α·|s|.

    >>> s = torch.tensor([[[[1.0, -2.0, 3.0]]]])  # one row, one head, one query, three keys
    >>> amplify_image_attention(s, torch.tensor([[False, True, True]]), 0.5)
    tensor([[[[ 1.0000, -1.0000,  4.5000]]]])
    """
    out = scores.clone()
    last = out[:, :, -1, :]  # (B, H, K)
    out[:, :, -1, :] = last + alpha * last.abs() * image_mask[:, None, :].to(last.dtype)
    return out


@register_method("pai")
class PAI(ContrastiveMethod):
    """Amplify attention to image tokens in later layers, and guide away from the image-free answer."""


    class Config(ContrastiveConfig):
        alpha: float = Field(0.2, ge=0)  # attention amplification: s + α|s| on image tokens (0: off)
        gamma: float = Field(1.1, ge=1)  # guidance scale against the image-free stream (1: off)
        beta: float = Field(0.1, ge=0, lt=1)  # plausibility cut on the image-conditioned distribution
        start_layer: int = Field(2, ge=0)  # first decoder layer amplified
        end_layer: Optional[int] = Field(None, ge=1)  # one past the last layer amplified; None: the model's last

    def active(self) -> bool:
        return self.config.gamma != 1

    def contrast_inputs(self, model, batch: Batch) -> Batch:
        return batch.replace(images=[None] * len(batch))

    def combine(self, logits: torch.Tensor, contrast: torch.Tensor, step: int) -> torch.Tensor:
        with_image, without = torch.log_softmax(logits, -1), torch.log_softmax(contrast, -1)
        return self.config.gamma * (with_image - without) + without

    def attention_edit(self, model, n: int, joint: bool) -> Optional[AttentionEdit]:
        if self.config.alpha == 0:
            return None
        end = self.config.end_layer if self.config.end_layer is not None else len(model.decoder_layers)
        layers = set(range(self.config.start_layer, min(end, len(model.decoder_layers))))
        alpha = self.config.alpha
        return AttentionEdit(model, layers, before=lambda layer, s, img: amplify_image_attention(s, img, alpha),
                             main_rows=slice(0, n) if joint else slice(None), contrast_rows=None)
