"""The synthetic world's yes/no probes, one per misalignment level: objects (POPE's protocol), colours, relations.

Each reads its question files from the world's test set (:mod:`plugins.benchmarks.world_data`)
and is scored like the real POPE (:class:`plugins.benchmarks.yesno.YesNoBenchmark`: one pinned
parser, one set of metrics).

>>> from plugins.registry import get_benchmark
>>> get_benchmark("world-attribute").splits
('random', 'adversarial')
"""
from __future__ import annotations

from plugins.benchmarks.pope_files import POPE_SPLITS
from plugins.benchmarks.world_data import ATTRIBUTE_SPLITS, RELATION_SPLITS, WorldBenchmark
from plugins.benchmarks.yesno import YesNoBenchmark
from plugins.registry import register_benchmark

__all__ = ["WorldPope", "WorldAttribute", "WorldRelation"]


@register_benchmark("world-pope")
class WorldPope(WorldBenchmark, YesNoBenchmark):
    """POPE's protocol on the synthetic world: 500 scenes x (3 present + 3 absent objects); random / popular / adversarial."""

    name = "world-pope"
    protocol = "pope"
    splits = POPE_SPLITS
    folder = "pope"


@register_benchmark("world-attribute")
class WorldAttribute(WorldBenchmark, YesNoBenchmark):
    """Colour and size questions on the synthetic world; false values random or the shape's usual one (adversarial)."""

    name = "world-attribute"
    splits = ATTRIBUTE_SPLITS
    folder = "attribute"


@register_benchmark("world-relation")
class WorldRelation(WorldBenchmark, YesNoBenchmark):
    """Spatial-relation questions on the synthetic world; the false ones ask the opposite relation."""

    name = "world-relation"
    splits = RELATION_SPLITS
    folder = "relation"
