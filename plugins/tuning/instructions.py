"""Instruction data from the synthetic world, with and without negative instructions.

Two of the tuning methods learn from plain supervised examples (image, question, answer) rather
than from pairs:

* **LRV-Instruction** (Liu et al. 2023) mixes *positive* instructions with *negative* ones: about
  objects that are not in the image, or about a wrong attribute of an object that is, whose
  answers say so. ``mix="negative"`` builds that mix from the world: captions and questions whose
  "no" cases are the hard ones — absent objects that are popular or that co-occur with what is
  present, the colour a shape usually has when this one has another, the opposite of a relation
  that holds — half yes and half no, as LRV found the balance matters.
* **HACL** (Jiang et al. 2024) adds its contrastive loss to ordinary instruction tuning.
  ``mix="plain"`` is that ordinary data: captions and questions with random negatives, the kind
  the tiny LLaVA was trained on. HACL's hard negatives are hallucinated captions
  (:func:`hallucinated_captions`), written here by :func:`plugins.tuning.preferences.inject_hallucination`
  instead of by GPT-4.

Scenes come from the tuning stream (:data:`plugins.tuning.preferences.PREFERENCE_SPLIT`); answers
are the world's exact ground truth, in its one-word yes/no answer format.

>>> from plugins.world import WorldConfig
>>> from plugins.models.data import build_world_data
>>> world = WorldConfig()
>>> data = build_world_data(world, 3, "tune")
>>> examples = instruction_set(data, world, mix="negative")
>>> sorted({e.kind for e in examples}), all(e.answer in ("yes", "no") for e in examples if e.kind != "caption")
(['attribute', 'caption', 'object', 'relation'], True)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Optional

from plugins.tuning.preferences import STATS_SCENES, balanced_questions, inject_hallucination, scene_rng
from plugins.world import (
    CAPTION_PROMPT, SceneSampler, WorldConfig, WorldStats,
)

if TYPE_CHECKING:
    from plugins.models.data import WorldData

__all__ = ["Instruction", "instruction_set", "hallucinated_captions", "MIXES"]

MIXES = ("negative", "plain")
"""``negative``: LRV's balanced mix with hard negative instructions; ``plain``: random negatives only."""


@dataclass(frozen=True)
class Instruction:
    """One supervised example: the answer to ``prompt`` about image ``image``."""

    image: int  # index into WorldData.scenes / images
    prompt: str  # the bare question
    answer: str  # the exact answer: a caption, "yes" or "no"
    kind: str  # "caption", "object", "attribute" or "relation"
    negative: bool  # does it ask about something that is not so (answer "no")?


def instruction_set(data: "WorldData", world: WorldConfig, *, mix: Literal["negative", "plain"] = "negative",
                    counts: tuple[int, int, int] = (2, 2, 2), stats: Optional[WorldStats] = None) -> list[Instruction]:
    """Per scene of ``data``: its exact caption, then ``counts`` = (object, attribute, relation) yes/no questions.

    ``mix="negative"``: object negatives alternate between POPE's popular and adversarial picks,
    attribute negatives are the category's usual colour (adversarial), relation negatives the
    opposite of a true relation. ``mix="plain"``: random object and attribute negatives. Both
    ask half yes, half no where the scene allows.
    """
    if mix not in MIXES:
        raise ValueError(f"mix is {mix!r}, expected one of {', '.join(MIXES)}")
    stats = stats if stats is not None else WorldStats.estimate(world, n=STATS_SCENES, split="train")
    out: list[Instruction] = []
    for i, scene in enumerate(data.scenes):
        out.append(Instruction(i, CAPTION_PROMPT, data.captions[i], "caption", False))
        object_strategy = ("popular", "adversarial")[i % 2] if mix == "negative" else "random"
        attribute_strategy = "adversarial" if mix == "negative" else "random"
        questions = balanced_questions(scene, world, stats, counts, object_strategy=object_strategy,
                                       attribute_strategy=attribute_strategy)
        out += [Instruction(i, q.text, q.answer, q.kind, q.answer == "no") for q in questions]
    return out


def hallucinated_captions(data: "WorldData", world: WorldConfig, seed: int = 0) -> list[str]:
    """One caption per scene with a hallucination written in (HACL's hard negatives), seeded per scene."""
    sampler = SceneSampler(world)
    return [inject_hallucination(scene, world, scene_rng(seed + 1, scene), sampler) for scene in data.scenes]
