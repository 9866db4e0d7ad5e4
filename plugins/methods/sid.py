"""SID — Self-Introspective Decoding (Huo et al., ICLR 2025; github.com/huofushuo/SID).

The contrast stream is the model itself with most of the image hidden from its later layers:
after layer ``layer − 1``, the newest token's attention to each image token (averaged over
heads) ranks the image tokens, and from layer ``layer`` on only the *least* attended ones stay
visible (Context and Text-aware Token Selection, CT2S). What that stream still predicts comes
from weak, irrelevant visual evidence plus the text; it is subtracted::

    scores = (1 + α)·l(v, x) − α·l_CT2S(v, x)    on tokens with p >= β·max p, −inf elsewhere

The selection is redone at every decoding step from the current token's attention (the
official attention-mask implementation, ``transformers/.../modeling_llama.py``, ``USE_FAST_V``
branch, ``topk(..., largest=False)``). Official defaults (``pope_eval.py``): selection layer 2,
keep 100 of LLaVA-1.5's 576 image tokens, α = 1, β = 0.1. Here the kept share is a fraction
(``keep_fraction`` = 100/576) so that a model with 64 image tokens keeps 11, and on a model with
at most ``layer`` decoder layers the ranking moves to the last-but-one layer. The hiding is done
with the attention mask through transformers' attention interface
(:mod:`plugins.methods.attention`), not by dropping tokens, which is equivalent for attention.

>>> import torch
>>> probs = torch.tensor([[[[0.1, 0.5, 0.1, 0.3]]]])  # one row, head, query; keys 1-3 are image tokens
>>> hidden_image_tokens(probs, torch.tensor([[False, True, True, True]]), keep_fraction=1 / 3)
tensor([[False,  True, False,  True]])
"""
from __future__ import annotations

from typing import Optional

import torch
from pydantic import Field

from plugins.methods.attention import AttentionEdit
from plugins.methods.contrastive import ContrastiveConfig, ContrastiveMethod
from plugins.models.batch import Batch
from plugins.registry import register_method


def hidden_image_tokens(probs: torch.Tensor, image_mask: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """(B, K) bool: image tokens to hide — all but the least attended ``keep_fraction`` of each row's.

    ``probs`` (B, H, Q, K): attention probabilities; the last query, averaged over heads, ranks.
    """
    attention = probs[:, :, -1, :].float().mean(dim=1)  # (B, K)
    hidden = torch.zeros_like(image_mask)
    for row in range(image_mask.shape[0]):
        positions = image_mask[row].nonzero().flatten()
        if len(positions) == 0:
            continue
        keep = max(1, int(round(keep_fraction * len(positions))))
        kept = positions[attention[row, positions].topk(min(keep, len(positions)), largest=False).indices]
        hidden[row, positions] = True
        hidden[row, kept] = False
    return hidden


@register_method("sid")
class SID(ContrastiveMethod):
    """Contrast with the model that sees only its least-attended image tokens after an early layer."""


    class Config(ContrastiveConfig):
        alpha: float = Field(1.0, ge=0)  # contrast weight: (1+α)·l − α·l_CT2S
        beta: float = Field(0.1, ge=0, lt=1)  # plausibility cut on the full model's distribution
        layer: int = Field(2, ge=1)  # image tokens are ranked after layer−1 and hidden from layer on
        keep_fraction: float = Field(100 / 576, gt=0, le=1)  # share of image tokens kept (official: 100 of 576)

    def contrast_inputs(self, model, batch: Batch) -> Batch:
        return batch

    def combine(self, logits: torch.Tensor, contrast: torch.Tensor, step: int) -> torch.Tensor:
        alpha = self.config.alpha
        return (1 + alpha) * logits - alpha * contrast

    def attention_edit(self, model, n: int, joint: bool) -> Optional[AttentionEdit]:
        if not self.active():
            return None
        n_layers = len(model.decoder_layers)
        if n_layers < 2:
            raise ValueError(f"SID needs at least 2 decoder layers (rank after one, hide in the next); the model has "
                             f"{n_layers}")
        rank_layer = min(self.config.layer, n_layers - 1) - 1  # a shallower model ranks after its last-but-one layer
        state: dict[str, torch.Tensor] = {}

        def select(layer: int, probs: torch.Tensor, image_mask: torch.Tensor) -> None:
            if layer == rank_layer:
                state["hidden"] = hidden_image_tokens(probs, image_mask, self.config.keep_fraction)

        def hide(layer: int, scores: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
            if layer <= rank_layer:
                return scores
            hidden = state["hidden"][:, None, None, :scores.shape[-1]]  # (b, 1, 1, K)
            return scores.masked_fill(hidden, torch.finfo(scores.dtype).min)

        return AttentionEdit(model, set(range(rank_layer, n_layers)), before=hide, after=select,
                             main_rows=slice(n, 2 * n) if joint else None,
                             contrast_rows=None if joint else slice(None))
