"""Scenes with exact ground truth, their spatial relations, and the seeded scene sampler.

A :class:`Scene` is a list of :class:`SceneObject` (category, colour, size, square box) plus
the seed it was drawn from. Each category appears at most once per scene, so "the star" in a
question or caption always names exactly one object.

Seeds. Scene ``index`` of split ``split`` has seed ``scene_seed(split, index, world_seed)``:
the first 8 bytes of BLAKE2b over ``"alignscope-world/<world_seed>/<split>/<index>"``, read
big-endian and cut to 63 bits (it fits an int64 and JSON). Train, test and demo streams
are therefore unrelated, and a collision between them is as likely as one between two random
63-bit numbers (about 1e-9 for 100k indices per split; ``tests/test_world.py`` checks there is
none for the first 100k). Every random draw about a scene (layout, pixel noise, caption noise,
questions) comes from its own stream ``stream_rng(scene.seed, STREAM)``, so asking for one more
question never changes the image.

>>> from plugins.world.config import WorldConfig
>>> sampler = SceneSampler(WorldConfig())
>>> scene = sampler.sample_split("train", 0)
>>> scene == sampler.sample(scene_seed("train", 0))
True
>>> 2 <= len(scene.objects) <= 5
True
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Optional, Union

import numpy as np

from plugins.world.config import DEFAULT_RELATION_MARGIN, WorldConfig

# Independent random streams per scene (SeedSequence spawn keys): adding draws to one never shifts another.
LAYOUT_STREAM = 0  # categories, colours, sizes, positions
NOISE_STREAM = 1  # pixel noise in render()
CAPTION_STREAM = 2  # noisy_caption()
EXISTENCE_STREAM = 3  # existence_questions()
ATTRIBUTE_STREAM = 4  # attribute_questions()
RELATION_STREAM = 5  # relation_questions()
CLUTTER_STREAM = 6  # distractor marks in render()
SIZE_STREAM = 7  # size_questions()
COUNT_STREAM = 8  # count_questions()

PREDICATES: tuple[str, ...] = ("left of", "right of", "above", "below")
OPPOSITE: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

_SEED_BITS = 63
_PLACEMENT_RESTARTS = 50  # random layouts tried before falling back to a jittered grid


def scene_seed(split: str, index: int, world_seed: int = 0) -> int:
    """The seed of scene ``index`` in ``split``: a hash, so splits never share a stream.

    >>> scene_seed("train", 0) == scene_seed("train", 0) != scene_seed("test", 0)
    True
    """
    if not (isinstance(split, str) and split and split.replace("-", "").replace("_", "").isalnum()):
        raise ValueError(f"split must be a non-empty name of letters, digits, '-' or '_', got {split!r}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    key = f"alignscope-world/{int(world_seed)}/{split}/{int(index)}".encode("utf-8")
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - _SEED_BITS)


def stream_rng(seed: int, stream: int) -> np.random.Generator:
    """A generator for one purpose (``*_STREAM``) of one scene seed.

    >>> float(stream_rng(7, NOISE_STREAM).random()) == float(stream_rng(7, NOISE_STREAM).random())
    True
    """
    # spawn_key keeps streams apart even where two different (seed, stream) pairs would hash
    # the same entropy words if simply concatenated.
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(int(stream),))))


@dataclass(frozen=True)
class SceneObject:
    """One shape in a scene. Its box is ``[x, x + extent) × [y, y + extent)`` in pixels.

    >>> SceneObject("star", "yellow", "small", x=10, y=20, extent=14).center
    (17.0, 27.0)
    """

    category: str  # shape name, e.g. "star"
    color: str  # colour name, e.g. "yellow"
    size: str  # size name, e.g. "small"
    x: int  # left column of the box
    y: int  # top row of the box (rows grow downwards)
    extent: int  # side of the square box in px (config.sizes[size])
    faded: bool = False  # drawn in low contrast: colour moved toward the background (config.low_contrast_mix)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` with exclusive ends, ready for ``image[y0:y1, x0:x1]``."""
        return (self.x, self.y, self.x + self.extent, self.y + self.extent)

    @property
    def center(self) -> tuple[float, float]:
        """``(cx, cy)``: the centre of the box in pixel coordinates."""
        return (self.x + self.extent / 2, self.y + self.extent / 2)


class Relation(NamedTuple):
    """``subject predicate object``, e.g. ``Relation("circle", "left of", "square")``."""

    subject: str
    predicate: str
    object: str


