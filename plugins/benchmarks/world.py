"""The synthetic world's yes/no probes, one per misalignment level (objects by POPE's protocol, attributes,
relations), and counting, a general question-answering probe about none of them.

Each reads its question files from the world's test set (:mod:`plugins.benchmarks.world_data`)
and is scored like the real POPE (:class:`plugins.benchmarks.yesno.YesNoBenchmark`: one pinned
parser, one set of metrics).

>>> from plugins.registry import get_benchmark
>>> get_benchmark("world-attribute").splits
('random', 'adversarial', 'prior')
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from plugins.benchmarks.base import Item
from plugins.benchmarks.pope import parse_pope_answer
from plugins.benchmarks.pope_files import POPE_SPLITS
from plugins.benchmarks.world_data import ATTRIBUTE_SPLITS, COUNT_SPLITS, RELATION_SPLITS, WorldBenchmark
from plugins.benchmarks.yesno import YesNoBenchmark
from plugins.registry import register_benchmark
from plugins.world import Scene, WorldConfig, usual_color

PRIOR_COUNTS = ("negatives", "prior_negatives", "false_yes", "prior_false_yes")
"""Counts in the object and attribute probes' metrics: the "no" questions, those whose false content
agrees with the world's prior, the "yes" answers to "no" questions, and those among them. The share of
errors that follow the prior is ``prior_false_yes / false_yes``; chance is ``prior_negatives / negatives``."""


def prior_consistent(question: str, scene: Scene, world: WorldConfig) -> Optional[bool]:
    """Does a "no" question name what the world's prior would expect in ``scene``? ``None``: not a prior question.

    Object questions ("is there a heart in the image ?"): the absent category shares a
    co-occurrence group with a category present (the co-occurrence prior). Colour questions
    ("is the star yellow ?"): the colour named is the category's most likely colour under
    ``world.attribute_priors`` (the attribute prior). Other questions (size, relation, counting)
    have no prior in the world: ``None``.

    >>> from plugins.world import SceneObject
    >>> scene = Scene(seed=0, image_size=64, objects=(SceneObject("star", "blue", "small", x=4, y=4, extent=14),))
    >>> world = WorldConfig()
    >>> prior_consistent("is there a heart in the image ?", scene, world), prior_consistent("is the star yellow ?", scene, world)
    (True, True)
    >>> prior_consistent("is there a square in the image ?", scene, world), prior_consistent("is the star red ?", scene, world)
    (False, False)
    """
    words = question.split()
    if words[:2] == ["is", "there"] and len(words) >= 4 and words[3] in world.categories:
        present = set(scene.categories)
        return any(words[3] in g.categories and present & (set(g.categories) - {words[3]}) for g in world.cooccurrence)
    if words[:2] == ["is", "the"] and len(words) >= 4 and words[2] in world.categories and words[3] in world.colors:
        return words[3] == usual_color(words[2], world)
    return None


class WorldYesNo(WorldBenchmark, YesNoBenchmark):
    """A yes/no probe of the world whose "no" questions can follow a prior: its metrics count how errors do."""

    def score(self, split: str, items: Sequence[Item], answers: Sequence[str]) -> tuple[dict[str, float], list[dict[str, Any]]]:
        metrics, records = super().score(split, items, answers)
        scenes, world = self.test_set.scenes(), self.world
        counts = dict.fromkeys(PRIOR_COUNTS, 0.0)
        for item, answer in zip(items, answers):
            if item.label != "no":
                continue
            scene = scenes[item.meta["image"]]
            prior = prior_consistent(item.prompt, scene, world)  # the bare question: suffixes are added at generation
            false_yes = parse_pope_answer(answer) == "yes"
            counts["negatives"] += 1
            counts["prior_negatives"] += bool(prior)
            counts["false_yes"] += false_yes
            counts["prior_false_yes"] += bool(prior) and false_yes
        return {**metrics, **counts}, records

__all__ = ["WorldPope", "WorldAttribute", "WorldRelation", "WorldCount", "WorldYesNo", "prior_consistent", "PRIOR_COUNTS"]


@register_benchmark("world-pope")
class WorldPope(WorldYesNo):
    """POPE's protocol on the synthetic world: 500 scenes x (3 present + 3 absent objects); random / popular / adversarial."""

    name = "world-pope"
    protocol = "pope"
    splits = POPE_SPLITS
    folder = "pope"


@register_benchmark("world-attribute")
class WorldAttribute(WorldYesNo):
    """Colour and size questions on the synthetic world; false values random or the shape's usual one (adversarial).

    The ``prior`` split asks only colours, of shapes drawn against their colour prior: the true colour
    and the usual one (knowledge conflict; :func:`plugins.world.prior_color_questions`).
    """

    name = "world-attribute"
    splits = ATTRIBUTE_SPLITS
    folder = "attribute"


@register_benchmark("world-relation")
class WorldRelation(WorldBenchmark, YesNoBenchmark):
    """Spatial-relation questions on the synthetic world; the false ones ask the opposite relation."""

    name = "world-relation"
    splits = RELATION_SPLITS
    folder = "relation"


@register_benchmark("world-count")
class WorldCount(WorldBenchmark, YesNoBenchmark):
    """Counting questions on the synthetic world ("are there three objects in the image ?"): general QA, no hallucination level.

    Measures what a mitigation does to an ability it does not target (Re-Align claims gains on
    general question answering); the false ones name one object more or one fewer.
    """

    name = "world-count"
    splits = COUNT_SPLITS
    folder = "count"
