"""The synthetic scene world: seeded images of shapes with exact ground truth and built-in biases.

The knobs (:class:`WorldConfig`), the seeded :class:`SceneSampler` and the numpy renderer;
text ground truth follows.

>>> from plugins.world import SceneSampler, WorldConfig, render
>>> cfg = WorldConfig()
>>> render(SceneSampler(cfg).sample_split("train", 0), cfg).shape
(64, 64, 3)
"""
from plugins.world.config import GRAMMAR_WORDS, SHAPES, CooccurrenceGroup, WorldConfig
from plugins.world.render import HOLLOW_SHAPES, encode_png, object_mask, render, render_batch, shape_mask, to_pil
from plugins.world.scene import (
    OPPOSITE, PREDICATES, Relation, Scene, SceneObject, SceneSampler, scene_seed, spatial_relations, stream_rng,
)

__all__ = [
    # config
    "WorldConfig", "CooccurrenceGroup", "SHAPES", "GRAMMAR_WORDS",
    # scenes
    "Scene", "SceneObject", "SceneSampler", "Relation", "PREDICATES", "OPPOSITE",
    "scene_seed", "spatial_relations", "stream_rng",
    # pixels
    "render", "render_batch", "shape_mask", "object_mask", "HOLLOW_SHAPES", "encode_png", "to_pil",
]
