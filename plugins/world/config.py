"""The knobs of the synthetic scene world: one frozen, validated :class:`WorldConfig`.

Every bias the world carries is a field here, so an experiment's config says exactly
which shortcuts a model could learn. Invalid values are rejected all at once, each
message naming the field, the bad value and what is allowed:

>>> cfg = WorldConfig()
>>> cfg.image_size, len(cfg.categories), cfg.attribute_priors["star"]
(64, 12, {'yellow': 0.9})
>>> from pydantic import ValidationError
>>> try:
...     WorldConfig(attribute_priors={"star": {"yelow": 0.9}})
... except ValidationError as err:
...     print(err.errors()[0]["msg"])
Value error, attribute_priors['star']: unknown colour 'yelow'; did you mean 'yellow'? allowed: black, blue, green, orange, purple, red, yellow
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Optional

from pydantic import Field, model_validator

from plugins.config import StrictConfig, did_you_mean, unknown  # noqa: F401 (did_you_mean re-exported)

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "heart", "diamond",
    "cross", "ring", "hexagon", "arrow", "bar", "semicircle",
)
"""Every shape :mod:`plugins.world.render` can draw; ``categories`` must be drawn from these."""

GRAMMAR_WORDS: frozenset[str] = frozenset({
    "a", "an", "the", "is", "there", "in", "image", "describe",
    "left", "right", "of", "above", "below", "and", "yes", "no", "?", ".",
})
"""Words the caption and question templates use; a category, colour or size may not reuse one,
or captions would become ambiguous to parse."""

INSTRUCTION_WORDS: frozenset[str] = frozenset({
    "answer", "question", "using", "single", "word", "or", "phrase", "please", "this", "with", "one",
})
"""Words of the instruction suffixes (:data:`plugins.world.text.INSTRUCTION_SUFFIXES`) beyond the
template words; like those, no category, colour or size may be named with one."""

NUMBER_WORDS: tuple[str, ...] = (
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen",
)
"""Counts as words, from one (the counting questions, :func:`plugins.world.text.count_questions`,
use those up to ``max_objects + 1``). No category, colour or size may be named with one."""

COUNT_WORDS: frozenset[str] = frozenset({"are", "objects"})
"""The counting template's words beyond the others ("are there three objects in the image ?")."""

DEFAULT_RELATION_MARGIN = 8.0
"""px by which two centres must differ before a spatial relation is claimed (one eighth of 64 px)."""

DEFAULT_COLORS: dict[str, tuple[int, int, int]] = {
    # Saturated and far apart in RGB, so a 14 px object's colour is unmistakable even with noise.
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 195, 20),
    "purple": (135, 60, 185),
    "orange": (240, 125, 25),
    "black": (30, 30, 30),
}


DEFAULT_SIZES: dict[str, int] = {
    # v2 adds "tiny": 10 px is barely more than one 8 px ViT patch, so presence, shape and colour
    # of a tiny object are uncertain and the language prior gets a say (visual uncertainty).
    "tiny": 10,
    "small": 14,
    "large": 20,
}


_Frozen = StrictConfig  # immutable, unknown keys fail with a "did you mean" (house rule 2)


class CooccurrenceGroup(_Frozen):
    """Categories that tend to appear together (like fork, knife and plate in COCO).

    When a scene already holds a member of the group, the next object is drawn from the
    group's still-absent members with probability ``strength`` (see :class:`SceneSampler`).

    >>> CooccurrenceGroup(categories=("star", "heart"), strength=0.8).strength
    0.8
    """

    categories: tuple[str, ...] = Field(min_length=2)  # two or more distinct category names
    strength: float = Field(ge=0.0, le=1.0)  # P(next object is a partner | a member is present)


def _default_groups() -> tuple[CooccurrenceGroup, ...]:
    # Groups mix frequent and rare categories, so "popular" negatives (frequent overall) and
    # "adversarial" negatives (frequent next to what is present) are different questions.
    return (
        CooccurrenceGroup(categories=("star", "heart", "diamond"), strength=0.8),
        CooccurrenceGroup(categories=("arrow", "cross", "bar"), strength=0.8),
        CooccurrenceGroup(categories=("circle", "ring", "semicircle"), strength=0.7),
        CooccurrenceGroup(categories=("square", "hexagon"), strength=0.6),
    )


