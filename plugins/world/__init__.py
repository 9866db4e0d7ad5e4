"""The synthetic scene world: seeded scenes of shapes with exact ground truth and built-in biases.

This first part holds the knobs (:class:`WorldConfig`) and the seeded :class:`SceneSampler`;
rendering and text follow.

>>> from plugins.world import SceneSampler, WorldConfig
>>> len(SceneSampler(WorldConfig()).sample_split("train", 0).objects)
2
"""
from plugins.world.config import GRAMMAR_WORDS, SHAPES, CooccurrenceGroup, WorldConfig
from plugins.world.scene import (
    OPPOSITE, PREDICATES, Relation, Scene, SceneObject, SceneSampler, scene_seed, spatial_relations, stream_rng,
)

__all__ = [
    # config
    "WorldConfig", "CooccurrenceGroup", "SHAPES", "GRAMMAR_WORDS",
    # scenes
    "Scene", "SceneObject", "SceneSampler", "Relation", "PREDICATES", "OPPOSITE",
    "scene_seed", "spatial_relations", "stream_rng",
]
