"""A key/value cache that appends in place: transformers' ``DynamicCache`` with room to grow.

``DynamicCache`` appends each step's keys and values with ``torch.cat``, which copies every cached
token of every row at every decoding step; beam search then copies them once more to reorder the
beams, and OPERA's candidate pass (:mod:`plugins.methods.opera`) appends its candidates and drops
them again at every step. :class:`GrowingLayer` keeps a layer's keys and values at the front of
larger buffers instead: appending writes into the free room, dropping the last tokens only moves
the end, and a buffer is reallocated (with room to spare) only when it is full. What the model
sees is unchanged — ``keys`` and ``values`` are views of the filled part, equal element for
element to what ``DynamicCache`` would hold — so answers are identical; only copies are saved.

:class:`GrowingCache` is a ``DynamicCache`` whose full-attention layers are growing layers (other
layer kinds, such as sliding-window layers, are kept as transformers builds them). The adapter
gives one to every ``generate`` call and every prompt cache it builds.

>>> import torch
>>> layer = GrowingLayer()
>>> k = torch.arange(6.).view(1, 1, 3, 2)
>>> keys, _ = layer.update(k, k)
>>> keys.shape, layer.capacity
(torch.Size([1, 1, 3, 2]), 19)
>>> buffer = layer.keys.data_ptr()
>>> _ = layer.update(k[:, :, :1], k[:, :, :1])          # appended in place: no copy
>>> layer.get_seq_length(), layer.keys.data_ptr() == buffer
(4, True)
>>> layer.keys = layer.keys[:, :, :3]                    # a prefix of itself: only the end moves
>>> layer.get_seq_length(), layer.capacity
(3, 19)
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

__all__ = ["GrowingLayer", "GrowingCache", "cache_rows"]


class _FilledPart:
    """``keys`` / ``values`` of a :class:`GrowingLayer`: the filled front of a buffer, as a view.

    Assigning goes through :meth:`GrowingLayer._adopt` (a prefix view of the buffer only moves the end).
    """

    def __init__(self, buffer: str):
        self.buffer = buffer

    def __get__(self, layer: Any, owner: Any = None) -> Any:
        if layer is None:
            return self
        data = getattr(layer, self.buffer)
        return None if data is None else data[:, :, :layer._length]

    def __set__(self, layer: Any, tensor: Optional[torch.Tensor]) -> None:
        setattr(layer, self.buffer, layer._adopt(getattr(layer, self.buffer), tensor))


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values are views of the front of preallocated buffers."""

    headroom = 16  # free tokens left when a buffer is (re)allocated: at least this many, or a quarter of the length

    def __init__(self, **kwargs: Any):
        self._k: Optional[torch.Tensor] = None  # (B, H, capacity, D)
        self._v: Optional[torch.Tensor] = None
        self._length = 0
        super().__init__(**kwargs)  # sets keys and values to None through the setters

    # ------------------------------------------------------------ keys and values as views

    keys = _FilledPart("_k")
    values = _FilledPart("_v")

    @property
    def capacity(self) -> int:
        """Tokens the buffers hold before the next append reallocates them."""
        return 0 if self._k is None else self._k.shape[-2]

    def _adopt(self, buffer: Optional[torch.Tensor], tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """What assigning ``tensor`` to keys or values means: a prefix view of the buffer moves the end;
        anything else (a reordered, repeated or selected copy; None) becomes the buffer, full."""
        if tensor is None:
            self._length = 0
            return None
        if (buffer is not None and tensor.dim() == 4 and tensor.data_ptr() == buffer.data_ptr()
                and tensor.stride() == buffer.stride() and tensor.shape[:2] == buffer.shape[:2]
                and tensor.shape[3] == buffer.shape[3] and tensor.shape[2] <= buffer.shape[2]):
            self._length = tensor.shape[2]
            return buffer
        self._length = tensor.shape[-2] if tensor.dim() == 4 else 0
        return tensor

    # ------------------------------------------------------------ the cache-layer interface

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.dtype = key_states.dtype
        self._k = self._v = None
        self._length = 0
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new tokens after the cached ones (reallocating only when full); return all of them."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self._length, self._length + key_states.shape[-2]
        if self._k is None or self._k.dim() != 4 or end > self._k.shape[-2] or self._k.shape[0] != key_states.shape[0]:
            self._reallocate(end, key_states, value_states)
        self._k[:, :, start:end] = key_states
        self._v[:, :, start:end] = value_states
        self._length = end
        return self.keys, self.values

    def _reallocate(self, needed: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        capacity = needed + max(self.headroom, needed // 4)
        old_k, old_v, length = self._k, self._v, self._length
        self._k = key_states.new_empty(*key_states.shape[:2], capacity, key_states.shape[3])
        self._v = value_states.new_empty(*value_states.shape[:2], capacity, value_states.shape[3])
        if length:
            self._k[:, :, :length] = old_k[:, :, :length]
            self._v[:, :, :length] = old_v[:, :, :length]

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last ``-tokens_to_remove`` tokens (a negative count, as ``DynamicLayer.crop``): the end moves."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of tokens to remove, got {tokens_to_remove}")
        self._length = max(0, self._length + tokens_to_remove) if self.is_initialized else 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search's reordering: one gather of the buffers, which keep their free room."""
        if self.get_seq_length() > 0:
            self._k = self._k.index_select(0, beam_idx.to(self._k.device))
            self._v = self._v.index_select(0, beam_idx.to(self._v.device))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0:
            self._k = self._k.repeat_interleave(repeats, dim=0)
            self._v = self._v.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self._k = self._k[indices]
            self._v = self._v[indices]


class GrowingCache(DynamicCache):
    """``DynamicCache`` with :class:`GrowingLayer` for every full-attention layer (see the module docstring)."""

    def __init__(self, config: Any = None):
        super().__init__(config=config)
        self.layer_class_to_replicate = GrowingLayer if self.layer_class_to_replicate is DynamicLayer else \
            self.layer_class_to_replicate
        self.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in self.layers]


def cache_rows(cache: Any, rows: torch.Tensor, config: Any) -> GrowingCache:
    """A new cache holding ``rows`` (a 1-D index) of every layer of ``cache``, with room to append; ``cache`` is untouched."""
    out = GrowingCache(config=config)
    for layer, source in zip(out.layers, cache.layers):
        layer.update(source.keys[rows], source.values[rows])
    return out
