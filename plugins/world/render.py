"""Rasterise a :class:`Scene` into an RGB ``uint8`` array with numpy only.

Each shape is a predicate on coordinates ``(u, v) in [-1, 1]^2`` (v points up), evaluated at
4 × 4 sub-pixel points per pixel, so edges are anti-aliased. The coverage mask of a
(category, side) pair never changes, so it is computed once and cached; drawing a scene is then
one alpha blend per object and one noise draw per image. Pixel noise comes from
``stream_rng(scene.seed, NOISE_STREAM)``: the same scene always gives the same bytes.

Visual uncertainty (v2 knobs of :class:`~plugins.world.WorldConfig`): a *faded* object's colour is
moved ``low_contrast_mix`` of the way toward the background; objects are drawn in scene order,
so one that overlaps another hides part of it; up to ``clutter_marks`` distractor marks (small
rectangles in the world's colours, smaller than any object, never named in text) are drawn under
the objects from ``stream_rng(scene.seed, CLUTTER_STREAM)``.

>>> from plugins.world import SceneSampler, WorldConfig
>>> cfg = WorldConfig()
>>> image = render(SceneSampler(cfg).sample(0), cfg)
>>> image.shape, image.dtype
((64, 64, 3), dtype('uint8'))
"""
from __future__ import annotations

import struct
import zlib
from functools import lru_cache
from typing import Any, Callable, Sequence

import numpy as np

from plugins.world.config import SHAPES, WorldConfig
from plugins.world.scene import CLUTTER_STREAM, NOISE_STREAM, Scene, SceneObject, stream_rng

_SUPERSAMPLE = 4  # sub-pixels per pixel side: smooth 14 px shapes without a slow renderer