def spatial_relations(a: SceneObject, b: SceneObject, margin: float) -> tuple[str, ...]:
    """The predicates that hold for ``a`` with respect to ``b`` (``a left of b`` ...).

    The rule, on box centres ``(cx, cy)``: ``a`` is *left of* ``b`` when
    ``cx(b) - cx(a) >= margin`` and *right of* when ``cx(a) - cx(b) >= margin``; *above* when
    ``cy(b) - cy(a) >= margin`` and *below* when ``cy(a) - cy(b) >= margin`` (rows grow
    downwards). Closer than ``margin`` on an axis, the pair has no relation on that axis: it is
    never claimed in a caption nor asked about. A diagonal pair holds one relation per axis.

    >>> a = SceneObject("circle", "red", "small", x=0, y=0, extent=14)
    >>> b = SceneObject("star", "blue", "small", x=30, y=4, extent=14)
    >>> spatial_relations(a, b, margin=8.0), spatial_relations(b, a, margin=8.0)
    (('left of',), ('right of',))
    """
    (ax, ay), (bx, by) = a.center, b.center
    out = []
    if bx - ax >= margin:
        out.append("left of")
    if ax - bx >= margin:
        out.append("right of")
    if by - ay >= margin:
        out.append("above")
    if ay - by >= margin:
        out.append("below")
    return tuple(out)


def holding_predicates(subject_center: tuple[float, float], object_center: tuple[float, float],
                       margin: float) -> tuple[str, ...]:
    """The predicates that hold for subject vs object between two centres (the rule of :func:`spatial_relations`).

    For points read off an image (a detector's centres) rather than scene objects.

    >>> holding_predicates((10.0, 30.0), (40.0, 31.0), 8.0)
    ('left of',)
    """
    (sx, sy), (ox, oy) = subject_center, object_center
    out = []
    for predicate, gap in (("left of", ox - sx), ("right of", sx - ox), ("above", oy - sy), ("below", sy - oy)):
        if gap >= margin:
            out.append(predicate)
    return tuple(p for p in PREDICATES if p in out)


