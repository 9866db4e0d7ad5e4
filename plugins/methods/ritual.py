"""RITUAL — Random Image Transformations as a Universal Anti-hallucination Lever (Woo et al., 2024;
github.com/sangminwoo/RITUAL).

The second stream sees a *randomly transformed* copy of the image and, unlike VCD, is **added**
rather than subtracted: an object that is really there survives a flip, a crop or a colour
change, so evidence from both views is pooled::

    scores = l(v, x) + α·l(T(v), x)    on tokens with p(v, x) >= β·max p, −inf elsewhere

T is drawn per image, uniformly from six transforms (``eval_bench/pope_eval_llava.py``, with
torchvision's semantics): horizontal flip; vertical flip; rotation by an angle uniform in
[−180°, 180°] (nearest neighbour, black fill); colour jitter (brightness, contrast, saturation
factors uniform in [0, 2], hue shift uniform in [−0.5, 0.5], in random order); Gaussian blur
(kernel 13, σ uniform in [1.5, 2]); random resized crop (area 8–100 %, aspect 3/4–4/3, resized
back). Official defaults: α = 3 (``ritual_alpha_pos``), β = 0.1. The transform and its
parameters come from ``batch.image_seed(i)``, so an item gets the same view alone or in a batch.
Deviation: the official code draws a transform per question; here it is drawn per image (and
batch seed), so the six POPE questions about one image see the same view. Each question's view
has the same distribution either way, and the questions' contrast prompts then share the image
and their common prefix, which the adapter encodes once (:meth:`LlavaAdapter.prompt_cache`).
Deviation: the blur kernel and crop act on the model's input size (64 px for the world model,
336 px in the paper), so the same kernel blurs a small image relatively more.

>>> import torch
>>> from plugins.registry import create_method
>>> ritual = create_method("ritual")
>>> ritual.scores(torch.tensor([[2.0, 1.0, -5.0]]), torch.tensor([[0.0, 1.0, 9.0]]), step=0)  # l + 3 l'
tensor([[2., 4., -inf]])
"""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from plugins.methods.contrastive import ContrastiveConfig, ContrastiveMethod
from plugins.models.batch import Batch
from plugins.registry import register_method

TRANSFORMS = ("horizontal flip", "vertical flip", "rotation", "color jitter", "gaussian blur", "crop")


def _hue_shift(img: np.ndarray, shift: float) -> np.ndarray:
    """(H, W, 3) RGB floats in [0, 1] with the hue rotated by ``shift`` turns (via HSV)."""
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    v = img.max(-1)
    delta = v - img.min(-1)
    safe = np.where(delta > 0, delta, 1.0)
    h = np.select([v == r, v == g], [((g - b) / safe) % 6, (b - r) / safe + 2], (r - g) / safe + 4)
    h = np.where(delta > 0, h / 6, 0.0)
    s = np.where(v > 0, delta / np.where(v > 0, v, 1.0), 0.0)
    h = (h + shift) % 1.0
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    sectors = [i == k for k in range(6)]
    return np.stack([np.select(sectors, [v, q, p, p, t, v]), np.select(sectors, [t, v, v, q, p, p]),
                     np.select(sectors, [p, p, t, v, v, q])], axis=-1)


def _gray(img: np.ndarray) -> np.ndarray:
    return (img @ np.array([0.299, 0.587, 0.114]))[..., None]  # (H, W, 1)