class WorldConfig(_Frozen):
    """Everything that defines a synthetic world; two equal configs generate identical data.

    Colours and sizes are iterated in sorted-name order when sampling, so the order of keys in a
    YAML file never changes the data; the order of ``categories`` does (it is the popularity order).

    >>> WorldConfig(max_objects=3, yes_ratio=0.3).fingerprint()[:12] != WorldConfig().fingerprint()[:12]
    True
    """

    seed: int = Field(default=0, ge=0)  # world seed, mixed into every scene seed; change it for a fresh world with the same rules
    image_size: int = Field(default=64, ge=16, le=1024)  # square images, side in pixels
    min_objects: int = Field(default=2, ge=1)  # fewest objects in a scene
    max_objects: int = Field(default=5, ge=1)  # most objects in a scene (each category at most once per scene)
    categories: tuple[str, ...] = Field(default=SHAPES, min_length=2)  # shape names, most popular first
    frequency_skew: float = Field(default=0.8, ge=0.0, le=5.0)  # popularity: weight of the k-th category (0-based) ∝ 1/(k+1)**skew; 0 = uniform
    colors: dict[str, tuple[int, int, int]] = Field(default_factory=lambda: dict(DEFAULT_COLORS), min_length=2)  # colour name -> RGB
    sizes: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_SIZES), min_length=1)  # size name -> side of the object's square box in px
    cooccurrence: tuple[CooccurrenceGroup, ...] = Field(default_factory=_default_groups)  # categories that tend to appear together
    attribute_priors: dict[str, dict[str, float]] = Field(  # category -> {colour: probability}; unlisted mass is spread over unlisted colours
        default_factory=lambda: {"star": {"yellow": 0.9}, "heart": {"red": 0.85}, "ring": {"blue": 0.8}})
    caption_insert_prob: float = Field(default=0.1, ge=0.0, le=1.0)  # P(a noisy caption mentions one absent object)
    caption_drop_prob: float = Field(default=0.1, ge=0.0, le=1.0)  # P(a noisy caption leaves out one present object)
    pixel_noise_std: float = Field(default=6.0, ge=0.0, le=64.0)  # Gaussian pixel noise, in 0-255 intensity units
    background: tuple[int, int, int] = (240, 240, 240)  # RGB of the plain, light background
    min_gap: int = Field(default=2, ge=0)  # background pixels kept between any two objects' boxes
    relation_margin: float = Field(default=DEFAULT_RELATION_MARGIN, ge=0.0)  # px the centres must differ by before left/right/above/below is claimed
    yes_ratio: float = Field(default=0.5, ge=0.0, le=1.0)  # share of "yes" answers in generated yes/no questions
    # Visual uncertainty (v2): where the image is weak, a model's language prior decides.
    low_contrast_prob: float = Field(default=0.2, ge=0.0, le=1.0)  # P(an object is drawn faded toward the background)
    low_contrast_mix: float = Field(default=0.55, ge=0.0, lt=1.0)  # how far a faded object's colour moves toward the background (0 = not at all)
    occlusion_prob: float = Field(default=0.15, ge=0.0, le=1.0)  # P(an object may overlap those placed before it, ignoring min_gap)
    max_occlusion: float = Field(default=0.4, ge=0.0, le=0.9)  # most of either box an overlapping object may cover (share of its area)
    clutter_marks: int = Field(default=3, ge=0, le=32)  # distractor marks per image, uniform in 0..clutter_marks (not categories; never in captions)
    clutter_size: tuple[int, int] = (2, 4)  # side range of a distractor mark in px (inclusive)

    @model_validator(mode="after")
    def _consistent(self) -> "WorldConfig":
        # Collect every problem, then raise once: a user fixing a YAML file sees all of them (house rule 3).
        problems: list[str] = []
        cats, colors, sizes = self.categories, self.colors, self.sizes

        for field, names in (("categories", cats), ("colors", colors), ("sizes", sizes)):
            for name in names:
                if not (name.isascii() and name.isalpha() and name.islower()):
                    problems.append(f"{field}: {name!r} must be one lower-case word of letters a-z (it is a token)")
                elif name in GRAMMAR_WORDS or name in INSTRUCTION_WORDS or name in COUNT_WORDS or name in NUMBER_WORDS:
                    problems.append(f"{field}: {name!r} is a template word; choose another name")
        seen: dict[str, str] = {}
        for field, names in (("categories", cats), ("colors", colors), ("sizes", sizes)):
            for name in names:
                if name in seen:
                    problems.append(f"{field}: {name!r} is already used in {seen[name]}; names must be distinct")
                seen.setdefault(name, field)
        for name in cats:
            if name not in SHAPES:
                problems.append(f"categories: {unknown('shape', name, SHAPES, keep_order=True)}")

        for name, rgb in colors.items():
            if not all(0 <= c <= 255 for c in rgb):
                problems.append(f"colors[{name!r}]: {rgb} has a channel outside 0-255")
        named = sorted(colors.items()) + [("background", self.background)]
        for i, (a, ca) in enumerate(named):
            for b, cb in named[i + 1:]:
                # Colours a model must tell apart after noise: some channel differs by 40 or more.
                if max(abs(x - y) for x, y in zip(ca, cb)) < 40:
                    problems.append(f"colors: {a!r} {ca} and {b!r} {cb} are too close (some channel must differ by >= 40)")

        for name, side in sizes.items():
            if not 6 <= side <= self.image_size:
                problems.append(f"sizes[{name!r}]: {side} px; allowed 6 to image_size={self.image_size}")

        lo, hi = self.clutter_size
        if not 1 <= lo <= hi <= self.image_size:
            problems.append(f"clutter_size={self.clutter_size}: need 1 <= low <= high <= image_size={self.image_size}")
        elif sizes and hi >= min(sizes.values()):
            problems.append(f"clutter_size={self.clutter_size}: marks must be smaller than the smallest object "
                            f"({min(sizes.values())} px), or they could pass for one")

        if self.min_objects > self.max_objects:
            problems.append(f"min_objects={self.min_objects} is greater than max_objects={self.max_objects}")
        if self.max_objects > len(cats):
            problems.append(f"max_objects={self.max_objects} exceeds the {len(cats)} categories (each appears at most once per scene)")
        if sizes and all(6 <= s <= self.image_size for s in sizes.values()):
            # The sampler's last resort is a grid with one object per cell: it must have a cell for each.
            per_axis = (self.image_size + self.min_gap) // (max(sizes.values()) + self.min_gap)
            if per_axis * per_axis < self.max_objects:
                problems.append(
                    f"max_objects={self.max_objects} objects of up to {max(sizes.values())} px with min_gap={self.min_gap} "
                    f"do not fit in {self.image_size} px (at most {per_axis * per_axis}); lower max_objects or the sizes")

        for gi, group in enumerate(self.cooccurrence):
            for name in group.categories:
                if name not in cats:
                    problems.append(f"cooccurrence[{gi}]: {unknown('category', name, cats, keep_order=True)}")
            if len(set(group.categories)) != len(group.categories):
                problems.append(f"cooccurrence[{gi}]: categories repeat: {list(group.categories)}")

        for cat, prior in self.attribute_priors.items():
            where = f"attribute_priors[{cat!r}]"
            if cat not in cats:
                problems.append(f"{where}: {unknown('category', cat, cats, keep_order=True)}")
            for color, p in prior.items():
                if color not in colors:
                    problems.append(f"{where}: {unknown('colour', color, colors)}")
                if not 0.0 <= p <= 1.0:
                    problems.append(f"{where}[{color!r}]: probability {p} is outside [0, 1]")
            total = sum(prior.values())
            if total > 1.0 + 1e-9:
                problems.append(f"{where}: probabilities sum to {total:g} > 1")
            elif total < 1.0 - 1e-9 and set(colors) <= set(prior):
                problems.append(f"{where}: probabilities sum to {total:g} < 1 but every colour is listed, so the rest has nowhere to go")

        if problems:
            raise ValueError("\n".join(problems))
        return self

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of this config: the cache key for data generated from it."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_world(fields: Optional[Mapping[str, Any]]) -> WorldConfig:
    """The :class:`WorldConfig` a method config names by its fields (``None``: the default world).

    >>> build_world({"yes_ratio": 0.8}).yes_ratio, build_world(None) == WorldConfig()
    (0.8, True)
    """
    return WorldConfig(**dict(fields or {}))
