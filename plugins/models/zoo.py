"""The registered models: names the matrix and ``alignscope list models`` use, each loading a :class:`LlavaAdapter`.

The only module of :mod:`plugins.models` that knows the registry; the registry finds these
entries by scanning this file's ``@register_model`` decorators, without importing it.

>>> from plugins.registry import get_model
>>> adapter = get_model("alignscope-tiny-llava")(device="cpu")
>>> adapter.source == TINY_LLAVA_CHECKPOINT, adapter.dtype
(True, torch.float32)
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

from plugins.models.adapter import LlavaAdapter
from plugins.models.lookup import TINY_LLAVA_CHECKPOINT
from plugins.registry import register_model

__all__ = ["alignscope_tiny_llava", "llava_1_5_7b", "llava_1_5_13b"]


@register_model("alignscope-tiny-llava")
def alignscope_tiny_llava(device: str = "auto", dtype: str = "auto", path: Union[str, Path, None] = None) -> LlavaAdapter:
    """The embedded default: a ~1.4 M-parameter LLaVA trained on the synthetic world, committed with the code."""
    return LlavaAdapter.load(path or TINY_LLAVA_CHECKPOINT, device, dtype)


alignscope_tiny_llava.default_checkpoint = TINY_LLAVA_CHECKPOINT


@register_model("llava-1.5-7b")
def llava_1_5_7b(device: str = "auto", dtype: str = "auto", path: Union[str, Path, None] = None) -> LlavaAdapter:
    """LLaVA-1.5-7B (llava-hf/llava-1.5-7b-hf) from a local directory (path=) or the local HF cache; never downloads."""
    return LlavaAdapter.load(path or "llava-hf/llava-1.5-7b-hf", device, dtype)


@register_model("llava-1.5-13b")
def llava_1_5_13b(device: str = "auto", dtype: str = "auto", path: Union[str, Path, None] = None) -> LlavaAdapter:
    """LLaVA-1.5-13B (llava-hf/llava-1.5-13b-hf) from a local directory (path=) or the local HF cache; never downloads."""
    return LlavaAdapter.load(path or "llava-hf/llava-1.5-13b-hf", device, dtype)


llava_1_5_7b.default_checkpoint = "llava-hf/llava-1.5-7b-hf"
llava_1_5_13b.default_checkpoint = "llava-hf/llava-1.5-13b-hf"
