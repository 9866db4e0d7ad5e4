"""Shared machinery of the contrastive decoding family: a second stream, combined token by token.

VCD, ICD, M3ID, RITUAL and PAI's guidance all decode from two streams of the same model: the
*main* stream (the user's image and question) and a *contrast* stream (a noised image, a
disturbing instruction, no image, an augmented image). At every step, with ``l`` the main
stream's next-token logits (B, V) and ``l'`` the contrast stream's::

    keep   = l >= log(β) + max(l)                  # adaptive plausibility cut (VCD, Li et al. 2023)
    scores = combine(l, l', t)  where keep, −inf elsewhere

and the next token is chosen from ``scores`` by the protocol — ``argmax`` under the common,
greedy protocol; a draw from ``softmax(scores / T)`` under a sampling protocol, as the official
implementations do (:mod:`plugins.models.sampling`, applied after this processor) — and extends
both streams. A subclass says what the contrast stream is (:meth:`ContrastiveMethod.contrast_inputs`,
and for VCD a change of the preprocessed pixels, :meth:`ContrastiveMethod.contrast_pixels`) and
what ``combine`` is.

**Two ways to run the contrast stream, same answers.** A contrastive method costs one extra
forward pass of every step. On a small batch the cost is the per-call overhead, not the
arithmetic, so the contrast rows are appended to the batch and share the main stream's forward
pass (*joint*: the adapter runs 2B rows, :class:`JointContrastProcessor` combines row i with
row B+i and gives both the combined scores, so they pick the same token). On a large batch the
arithmetic dominates and doubling the batch costs more than a second call, so the contrast
stream runs as its own forward pass with its own KV cache inside the logits processor
(*separate*: :class:`SeparateContrastProcessor`, the shape of transformers'
``UnbatchedClassifierFreeGuidanceLogitsProcessor``). :data:`JOINT_PASS_MAX_BATCH` is the
crossover measured by ``bench/bench_methods.py``; ``method.joint_pass = True/False`` forces one
path (the tests check that both give identical answers). The choice is not part of the result's
fingerprint, like the batch size.

>>> import torch
>>> logits = torch.tensor([[2.0, 1.0, -3.0]])
>>> plausible(logits, beta=0.1)  # log(0.1) + 2 = -0.30: the third token is cut
tensor([[ True,  True, False]])
"""
from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch
from pydantic import Field

from plugins.methods.base import Method, MethodConfig
from plugins.models.batch import Batch
from plugins.models.compat import cache_keyword, output_cache
from plugins.models.hooks import ForwardHooks

if TYPE_CHECKING:
    from plugins.methods.attention import AttentionEdit
    from plugins.models.adapter import EncodedBatch, LlavaAdapter

__all__ = ["ContrastiveMethod", "ContrastiveConfig", "JointContrastProcessor", "SeparateContrastProcessor",
           "plausible", "JOINT_PASS_MAX_BATCH"]

JOINT_PASS_MAX_BATCH = 8
"""Largest chunk whose contrast stream shares the main forward pass; larger chunks run it separately.

Measured on 2 CPU cores with the default model (``bench/bench_methods.py``): the joint pass is
cheaper while per-call overhead dominates, the separate pass once the arithmetic does.
"""


def plausible(logits: torch.Tensor, beta: float) -> torch.Tensor:
    """(B, V) bool: tokens whose probability is at least ``beta`` times the most likely token's.

    In logits: ``l >= log(β) + max(l)``, the cut of VCD's official sampler (its "version 2").
    ``beta = 0`` keeps every token.
    """
    if beta <= 0:
        return torch.ones_like(logits, dtype=torch.bool)
    return logits >= math.log(beta) + logits.max(dim=-1, keepdim=True).values


class ContrastiveConfig(MethodConfig):
    """The hyper-parameter every contrastive method has; subclasses add their weights."""

    beta: float = Field(0.1, ge=0, lt=1)  # adaptive plausibility cut: keep tokens with p >= beta * max p


