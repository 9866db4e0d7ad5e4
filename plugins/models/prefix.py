"""Prompt prefixes that several rows share, encoded once: the plan, the shared encoding, and prompt caches.

POPE asks six questions about every image, and a follow-up questioner seven that differ in one
word: rows with the same image and the same first L tokens (padding included) have the same keys
and values there. :func:`shared_prefix_plan` finds the most profitable L, :func:`encode_shared_prefix`
encodes one representative row per group and copies its cache to the others, and
:func:`prompt_cache` builds the key/value cache of whole prompts on top of that (beam search and
contrast streams take their caches from it, through :meth:`LlavaAdapter.prompt_cache`). Every row
gets the keys and values it would have had alone, so answers are unchanged.

Shapes: B rows, T prompt tokens (left-padded), G groups of rows sharing a prefix, L prefix tokens.

>>> import tempfile
>>> from plugins.models.adapter import LlavaAdapter
>>> from plugins.models.batch import Batch
>>> from tests.tiny_llava import build_tiny_llava, random_images
>>> with tempfile.TemporaryDirectory() as tmp:
...     adapter = LlavaAdapter.load(build_tiny_llava(tmp + "/tiny"), device="cpu")
...     image = random_images(1)[0]
...     encoded = adapter.encode(Batch(images=[image] * 3, prompts=["is there a cat ?", "is there a dog ?", "what ?"]))
...     cut, groups = shared_prefix_plan(encoded, encoded.prompt_length - 1)
...     cache, logits = prompt_cache(adapter, encoded, logits=True)
>>> groups.tolist(), cache.get_seq_length() == encoded.prompt_length, tuple(logits.shape[:1])
([1, 1, 0], True, (3,))
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch

from plugins.models.compat import cache_keyword

if TYPE_CHECKING:
    from plugins.models.adapter import EncodedBatch, LlavaAdapter

__all__ = ["shared_prefix_plan", "encode_shared_prefix", "prompt_cache"]


def prompt_cache(adapter: "LlavaAdapter", encoded: "EncodedBatch", end: Optional[int] = None, *, share: bool = True,
                 logits: bool = False) -> tuple[Any, Optional[torch.Tensor]]:
    """The key/value cache of every row's prompt tokens ``[0, end)`` (default: all T), and with
    ``logits`` the (B, V) logits after token ``end − 1``.

    With ``share``, rows that share an image and a prompt prefix encode it once
    (:func:`shared_prefix_plan`), then every row runs the rest of its tokens on that cache.
    ``end`` must not cut through the image tokens. Pass ``share=False`` for a method whose hooks
    read or edit rows by position.
    """
    length = encoded.prompt_length
    end = length if end is None else end
    if not 1 <= end <= length:
        raise ValueError(f"end is {end}, expected 1 <= end <= {length} (the prompt length)")
    from plugins.models.cache import GrowingCache

    plan = shared_prefix_plan(encoded, end - 1 if logits else end) if share else None
    if plan is None:
        cache = GrowingCache(config=adapter.model.config)
        start, pixel_values = 0, encoded.pixel_values
    else:
        cache, start, pixel_values = encode_shared_prefix(adapter, encoded, plan), plan[0], None
    last = None
    if start < end:
        with adapter._encoding_prefix(end < length):
            out = adapter.model(input_ids=encoded.input_ids[:, start:end], attention_mask=encoded.attention_mask[:, :end],
                                position_ids=encoded.position_ids[:, start:end], pixel_values=pixel_values,
                                **{cache_keyword(): cache}, use_cache=True, logits_to_keep=1)
        last = out.logits[:, -1]
    return cache, (last if logits else None)


def shared_prefix_plan(encoded: "EncodedBatch", limit: int) -> Optional[tuple[int, torch.Tensor]]:
    """(L, group of each row) for the most profitable shared prefix of at most ``limit`` tokens, or None.

    Rows with the same image and the same first L tokens (padding included) share their keys and
    values there, so one representative row per group can be encoded and its cache copied to the
    others. With G(L) groups, sharing saves (B − G(L)) × L encoded tokens; L maximises that, with
    every image token inside the prefix. None when no two rows share enough to save anything
    (then prompts are encoded as usual).

    The search sorts the rows' keys (image, then tokens with their mask) once: in that order,
    rows sharing a prefix are neighbours, and G(L) is one plus the number of neighbour pairs
    that differ within the first L tokens.
    """
    ids, mask = encoded.input_ids, encoded.attention_mask  # (B, T)
    rows = ids.shape[0]
    if rows < 2:
        return None
    image_of = torch.full((rows,), -1, dtype=torch.long, device=ids.device)  # distinct image per row, -1: none
    if encoded.pixel_values is not None:
        _, distinct = torch.unique(encoded.pixel_values.flatten(1), dim=0, return_inverse=True)  # (N,)
        image_of[encoded.image_token_mask.any(dim=1)] = distinct.to(ids.device)
    positions = torch.arange(ids.shape[1], device=ids.device)
    first_cut = int(torch.where(encoded.image_token_mask, positions, -1).amax()) + 1  # the prefix holds every image token
    if first_cut > limit:
        return None
    key = torch.cat([image_of[:, None], ids[:, :limit] * 2 + mask[:, :limit]], dim=1)  # (B, 1 + limit)
    ordered = torch.unique(key, dim=0)  # (U, 1 + limit), sorted rows
    differ = (ordered[1:] != ordered[:-1]).long().argmax(dim=1)  # (U − 1,) first column where neighbours differ
    cuts = torch.arange(limit + 1, device=ids.device)  # prefix of L tokens = key columns [0, L]
    groups = 1 + (differ[None, :] <= cuts[:, None]).sum(dim=1)  # (limit + 1,) G(L)
    saved = (rows - groups) * cuts
    saved[:first_cut] = 0
    cut = int(saved.argmax())
    if saved[cut] <= 0:
        return None
    _, inverse = torch.unique(key[:, :cut + 1], dim=0, return_inverse=True)  # (B,) group of each row
    return cut, inverse


def encode_shared_prefix(adapter: "LlavaAdapter", encoded: "EncodedBatch", plan: tuple[int, torch.Tensor]) -> Any:
    """A key/value cache of the first L tokens of every row: each group's representative encoded, then copied."""
    from plugins.models.cache import GrowingCache

    cut, inverse = plan
    ids, mask = encoded.input_ids, encoded.attention_mask
    rows = ids.shape[0]
    first = torch.full((int(inverse.max()) + 1,), rows, dtype=torch.long, device=ids.device)
    first.scatter_reduce_(0, inverse, torch.arange(rows, device=ids.device), reduce="amin")  # (G,) a row per group
    pixel_values = None
    if encoded.pixel_values is not None:
        has_image = encoded.image_token_mask.any(dim=1)  # (B,)
        pixel_rows = torch.cumsum(has_image.long(), 0) - 1  # row -> its index into pixel_values
        with_image = first[has_image[first]]
        pixel_values = encoded.pixel_values[pixel_rows[with_image]] if len(with_image) else None
    cache = GrowingCache(config=adapter.model.config)
    with adapter._encoding_prefix(cut < encoded.prompt_length):
        adapter.model(input_ids=ids[first, :cut], attention_mask=mask[first, :cut],
                      position_ids=encoded.position_ids[first, :cut], pixel_values=pixel_values,
                      **{cache_keyword(): cache}, use_cache=True, logits_to_keep=1)
    cache.batch_select_indices(inverse)  # cache row g (group g's representative) to every row of group g
    return cache
