"""The unit of work every model and method sees: images and the questions asked about them.

Kept free of torch so that methods can build and transform batches (a different prompt, a
noised image) and benchmarks can describe inputs without loading a model.

>>> import numpy as np
>>> batch = Batch(images=[np.zeros((32, 32, 3), np.uint8)] * 3, prompts=["Is there a cat?", "A dog?", "Red?"])
>>> len(batch), batch[1:].prompts, batch[1:].ids
(3, ('A dog?', 'Red?'), ('1', '2'))
>>> batch.replace(prompts=["a", "b", "c"]).prompts
('a', 'b', 'c')
>>> batch.item_seed(0) == batch[0:1].item_seed(0)  # a seed follows the item's id, which slicing keeps
True
>>> batch[2]
Batch(1 items, seed=0: 2: 32x32x3 'Red?')
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

ImageLike = Union[np.ndarray, Any]
"""An (H, W, 3) uint8 array, or anything PIL-like (has ``convert``); PIL itself is optional."""


def to_rgb_array(image: Any, where: str = "image") -> np.ndarray:
    """``image`` as an (H, W, 3) uint8 array; a PIL image is converted to RGB first.

    >>> to_rgb_array(np.zeros((4, 5, 3), np.uint8)).shape
    (4, 5, 3)
    >>> to_rgb_array(np.zeros((4, 5), np.uint8), "images[2]")
    Traceback (most recent call last):
    ...
    TypeError: images[2] is an array of shape (4, 5) and dtype uint8, expected an (H, W, 3) uint8 array or a PIL image
    """
    if hasattr(image, "convert") and hasattr(image, "size") and not isinstance(image, np.ndarray):
        image = np.asarray(image.convert("RGB"))  # PIL.Image.Image, without importing PIL
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{where} is a {type(image).__name__}, expected an (H, W, 3) uint8 array or a PIL image")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise TypeError(f"{where} is an array of shape {image.shape} and dtype {image.dtype}, "
                        "expected an (H, W, 3) uint8 array or a PIL image")
    return image


def _seed_of(data: bytes) -> int:
    """A 63-bit seed: the first 8 bytes of SHA-256 over ``data``, as an integer."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") >> 1


@dataclass(frozen=True)
class Batch:
    """Items to run: one image (or ``None`` for a text-only item) and one user question each.

    ``prompts`` are the bare questions; the model adapter wraps them in its chat template.
    ``ids`` name the items (question ids; by default their positions ``"0"``, ``"1"``, ...).
    Random draws are seeded from the batch, so they do not depend on how items are chunked:
    :meth:`item_seed` hashes ``seed`` with an item's id (a slice keeps ids, so an item keeps its
    seed), :meth:`image_seed` hashes ``seed`` with an item's image (every item showing the same
    image gets the same seed). VCD's noise and RITUAL's views are drawn per image; the
    diagnostics' noised reference images per item.
    """

    images: tuple[Optional[np.ndarray], ...]  # each (H, W, 3) uint8, or None for no image
    prompts: tuple[str, ...]  # user questions, without any template
    ids: tuple[str, ...] = ()  # stable item names; filled with "0", "1", ... when empty
    seed: int = 0  # base seed of every random draw (item_seed, image_seed)

    def __post_init__(self) -> None:
        if isinstance(self.prompts, str):
            raise TypeError("prompts is a single string, expected one question per image (a list of strings)")
        if isinstance(self.images, np.ndarray) and self.images.ndim != 4:
            raise TypeError(f"images is one array of shape {self.images.shape}, expected a list of (H, W, 3) uint8 "
                            "arrays (or one (N, H, W, 3) array)")
        images = tuple(self.images)  # an (N, H, W, 3) array becomes N images
        prompts = tuple(self.prompts)
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts, expected one prompt per image "
                             "(use None for a text-only item)")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise TypeError(f"prompts[{i}] is a {type(prompt).__name__}, expected a string")
        images = tuple(None if im is None else to_rgb_array(im, f"images[{i}]") for i, im in enumerate(images))
        ids = tuple(str(i) for i in self.ids) if self.ids else tuple(str(i) for i in range(len(prompts)))
        if len(ids) != len(prompts):
            raise ValueError(f"{len(ids)} ids but {len(prompts)} prompts, expected one id per item (or none)")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed is {self.seed!r}, expected a non-negative integer")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "prompts", prompts)
        object.__setattr__(self, "ids", ids)

    def __len__(self) -> int:
        return len(self.prompts)

    def __repr__(self) -> str:  # arrays would flood error messages and test reports
        shown = 3
        items = [f"{i}: {'no image' if im is None else 'x'.join(map(str, im.shape))} {q[:40]!r}"
                 for i, im, q in zip(self.ids[:shown], self.images, self.prompts)]
        more = f", ... {len(self) - shown} more" if len(self) > shown else ""
        return f"Batch({len(self)} items, seed={self.seed}: {'; '.join(items)}{more})"

    def __getitem__(self, index: Union[int, slice]) -> "Batch":
        """A sub-batch; an integer gives a batch of one item. Ids and seed are kept."""
        if isinstance(index, int):
            if not -len(self) <= index < len(self):
                raise IndexError(f"item {index} of a batch of {len(self)}")
            index = slice(index, index + 1 if index != -1 else None)
        if not isinstance(index, slice):
            raise TypeError(f"batch index is a {type(index).__name__}, expected an int or a slice")
        return Batch(self.images[index], self.prompts[index], self.ids[index], self.seed)

    def replace(self, **changes: Any) -> "Batch":
        """A copy with some fields changed, e.g. ``batch.replace(prompts=new_prompts)``."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"Batch has no field {unknown[0]!r}, expected one of images, prompts, ids, seed")
        return dataclasses.replace(self, **changes)

    @property
    def has_images(self) -> tuple[bool, ...]:
        return tuple(image is not None for image in self.images)

    def item_seed(self, i: int) -> int:
        """A 63-bit seed for item ``i`` from SHA-256 of ``"{seed}:{ids[i]}"``, stable across processes.

        Only the batch seed and the item's id count, not its position, question or image: the item
        gets the same seed in any batch that keeps its id (a slice does; a new ``Batch`` without
        ``ids`` numbers items by position).
        """
        return _seed_of(f"{self.seed}:{self.ids[i]}".encode("utf-8"))

    def image_seed(self, i: int) -> int:
        """A 63-bit seed for item ``i``'s image from SHA-256 of ``seed``, its shape and its pixels,
        stable across processes: items showing the same image get the same seed, whatever their ids,
        questions or positions. A text-only item has none (ValueError).

        >>> image = np.zeros((8, 8, 3), np.uint8)
        >>> batch = Batch(images=[image, image.copy(), image + 1], prompts=["a", "b", "c"])
        >>> batch.image_seed(0) == batch.image_seed(1) != batch.image_seed(2)
        True
        """
        image = self.images[i]
        if image is None:
            raise ValueError(f"item {self.ids[i]!r} has no image, so it has no image seed")
        pixels = np.ascontiguousarray(to_rgb_array(image, f"images[{i}]"))
        return _seed_of(f"{self.seed}:{pixels.shape}:".encode("utf-8") + pixels.tobytes())
