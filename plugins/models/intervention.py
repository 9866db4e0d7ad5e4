"""What the adapter asks of a method: the contract :meth:`LlavaAdapter.generate` applies around ``model.generate``.

The models layer knows methods only by this protocol, so it never imports :mod:`plugins.methods`;
:class:`plugins.methods.base.Method` satisfies it (every default does nothing). In the order the
adapter applies them, per chunk of a batch:

1. ``transform_inputs`` — the batch to run instead (same items, optionally followed by whole
   extra streams that share the forward passes);
2. ``hooks`` — a context manager active during ``model.generate`` (forward hooks);
3. ``logits_processors`` — ``transformers`` logits processors, after the caller's own;
4. ``postprocess`` — the decoded answers corrected, one per item.

The search (greedy, sampling, beams) is the protocol's, never the method's
(:mod:`plugins.models.decoding`); ``shares_prompt_prefixes`` says whether rows' common prompt prefixes may be encoded once
(:mod:`plugins.models.prefix`).

>>> import contextlib
>>> class Nothing:
...     shares_prompt_prefixes = True
...     def transform_inputs(self, model, batch): return batch
...     def hooks(self, model, batch): return contextlib.nullcontext()
...     def logits_processors(self, model, batch): return []
...     def postprocess(self, model, batch, texts): return texts
>>> isinstance(Nothing(), Intervention), isinstance(object(), Intervention)
(True, False)
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from transformers import LogitsProcessor

    from plugins.models.adapter import LlavaAdapter
    from plugins.models.batch import Batch

__all__ = ["Intervention"]


@runtime_checkable
class Intervention(Protocol):
    """A method as the adapter sees it (:class:`plugins.methods.base.Method` is one)."""

    shares_prompt_prefixes: bool  # True when answers do not depend on how the prompt pass is split and batched

    def transform_inputs(self, model: "LlavaAdapter", batch: "Batch") -> "Batch": ...

    def hooks(self, model: "LlavaAdapter", batch: "Batch") -> contextlib.AbstractContextManager: ...

    def logits_processors(self, model: "LlavaAdapter", batch: "Batch") -> Sequence["LogitsProcessor"]: ...

    def postprocess(self, model: "LlavaAdapter", batch: "Batch", texts: list[str]) -> Sequence[str]: ...