def _polygon(u: np.ndarray, v: np.ndarray, vertices: Sequence[tuple[float, float]]) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over points (a loop over edges only)."""
    inside = np.zeros(u.shape, dtype=bool)
    pts = list(vertices)
    for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1]):
        if y1 == y2:  # a horizontal edge is never crossed by a horizontal ray
            continue
        crosses = (y1 > v) != (y2 > v)
        x_at = x1 + (v - y1) * (x2 - x1) / (y2 - y1)  # x of the edge at height v
        inside ^= crosses & (u < x_at)
    return inside


def _regular(n: int, radius: float, phase: float) -> list[tuple[float, float]]:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return [(radius * float(np.cos(a)), radius * float(np.sin(a))) for a in angles]


def _star_vertices() -> list[tuple[float, float]]:
    outer, inner = _regular(5, 1.0, np.pi / 2), _regular(5, 0.42, np.pi / 2 + np.pi / 5)
    # Centroid of a point-up star sits low in its box; shift it so the star fills the box evenly.
    return [(x, y - 0.1) for pair in zip(outer, inner) for (x, y) in pair]


_STAR = _star_vertices()
_HEXAGON = _regular(6, 0.98, 0.0)  # corners left and right, flat top and bottom edges

# Shape predicates on (u, v) ∈ [-1, 1]², v up. Sizes are chosen so the shapes look equally big.
_SHAPE_FNS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda u, v: u * u + v * v <= 0.95**2,
    "square": lambda u, v: (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85),
    "triangle": lambda u, v: _polygon(u, v, [(0.0, 0.92), (-0.97, -0.82), (0.97, -0.82)]),
    "star": lambda u, v: _polygon(u, v, _STAR),
    "heart": lambda u, v: (((u + 0.47) ** 2 + (v - 0.4) ** 2 <= 0.52**2)
                           | ((u - 0.47) ** 2 + (v - 0.4) ** 2 <= 0.52**2)
                           | _polygon(u, v, [(-0.96, 0.25), (0.96, 0.25), (0.0, -0.95)])),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 0.97,
    "cross": lambda u, v: ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95)),
    "ring": lambda u, v: (u * u + v * v <= 0.95**2) & (u * u + v * v >= 0.52**2),
    "hexagon": lambda u, v: _polygon(u, v, _HEXAGON),
    "arrow": lambda u, v: (((u >= -0.95) & (u <= 0.15) & (np.abs(v) <= 0.24))
                           | _polygon(u, v, [(0.05, 0.75), (0.97, 0.0), (0.05, -0.75)])),
    "bar": lambda u, v: (np.abs(u) <= 0.95) & (np.abs(v) <= 0.32),
    "semicircle": lambda u, v: (u * u + (v + 0.45) ** 2 <= 0.95**2) & (v >= -0.45),
}

HOLLOW_SHAPES: frozenset[str] = frozenset({"ring"})
"""Shapes whose box centre is background; sample their colour on the shape, not at the centre."""


@lru_cache(maxsize=None)
def shape_mask(category: str, extent: int) -> np.ndarray:
    """Coverage ``(extent, extent)`` float32 in [0, 1] of ``category`` drawn in an ``extent`` px box.

    Read-only and cached: the same array is returned on every call.

    >>> m = shape_mask("square", 14)
    >>> m.shape, float(m[7, 7]), float(m[0, 0])
    ((14, 14), 1.0, 0.0)
    """
    if category not in _SHAPE_FNS:
        raise ValueError(f"unknown shape {category!r}; allowed: {', '.join(SHAPES)}")
    n = extent * _SUPERSAMPLE
    t = (np.arange(n) + 0.5) / n * 2.0 - 1.0  # (n,) sub-pixel centres in [-1, 1]
    u = t[None, :]  # (1, n) columns → u
    v = -t[:, None]  # (n, 1) rows → v, flipped so v points up
    hit = _SHAPE_FNS[category](np.broadcast_to(u, (n, n)), np.broadcast_to(v, (n, n)))  # (n, n) bool
    cover = hit.reshape(extent, _SUPERSAMPLE, extent, _SUPERSAMPLE).mean(axis=(1, 3), dtype=np.float32)  # (extent, extent)
    cover.setflags(write=False)
    return cover


def object_mask(obj: SceneObject, image_size: int) -> np.ndarray:
    """Coverage ``(H, W)`` float32 of one object in the full image (zeros outside its box)."""
    full = np.zeros((image_size, image_size), dtype=np.float32)  # (H, W)
    x0, y0, x1, y1 = obj.bbox
    full[y0:y1, x0:x1] = shape_mask(obj.category, obj.extent)
    return full


def render(scene: Scene, config: WorldConfig) -> np.ndarray:
    """The scene as an ``(H, W, 3)`` uint8 RGB array; identical bytes for identical scenes.

    >>> from plugins.world import Scene, SceneObject, WorldConfig
    >>> cfg = WorldConfig(pixel_noise_std=0.0)
    >>> s = Scene(seed=0, image_size=64, objects=(SceneObject("circle", "red", "large", 10, 10, 20),))
    >>> render(s, cfg)[20, 20].tolist(), render(s, cfg)[60, 60].tolist()
    ([215, 40, 40], [240, 240, 240])
    """
    size = scene.image_size
    if size != config.image_size:
        raise ValueError(f"scene is {size} px but config.image_size is {config.image_size}: render with the config that sampled it")
    img = np.empty((size, size, 3), dtype=np.float32)  # (H, W, 3) intensities 0-255
    img[:] = config.background
    background = np.asarray(config.background, dtype=np.float32)  # (3,)
    if config.clutter_marks > 0:
        _draw_clutter(img, scene.seed, config)
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.bbox
        alpha = shape_mask(obj.category, obj.extent)[:, :, None]  # (s, s, 1)
        if obj.color not in config.colors:
            raise ValueError(f"{obj.category} has colour {obj.color!r}, which config.colors does not define")
        color = np.asarray(config.colors[obj.color], dtype=np.float32)  # (3,)
        if obj.faded:
            color = color + np.float32(config.low_contrast_mix) * (background - color)
        region = img[y0:y1, x0:x1]  # (s, s, 3) view: blending writes into img
        region += alpha * (color - region)
    if config.pixel_noise_std > 0:
        noise = stream_rng(scene.seed, NOISE_STREAM).standard_normal(img.shape, dtype=np.float32)  # (H, W, 3)
        img += np.float32(config.pixel_noise_std) * noise
    np.clip(img, 0, 255, out=img)
    return np.rint(img).astype(np.uint8)


def _draw_clutter(img: np.ndarray, seed: int, config: WorldConfig) -> None:
    """Draw 0..``clutter_marks`` distractor rectangles into ``img`` ``(H, W, 3)`` (in place)."""
    rng = stream_rng(seed, CLUTTER_STREAM)
    palette = [config.colors[name] for name in sorted(config.colors)]
    lo, hi = config.clutter_size
    size = img.shape[0]
    for _ in range(int(rng.integers(config.clutter_marks + 1))):
        w, h = (int(v) for v in rng.integers(lo, hi + 1, size=2))  # dots, dashes and short bars
        x, y = int(rng.integers(size - w + 1)), int(rng.integers(size - h + 1))
        img[y:y + h, x:x + w] = palette[int(rng.integers(len(palette)))]


def render_batch(scenes: Sequence[Scene], config: WorldConfig) -> np.ndarray:
    """``(N, H, W, 3)`` uint8: :func:`render` of each scene, stacked."""
    size = config.image_size
    out = np.empty((len(scenes), size, size, 3), dtype=np.uint8)  # (N, H, W, 3)
    for i, scene in enumerate(scenes):
        out[i] = render(scene, config)
    return out


def to_pil(image: np.ndarray) -> Any:
    """A ``PIL.Image.Image`` of an ``(H, W, 3)`` uint8 array; needs Pillow (optional)."""
    try:
        from PIL import Image
    except ImportError as exc:  # Pillow is optional: everything else here needs only numpy
        raise ImportError("to_pil needs Pillow (pip install pillow); encode_png works without it") from exc
    return Image.fromarray(np.ascontiguousarray(image), mode="RGB")


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` uint8 array, with the standard library only; byte-stable.

    >>> encode_png(np.zeros((2, 2, 3), dtype=np.uint8))[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {image.shape} {image.dtype}")
    h, w, _ = image.shape
    # Each row is prefixed with filter type 0 (none); zlib level 9 is deterministic.
    raw = np.concatenate([np.zeros((h, 1), dtype=np.uint8), image.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit depth, colour type 2 (RGB)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