def _sample(img: np.ndarray, ys: np.ndarray, xs: np.ndarray, bilinear: bool) -> np.ndarray:
    """``img`` read at float pixel coordinates (ys, xs); outside the image is black."""
    h, w = img.shape[:2]
    if not bilinear:
        yi, xi = np.floor(ys + 0.5).astype(int), np.floor(xs + 0.5).astype(int)
        inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        return np.where(inside[..., None], img[yi.clip(0, h - 1), xi.clip(0, w - 1)], 0.0)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    wy, wx = (ys - y0)[..., None], (xs - x0)[..., None]
    at = lambda y, x: img[y.clip(0, h - 1), x.clip(0, w - 1)]  # noqa: E731 - edge pixels repeat
    top = at(y0, x0) * (1 - wx) + at(y0, x0 + 1) * wx
    bottom = at(y0 + 1, x0) * (1 - wx) + at(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


def random_transform(image: np.ndarray, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """One of :data:`TRANSFORMS`, drawn and applied with ``rng``: (its name, the (H, W, 3) uint8 result)."""
    name = TRANSFORMS[int(rng.integers(len(TRANSFORMS)))]
    img = image.astype(np.float64) / 255  # (H, W, 3)
    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    if name == "horizontal flip":
        out = img[:, ::-1]
    elif name == "vertical flip":
        out = img[::-1]
    elif name == "rotation":  # about the centre, nearest neighbour, black outside
        angle = np.radians(rng.uniform(-180, 180))
        cy, cx = (h - 1) / 2, (w - 1) / 2
        cos, sin = np.cos(angle), np.sin(angle)
        out = _sample(img, cy + (ys - cy) * cos - (xs - cx) * sin, cx + (ys - cy) * sin + (xs - cx) * cos, False)
    elif name == "color jitter":
        factors = {"brightness": rng.uniform(0, 2), "contrast": rng.uniform(0, 2), "saturation": rng.uniform(0, 2),
                   "hue": rng.uniform(-0.5, 0.5)}
        out = img
        for key in rng.permutation(list(factors)):
            f = float(factors[key])
            if key == "brightness":
                out = (out * f).clip(0, 1)
            elif key == "contrast":
                mean = _gray(out).mean()
                out = ((out - mean) * f + mean).clip(0, 1)
            elif key == "saturation":
                gray = _gray(out)
                out = ((out - gray) * f + gray).clip(0, 1)
            else:
                out = _hue_shift(out, f)
    elif name == "gaussian blur":  # separable, kernel 13, reflected borders
        sigma, size = rng.uniform(1.5, 2.0), 13
        taps = np.exp(-(np.arange(size) - size // 2) ** 2 / (2 * sigma ** 2))
        taps /= taps.sum()
        pad = size // 2
        rows = np.pad(img, ((pad, pad), (0, 0), (0, 0)), mode="reflect")
        out = sum(k * rows[i:i + h] for i, k in enumerate(taps))
        cols = np.pad(out, ((0, 0), (pad, pad), (0, 0)), mode="reflect")
        out = sum(k * cols[:, i:i + w] for i, k in enumerate(taps))
    else:  # random resized crop, torchvision's sampling: 10 tries, then the central crop
        box = None
        for _ in range(10):
            target = h * w * rng.uniform(0.08, 1.0)
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                box = (int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw)
                break
        if box is None:
            side = min(h, w)
            box = ((h - side) // 2, (w - side) // 2, side, side)
        top, left, ch, cw = box
        crop = img[top:top + ch, left:left + cw]  # upsampled back: bilinear, pixel centres aligned
        out = _sample(crop, (ys + 0.5) * ch / h - 0.5, (xs + 0.5) * cw / w - 0.5, True)
    return name, np.ascontiguousarray((out * 255).round().clip(0, 255).astype(np.uint8))


@register_method("ritual")
class RITUAL(ContrastiveMethod):
    """Add the logits of a randomly transformed view of the image."""

    class Config(ContrastiveConfig):
        alpha: float = Field(3.0, ge=0)  # weight of the transformed view: l + α·l(T(v))
        beta: float = Field(0.1, ge=0, lt=1)  # plausibility cut on the original view's distribution

    def contrast_inputs(self, model, batch: Batch) -> Batch:
        views = []
        for i, image in enumerate(batch.images):
            if image is None:
                raise ValueError(f"RITUAL needs an image for every item; item {batch.ids[i]!r} has none")
            views.append(random_transform(image, np.random.default_rng(batch.image_seed(i)))[1])
        return batch.replace(images=views)

    def combine(self, logits: torch.Tensor, contrast: torch.Tensor, step: int) -> torch.Tensor:
        return logits + self.config.alpha * contrast