@dataclass(frozen=True)
class Scene:
    """A scene: its seed, the image side, and its objects (at most one per category).

    >>> s = Scene(seed=1, image_size=64, objects=(
    ...     SceneObject("circle", "red", "small", x=4, y=25, extent=14),
    ...     SceneObject("square", "blue", "large", x=40, y=22, extent=20)))
    >>> s.relations(margin=8.0)
    (Relation(subject='circle', predicate='left of', object='square'), Relation(subject='square', predicate='right of', object='circle'))
    """

    seed: int  # the scene's seed; pixel noise and question sampling derive from it
    image_size: int  # side of the square image in px
    objects: tuple[SceneObject, ...]  # in sampling order

    def __post_init__(self) -> None:
        cats = [o.category for o in self.objects]
        if len(set(cats)) != len(cats):
            raise ValueError(f"a category appears twice in the scene: {cats}; each may appear at most once")
        for o in self.objects:
            if o.x < 0 or o.y < 0 or o.x + o.extent > self.image_size or o.y + o.extent > self.image_size:
                raise ValueError(f"{o.category} box {o.bbox} is outside the {self.image_size} px image")

    @property
    def categories(self) -> tuple[str, ...]:
        """The categories present, in object order."""
        return tuple(o.category for o in self.objects)

    def get(self, category: str) -> Optional[SceneObject]:
        """The object of ``category``, or None when the scene has none."""
        for o in self.objects:
            if o.category == category:
                return o
        return None

    def relations(self, margin: float = DEFAULT_RELATION_MARGIN) -> tuple[Relation, ...]:
        """Every relation that holds between two objects (both directions), sorted.

        Pass ``config.relation_margin`` when the config changes it; the rule is :func:`spatial_relations`.
        """
        out = [
            Relation(a.category, p, b.category)
            for a in self.objects for b in self.objects if a is not b
            for p in spatial_relations(a, b, margin)
        ]
        return tuple(sorted(out))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` inverts it exactly."""
        return {
            "seed": self.seed,
            "image_size": self.image_size,
            "objects": [
                {"category": o.category, "color": o.color, "size": o.size, "x": o.x, "y": o.y, "extent": o.extent,
                 **({"faded": True} if o.faded else {})}  # v1 scenes (nothing faded) keep their v1 JSON
                for o in self.objects
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scene":
        return cls(seed=int(data["seed"]), image_size=int(data["image_size"]),
                   objects=tuple(SceneObject(**o) for o in data["objects"]))


class SceneSampler:
    """Draws scenes from a :class:`WorldConfig`; the same seed always gives the same scene.

    How a scene is drawn (all from ``stream_rng(seed, LAYOUT_STREAM)``):

    1. the object count, uniform in ``[min_objects, max_objects]``;
    2. the first category from the popularity prior (k-th category ∝ ``1/(k+1)**frequency_skew``);
    3. each next category: take the co-occurrence groups that hold a present category and
       still miss one; with probability equal to the strongest such group's ``strength``
       (ties: first in config order) pick uniformly among that group's absent members,
       otherwise draw from the popularity prior over all absent categories;
    4. each object's colour from its category's attribute prior (unlisted mass spread evenly
       over unlisted colours; no prior = uniform), its size uniformly;
    5. visual uncertainty (each draw only made when its knob is non-zero, so a world with both
       knobs at 0 and v1's two sizes draws exactly the v1 scenes): each object is *faded* with probability
       ``low_contrast_prob``, and may *overlap* earlier-placed objects with probability
       ``occlusion_prob``;
    6. positions: largest object first, each corner uniform over all corners that keep
       ``min_gap`` free pixels to every placed box — for an object allowed to overlap, every
       corner where it covers at most ``max_occlusion`` of its own box and of each placed box;
       a layout that jams is redrawn, and after 50 jams a jittered grid is used.

    >>> from plugins.world.config import WorldConfig
    >>> [(o.category, o.color, o.size) for o in SceneSampler(WorldConfig()).sample_split("train", 0).objects]
    [('bar', 'orange', 'small'), ('cross', 'purple', 'small')]
    >>> v1 = WorldConfig(sizes={"small": 14, "large": 20}, low_contrast_prob=0, occlusion_prob=0)
    >>> [(o.category, o.color, o.size) for o in SceneSampler(v1).sample_split("train", 0).objects]
    [('bar', 'orange', 'small'), ('cross', 'purple', 'large')]
    """

    def __init__(self, config: WorldConfig):
        self.config = config
        self.categories: tuple[str, ...] = tuple(config.categories)
        self.colors: tuple[str, ...] = tuple(sorted(config.colors))  # sorted: YAML key order must not change data
        self.sizes: tuple[str, ...] = tuple(sorted(config.sizes, key=lambda s: (config.sizes[s], s)))
        self._extents = np.array([config.sizes[s] for s in self.sizes])  # (n_sizes,)
        n_cat = len(self.categories)

        weights = 1.0 / np.arange(1, n_cat + 1, dtype=np.float64) ** config.frequency_skew  # (n_cat,)
        self.popularity: np.ndarray = weights / weights.sum()  # (n_cat,) prior of a category being drawn first

        # Strongest group first (stable sort keeps config order on ties), as lists of category indices.
        index = {c: i for i, c in enumerate(self.categories)}
        groups = sorted(config.cooccurrence, key=lambda g: -g.strength)
        self._groups = [([index[c] for c in g.categories], g.strength) for g in groups if g.strength > 0]

        probs = np.full((n_cat, len(self.colors)), 1.0 / len(self.colors))  # (n_cat, n_colors)
        for cat, prior in config.attribute_priors.items():
            row = np.zeros(len(self.colors))
            for color, p in prior.items():
                row[self.colors.index(color)] = p
            rest = [i for i, c in enumerate(self.colors) if c not in prior]
            if rest:
                row[rest] = (1.0 - sum(prior.values())) / len(rest)
            probs[index[cat]] = row
        self.color_probs: np.ndarray = probs  # (n_cat, n_colors) P(colour | category)
        self._color_cdf = np.cumsum(probs, axis=1)  # (n_cat, n_colors)

    # ------------------------------------------------------------------ categories

    def next_category(self, present: list[int], rng: np.random.Generator) -> int:
        """Index of the next category given the present ones (step 3 above).

        Also used by :func:`plugins.world.text.noisy_caption`: a caption hallucinates what
        the context suggests, as annotators and language priors do.
        """
        absent = np.ones(len(self.categories), dtype=bool)  # (n_cat,)
        absent[present] = False
        if present:
            present_set = set(present)
            for members, strength in self._groups:
                if present_set.intersection(members):
                    partners = [m for m in members if absent[m]]
                    if partners:
                        # Only the strongest eligible group gets its coin flip; documented in the class.
                        if rng.random() < strength:
                            return partners[int(rng.integers(len(partners)))]
                        break
        cdf = np.cumsum(np.where(absent, self.popularity, 0.0))  # (n_cat,)
        return int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))

    # ------------------------------------------------------------------ sampling

    def sample(self, seed: Union[int, np.random.Generator]) -> Scene:
        """The scene of ``seed``; given a Generator, a scene seed is drawn from it first."""
        if isinstance(seed, np.random.Generator):
            seed = int(seed.integers(0, 2**_SEED_BITS))
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int or a numpy Generator, got {seed!r}")
        seed = int(seed)
        cfg = self.config
        rng = stream_rng(seed, LAYOUT_STREAM)

        n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        cats: list[int] = []
        for _ in range(n):
            cats.append(self.next_category(cats, rng))
        u = rng.random(n)  # (n,) one uniform per object for its colour
        colors = [int(np.searchsorted(self._color_cdf[c], u[i] * self._color_cdf[c, -1], side="right"))
                  for i, c in enumerate(cats)]
        size_idx = rng.integers(len(self.sizes), size=n)  # (n,)
        extents = self._extents[size_idx]  # (n,)
        faded = rng.random(n) < cfg.low_contrast_prob if cfg.low_contrast_prob > 0 else np.zeros(n, dtype=bool)  # (n,)
        overlaps = rng.random(n) < cfg.occlusion_prob if cfg.occlusion_prob > 0 else np.zeros(n, dtype=bool)  # (n,)

        for _ in range(_PLACEMENT_RESTARTS):
            xy = self._place(extents, rng, overlaps)
            if xy is not None:
                break
        else:
            # Rarely reached (6 scenes in 100,000 train scenes with the defaults); the config
            # validator guarantees this grid has room, so sampling cannot fail.
            xy = self._place_on_grid(extents, rng)

        objects = tuple(
            SceneObject(self.categories[c], self.colors[colors[i]], self.sizes[int(size_idx[i])],
                        x=int(xy[i, 0]), y=int(xy[i, 1]), extent=int(extents[i]), faded=bool(faded[i]))
            for i, c in enumerate(cats)
        )
        return Scene(seed=seed, image_size=cfg.image_size, objects=objects)

    def _place(self, extents: np.ndarray, rng: np.random.Generator,
               overlaps: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """Top-left corners ``(n, 2)`` for boxes of ``extents`` ``(n,)``, or None if the layout jams.

        Each object's corner is uniform over *every* corner still free, found exactly on a grid,
        so a layout fails only when no free corner is left at all (then the caller redraws).
        An object with ``overlaps[i]`` may cover up to ``max_occlusion`` of its box and of each placed box.
        """
        size, gap = self.config.image_size, self.config.min_gap
        share = self.config.max_occlusion
        xy = np.zeros((len(extents), 2), dtype=np.int64)  # (n, 2) x, y per object
        placed: list[tuple[int, int, int, int]] = []  # x0, y0, x1, y1 of boxes placed so far
        for i in np.argsort(-extents, kind="stable"):  # big boxes first: they are the hard ones to fit
            s = int(extents[i])
            span = size - s + 1  # corners 0 .. size - s on each axis
            free = np.ones((span, span), dtype=bool)  # (rows=y, cols=x) corners still allowed
            corner = np.arange(span)  # (span,) corner coordinate on either axis
            for x0, y0, x1, y1 in placed:
                if overlaps is not None and overlaps[i]:
                    # Overlap area of [c, c + s) with the placed box, separable in x and y.
                    ox = np.clip(np.minimum(corner + s, x1) - np.maximum(corner, x0), 0, None)  # (span,)
                    oy = np.clip(np.minimum(corner + s, y1) - np.maximum(corner, y0), 0, None)  # (span,)
                    limit = share * min(s * s, (x1 - x0) * (y1 - y0))
                    free &= np.outer(oy, ox) <= limit
                    continue
                # A corner (x, y) touches box b when x in (x0 - s - gap, x1 + gap), same for y.
                free[max(0, y0 - s - gap + 1):max(0, y1 + gap), max(0, x0 - s - gap + 1):max(0, x1 + gap)] = False
            corners = np.flatnonzero(free)  # (m,) flat indices y * span + x
            if corners.size == 0:
                return None
            y, x = divmod(int(corners[rng.integers(corners.size)]), span)
            xy[i] = (x, y)
            placed.append((x, y, x + s, y + s))
        return xy

    def _place_on_grid(self, extents: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Corners ``(n, 2)`` in distinct cells of a grid of pitch ``max size + min_gap``, jittered."""
        gap, big = self.config.min_gap, int(self._extents.max())
        pitch = big + gap
        per_axis = (self.config.image_size + gap) // pitch  # WorldConfig checks per_axis**2 >= max_objects
        cells = rng.permutation(per_axis * per_axis)[: len(extents)]  # (n,) distinct cells
        jitter = rng.integers(0, big - extents + 1, size=(2, len(extents)))  # (2, n) slack inside a cell
        cy, cx = np.divmod(cells, per_axis)
        return np.stack([cx * pitch + jitter[0], cy * pitch + jitter[1]], axis=1)  # (n, 2)

    def sample_split(self, split: str, index: int) -> Scene:
        """Scene ``index`` of ``split`` ("train", "test", "demo", ...) in this config's world."""
        return self.sample(scene_seed(split, index, self.config.seed))

    def scenes(self, split: str, n: int, start: int = 0) -> Iterator[Scene]:
        """Scenes ``start, ..., start + n - 1`` of ``split``, lazily."""
        for index in range(start, start + n):
            yield self.sample_split(split, index)