class ContrastiveMethod(Method):
    """Base of the two-stream methods: subclasses define the contrast stream and ``combine``."""

    Config: ClassVar[type[MethodConfig]] = ContrastiveConfig
    joint_pass: Optional[bool] = None  # None: joint when the chunk has <= JOINT_PASS_MAX_BATCH items

    # ------------------------------------------------------------ what a subclass defines

    def contrast_inputs(self, model: "LlavaAdapter", batch: Batch) -> Batch:
        """The contrast stream's items, one per item of ``batch``, same ids (so ``item_seed`` gives each its item's seed)."""
        raise NotImplementedError(f"{type(self).__qualname__} must define contrast_inputs()")

    def contrast_pixels(self, pixel_values: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Change the contrast stream's preprocessed images (N, 3, H, W), in ``batch`` order. Default: none.

        ``batch`` is the contrast stream; its items with an image map, in order, to the N rows.
        """
        return pixel_values

    def combine(self, logits: torch.Tensor, contrast: torch.Tensor, step: int) -> torch.Tensor:
        """(B, V) scores from the main and contrast logits at generated-token index ``step`` (0 = first)."""
        raise NotImplementedError(f"{type(self).__qualname__} must define combine()")

    def plausibility(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, V) bool mask of tokens that may be chosen; default the β cut on the main logits."""
        return plausible(logits, self.config.beta)

    def active(self) -> bool:
        """False when the configuration cannot change any token (a zero weight): then no contrast pass runs."""
        return getattr(self.config, "alpha", 1.0) != 0

    def scores(self, logits: torch.Tensor, contrast: torch.Tensor, step: int) -> torch.Tensor:
        """``combine`` where plausible, −inf elsewhere (both (B, V), float32)."""
        combined = self.combine(logits.float(), contrast.float(), step)
        return combined.masked_fill(~self.plausibility(logits.float()), float("-inf"))

    # ------------------------------------------------------------ the adapter's extension points

    def _joint(self, n: int) -> bool:
        return self.joint_pass if self.joint_pass is not None else n <= JOINT_PASS_MAX_BATCH

    def transform_inputs(self, model: "LlavaAdapter", batch: Batch) -> Batch:
        self._chunk = len(batch)
        if not self.active() or not self._joint(len(batch)):
            return batch
        contrast = self._checked_contrast(model, batch)
        return Batch(batch.images + contrast.images, batch.prompts + contrast.prompts, batch.ids + contrast.ids,
                     batch.seed)

    def attention_edit(self, model: "LlavaAdapter", n: int, joint: bool) -> Optional["AttentionEdit"]:
        """An :class:`~plugins.methods.attention.AttentionEdit` active during generation, or None (default).

        ``n`` main-stream rows; ``joint``: the contrast stream is rows n..2n of the same passes.
        """
        return None

    def contrast_pass(self) -> contextlib.AbstractContextManager:
        """Context of a separate contrast pass: tells an active attention edit which stream runs."""
        edit = getattr(self, "_edit", None)
        return edit.contrast_pass() if edit is not None else contextlib.nullcontext()

    @property
    def shares_prompt_prefixes(self) -> bool:  # type: ignore[override]
        """True for the chunk being decoded when its main stream is plain greedy decoding.

        That holds with a separate contrast pass (the logits processor reads only scores and
        ``input_ids``) unless an attention edit touches the main stream's rows (PAI's does);
        with a joint pass the rows of both streams are paired by position, so never.
        """
        return getattr(self, "_main_shares", False)

    def hooks(self, model: "LlavaAdapter", batch: Batch):
        stack = contextlib.ExitStack()
        hooks = ForwardHooks()
        n = getattr(self, "_chunk", len(batch))
        joint = len(batch) == 2 * n
        self._edit = self.attention_edit(model, n, joint)
        self._main_shares = not joint and (self._edit is None or self._edit.rows["main"] is None)
        if self._edit is not None:
            stack.enter_context(self._edit)
        if joint and type(self).contrast_pixels is not ContrastiveMethod.contrast_pixels:
            contrast = batch[n:]
            first = sum(batch.has_images[:n])  # the contrast stream's images follow the main stream's

            def change_pixels(module, args, kwargs):
                pixels = kwargs["pixel_values"] if "pixel_values" in kwargs else args[0]
                pixels = torch.cat([pixels[:first], self.contrast_pixels(pixels[first:], contrast)])
                if "pixel_values" in kwargs:
                    return args, {**kwargs, "pixel_values": pixels}
                return (pixels, *args[1:]), kwargs

            hooks.add(model.vision_tower, change_pixels, pre=True, with_kwargs=True)
        stack.enter_context(hooks)
        return stack

    def logits_processors(self, model: "LlavaAdapter", batch: Batch) -> list:
        if not self.active():
            return []
        n = getattr(self, "_chunk", len(batch))
        if len(batch) == 2 * n:
            return [JointContrastProcessor(self, n)]
        contrast = self._checked_contrast(model, batch)
        encoded = model.encode(contrast)
        if encoded.pixel_values is not None:
            encoded = _with_pixels(encoded, self.contrast_pixels(encoded.pixel_values, contrast))
        return [SeparateContrastProcessor(self, model, encoded)]

    def _checked_contrast(self, model: "LlavaAdapter", batch: Batch) -> Batch:
        contrast = self.contrast_inputs(model, batch)
        if not isinstance(contrast, Batch) or len(contrast) != len(batch) or contrast.ids != batch.ids:
            raise ValueError(f"{type(self).__qualname__}.contrast_inputs returned "
                             f"{type(contrast).__name__} of {len(contrast) if hasattr(contrast, '__len__') else '?'}, "
                             f"expected a Batch of the same {len(batch)} items with the same ids")
        return contrast


def _with_pixels(encoded: "EncodedBatch", pixel_values: torch.Tensor) -> "EncodedBatch":
    import dataclasses

    return dataclasses.replace(encoded, pixel_values=pixel_values)


class JointContrastProcessor:
    """Combines rows ``i`` and ``n + i`` of a 2n-row step (main stream, then contrast stream).

    Both rows get the combined scores, so greedy decoding extends both with the same token and
    the contrast stream always conditions on the main stream's answer so far.
    """

    def __init__(self, method: ContrastiveMethod, n: int):
        if n < 1:
            raise ValueError(f"n is {n}, expected the number of main-stream rows (>= 1)")
        self.method, self.n, self.step = method, n, 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[0] != 2 * self.n:
            raise ValueError(f"got scores for {scores.shape[0]} rows, expected 2 x {self.n} (main + contrast)")
        combined = self.method.scores(scores[:self.n], scores[self.n:], self.step)  # (n, V)
        self.step += 1
        return torch.cat([combined, combined])


class SeparateContrastProcessor:
    """Runs the contrast stream as its own forward pass per step, with its own KV cache.

    The first call encodes the whole contrast prompt (:meth:`LlavaAdapter.prompt_cache`: a prefix
    that several rows share, such as ICD's image and instruction, once); later calls feed the
    token the main stream chose last (``input_ids[:, -1]``), extending the contrast attention mask by one as
    ``generate`` does for the main stream, with positions counted from each row's first real
    token (left padding).
    """

    def __init__(self, method: ContrastiveMethod, model: "LlavaAdapter", encoded: "EncodedBatch"):
        self.method, self.model, self.encoded = method, model, encoded
        self.mask = encoded.attention_mask  # (B, T')
        self.cache: Any = None
        self.step = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[0] != len(self.encoded):
            raise ValueError(f"got scores for {scores.shape[0]} rows, expected {len(self.encoded)}")
        with self.method.contrast_pass():
            if self.cache is None:
                edit = getattr(self.method, "_edit", None)  # an edit of the contrast rows reads them by position
                share = edit is None or edit.rows["contrast"] is None
                self.cache, contrast = self.model.prompt_cache(self.encoded, share=share, logits=True)
            else:
                self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
                position = self.mask.sum(dim=1, keepdim=True) - 1  # (B, 1)
                out = self.model.model(input_ids=input_ids[:, -1:], attention_mask=self.mask, position_ids=position,
                                       **{cache_keyword(): self.cache}, use_cache=True)
                self.cache, contrast = output_cache(out), out.logits[:, -1]
        combined = self.method.scores(scores, contrast, self.step)
        self.step += 1
        return combined
