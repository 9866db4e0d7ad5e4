"""Each distinct image of a call processed and encoded once, with every item getting exactly its own features.

POPE asks six questions about every image, a contrastive stream repeats the chunk's images, beam
search repeats each image once per beam, and follow-up questions return to the same image. Two
places would otherwise redo identical work:

* the image processor (resize, crop, normalise; a tenth of a greedy POPE answer's cost on the
  default model): :func:`distinct_images` wraps it in a :class:`DistinctImageProcessor`;
* the vision tower (a third of a prompt's cost): :func:`distinct_image_features` hooks it.

Both compute each distinct image once and copy the result to every row that showed it, so the
features, and the answers, are exactly those of processing every image.

>>> import numpy as np
>>> class Shape:  # a stand-in image processor that records its calls
...     calls = []
...     def __call__(self, images, return_tensors="pt"):
...         self.calls.append(len(images))
...         return {"pixel_values": torch.tensor(np.stack([i.mean((0, 1)) for i in images]))}
>>> red, blue = np.full((4, 4, 3), 200, np.uint8), np.full((4, 4, 3), 50, np.uint8)
>>> out = DistinctImageProcessor(Shape())([red, blue, red])
>>> Shape.calls, out["pixel_values"][:, 0].tolist()
([2], [200.0, 50.0, 200.0])
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Optional

import torch

from plugins.models.hooks import ForwardHooks

__all__ = ["DistinctImageProcessor", "distinct_images", "distinct_image_features"]


class DistinctImageProcessor:
    """Stands in for a processor's image processor: identical images of one call are processed once.

    Outputs with one row per image are copied back to every item that showed it, so the caller
    sees exactly the features it would have computed. Anything but a list of arrays goes to the
    wrapped processor unchanged.
    """

    def __init__(self, inner: Any):
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __call__(self, images: Any, *args: Any, **kwargs: Any) -> Any:
        import numpy as np

        if not isinstance(images, (list, tuple)) or not all(isinstance(i, np.ndarray) for i in images):
            return self._inner(images, *args, **kwargs)
        slot: dict[bytes, int] = {}
        inverse = [slot.setdefault(hashlib.blake2b(f"{i.shape}{i.dtype}".encode() + i.tobytes(), digest_size=16)
                                   .digest(), len(slot)) for i in images]
        if len(slot) == len(images):
            return self._inner(images, *args, **kwargs)
        firsts = {k: n for n, k in reversed(list(enumerate(inverse)))}  # distinct image -> its first item
        out = self._inner([images[firsts[k]] for k in range(len(slot))], *args, **kwargs)
        index = torch.tensor(inverse)
        for key, value in list(out.items()):
            if isinstance(value, torch.Tensor) and value.shape[:1] == (len(slot),):
                out[key] = value[index]
            elif isinstance(value, list) and len(value) == len(slot):
                out[key] = [value[k] for k in inverse]
        return out


@contextlib.contextmanager
def distinct_images(processor: Any):
    """Within the block, ``processor`` processes each distinct image of a call once (:class:`DistinctImageProcessor`)."""
    inner = getattr(processor, "image_processor", None)
    if inner is None:
        yield
        return
    processor.image_processor = DistinctImageProcessor(inner)
    try:
        yield
    finally:
        processor.image_processor = inner


def distinct_image_features(vision_tower: Any) -> ForwardHooks:
    """Hooks that, while active, make ``vision_tower`` encode identical images of one call once.

    A pre-hook replaces the pixels by their distinct rows (after any method's own pre-hooks on
    the tower, when those are registered first) and a hook copies each output back to every row
    that had that image; each image's features are computed exactly as before.
    """
    state: dict[str, Optional[torch.Tensor]] = {"inverse": None}

    def encode_distinct(module: Any, args: tuple, kwargs: dict) -> Optional[tuple[tuple, dict]]:
        pixels = kwargs["pixel_values"] if "pixel_values" in kwargs else args[0]
        distinct, inverse = torch.unique(pixels.flatten(1), dim=0, return_inverse=True)
        if len(distinct) == len(pixels):
            state["inverse"] = None
            return None
        state["inverse"] = inverse
        distinct = distinct.view(-1, *pixels.shape[1:])
        if "pixel_values" in kwargs:
            return args, {**kwargs, "pixel_values": distinct}
        return (distinct, *args[1:]), kwargs

    def copy_back(module: Any, args: tuple, output: Any) -> Any:
        inverse, state["inverse"] = state["inverse"], None
        if inverse is None:
            return output
        for key, value in list(output.items()):
            if isinstance(value, torch.Tensor):
                output[key] = value[inverse]
            elif isinstance(value, tuple):
                output[key] = tuple(v[inverse] if isinstance(v, torch.Tensor) else v for v in value)
        return output

    return ForwardHooks().add(vision_tower, encode_distinct, pre=True, with_kwargs=True).add(vision_tower, copy_back)
