"""Editing the language model's attention through transformers' public attention interface.

PAI amplifies the attention paid to image tokens; SID hides image tokens from later layers of its
contrast stream. Both need the attention scores *before* the softmax, which forward hooks do not
see. transformers lets users register their own attention function
(``AttentionInterface.register``) and mask format (``AttentionMaskInterface.register``) and
select them by name through the config's ``_attn_implementation``; :class:`AttentionEdit` does
exactly that, for the duration of a ``with`` block, on the language model only (the vision
tower keeps its own). Layers an edit does not touch delegate to PyTorch's SDPA kernel.

Which rows are edited depends on how the contrast stream runs (see
:mod:`plugins.methods.contrastive`): ``main_rows`` are the rows edited in the forward passes of
``generate`` (with a joint contrast pass, these hold both streams), ``contrast_rows`` those
edited in a separate contrast pass (inside :meth:`AttentionEdit.contrast_pass`). ``None`` edits
no row of that pass. Edits nest: inside another edit's block, a second one (the diagnostics'
attention recorder inside PAI's amplification, say) applies after it, and observers see the
probabilities both made.

The image-token positions of every row are read from ``input_ids`` when a pass starts (a
forward pre-hook on the LLaVA model), kept per pass, and extended with ``False`` as generated
tokens join the keys.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

from plugins.models.compat import cache_argument

if TYPE_CHECKING:
    from plugins.models.adapter import LlavaAdapter

__all__ = ["AttentionEdit", "EDIT_IMPLEMENTATION"]

EDIT_IMPLEMENTATION = "alignscope-attention-edit"
_ACTIVE: list["AttentionEdit"] = []  # active edits, outermost first; every one that touches a layer applies
Edit = Callable[[int, torch.Tensor, torch.Tensor], Optional[torch.Tensor]]  # (layer, (b,H,Q,K), image mask (b,K)) → same


def _edited_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: Optional[torch.Tensor], scaling: float, dropout: float = 0.0,
                      **kwargs: Any) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.llama.modeling_llama import repeat_kv

    layer = getattr(module, "layer_idx", None)
    edits = [edit for edit in _ACTIVE if edit.touches(layer)]
    if not edits:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    key = repeat_kv(key, module.num_key_value_groups)  # (B, H, K, D)
    value = repeat_kv(value, module.num_key_value_groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, Q, K)
    if attention_mask is not None:
        scores = scores + attention_mask[..., :key.shape[-2]]
    for edit in edits:  # outermost first: an edit entered inside another sees its changes
        scores = edit.apply(layer, scores, before_softmax=True)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    for edit in edits:
        edit.apply(layer, probs, before_softmax=False)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()  # (B, Q, H, D)
    return output, probs


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(EDIT_IMPLEMENTATION, _edited_attention)
    AttentionMaskInterface.register(EDIT_IMPLEMENTATION, eager_mask)  # additive float masks, which SDPA takes too


class AttentionEdit(contextlib.AbstractContextManager):
    """Within the block, ``before(layer, scores, image_mask)`` may rewrite pre-softmax scores and
    ``after(layer, probs, image_mask)`` observe the attention probabilities, on the chosen rows.

    ``layers``: the decoder layer indices the callbacks see. Callbacks get the selected rows only
    (a view: ``before`` returns the new scores, ``after`` returns nothing).
    """

    def __init__(self, model: "LlavaAdapter", layers: set[int], *, before: Optional[Edit] = None,
                 after: Optional[Callable[[int, torch.Tensor, torch.Tensor], None]] = None,
                 main_rows: Optional[slice] = slice(None), contrast_rows: Optional[slice] = None):
        self.model, self.layers, self.before, self.after = model, set(layers), before, after
        self.rows = {"main": main_rows, "contrast": contrast_rows}
        self.stream = "main"
        self.image_mask: dict[str, torch.Tensor] = {}
        self._saved: Optional[str] = None
        self._handle: Any = None

    def touches(self, layer: Optional[int]) -> bool:
        return layer in self.layers and self.rows[self.stream] is not None

    def apply(self, layer: int, tensor: torch.Tensor, *, before_softmax: bool) -> torch.Tensor:
        callback = self.before if before_softmax else self.after
        if callback is None:
            return tensor
        rows = self.rows[self.stream]
        if self.stream not in self.image_mask:
            raise RuntimeError("AttentionEdit found no image-token positions for this pass: the LLaVA model was called "
                               "without input_ids (inputs_embeds only), so image tokens cannot be located")
        mask = self.image_mask[self.stream]  # (B, T) at the pass's start
        keys = tensor.shape[-1]
        if mask.shape[1] < keys:  # generated tokens are never image tokens
            mask = torch.cat([mask, mask.new_zeros(mask.shape[0], keys - mask.shape[1])], dim=1)
        if before_softmax:
            tensor = tensor.clone()
            tensor[rows] = callback(layer, tensor[rows], mask[rows, :keys])
            return tensor
        callback(layer, tensor[rows], mask[rows, :keys])
        return tensor

    @contextlib.contextmanager
    def contrast_pass(self):
        """Mark the forward passes inside as the separate contrast stream's."""
        previous, self.stream = self.stream, "contrast"
        try:
            yield
        finally:
            self.stream = previous

    def _record_image_tokens(self, module: Any, args: tuple, kwargs: dict) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        cache = cache_argument(kwargs)
        if input_ids is not None and (cache is None or cache.get_seq_length() == 0):
            self.image_mask[self.stream] = input_ids == self.model.image_token_id  # (B, T)

    def __enter__(self) -> "AttentionEdit":
        _register()
        text_config = self.model.model.config.text_config
        self._saved = text_config._attn_implementation
        self._handle = self.model.model.model.register_forward_pre_hook(self._record_image_tokens, with_kwargs=True)
        text_config._attn_implementation = EDIT_IMPLEMENTATION
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self._saved is not None:
            self.model.model.config.text_config._attn_implementation = self._saved
            self._saved = None
        return None
