"""The synthetic scene world: seeded images of shapes with exact ground truth and built-in biases.

By default a scene is 2-5 shapes (12 categories, 7 colours, 3 sizes) on a light 64 px canvas. Every object,
attribute and relation is known exactly, so hallucination can be measured without annotators,
and every bias below is a knob of :class:`WorldConfig`, so an experiment can switch the cause
of a hallucination on and off and watch the effect. How the biases map to the survey's causes
(taxonomy ids under ``taxonomy/cause.yaml``):

* **Co-occurrence** (``cooccurrence``; data level, ``cause/data/imbalance``): categories come
  in groups that tend to appear together, like fork and knife. A model that learns the group
  instead of looking answers "yes" to an absent partner; POPE's *adversarial* negatives
  (:func:`existence_questions`) ask exactly about those partners.
* **Popularity** (``frequency_skew``; ``cause/data/imbalance``): some categories are far more
  frequent than others, so POPE's *popular* negatives are the ones a prior-driven model says
  "yes" to.
* **Attribute priors** (``attribute_priors``; model level, ``cause/model/knowledge-conflict``):
  a star is yellow 90 % of the time. Asking "is the star yellow ?" about a blue star
  (:func:`attribute_questions` with ``strategy="adversarial"``) pits the image against the
  learned prior, the survey's green-tomato example.
* **Caption noise** (``caption_insert_prob``, ``caption_drop_prob``; ``cause/data/imperfections``
  and, since the exact questions about the same image disagree with it, ``cause/data/inconsistency``):
  :func:`noisy_caption` mentions an absent object chosen by the world's own co-occurrence
  statistics, or leaves a present one out, and records which.
* **Yes/no imbalance** (``yes_ratio``; ``cause/data/imbalance``): the share of "yes" answers in
  generated questions, to train a yes-biased model or to test with balanced questions.
* **Visual uncertainty** (v2: ``sizes`` with a 10 px "tiny", ``low_contrast_prob`` /
  ``low_contrast_mix``, ``occlusion_prob`` / ``max_occlusion``, ``clutter_marks`` / ``clutter_size``;
  model level, ``cause/model/ability-gap``): tiny objects, objects faded toward the background,
  objects partly hidden by others, and distractor marks that are not categories. Where the image
  is weak the language prior decides, as the survey reports for large models, so popular /
  adversarial negatives and prior colours are hard for a reason a mitigation method can address.

Seeds: scene ``i`` of a split has seed :func:`scene_seed` ``(split, i, config.seed)``, a hash,
so train, test and demo scenes never share a seed; rendering, caption noise and questions each
draw from their own stream of that seed, so everything is reproducible per scene.

>>> from plugins.world import SceneSampler, WorldConfig, caption, existence_questions, render
>>> cfg = WorldConfig()
>>> scene = SceneSampler(cfg).sample_split("train", 0)
>>> render(scene, cfg).shape
(64, 64, 3)
>>> caption(scene, cfg).split()[-1], [q.answer for q in existence_questions(scene, cfg, n=4)].count("yes")
('.', 2)
"""
from plugins.world.config import GRAMMAR_WORDS, SHAPES, CooccurrenceGroup, WorldConfig, build_world
from plugins.world.render import HOLLOW_SHAPES, encode_png, object_mask, render, render_batch, shape_mask, to_pil
from plugins.world.scene import (
    OPPOSITE, PREDICATES, Relation, Scene, SceneObject, SceneSampler, holding_predicates, scene_seed, spatial_relations,
    stream_rng,
)
from plugins.world.text import (
    CAPTION_PROMPT, INSTRUCTION_SUFFIXES, STRATEGIES, MentionedObject, NoisyCaption, ParsedCaption, Question, WorldStats,
    attribute_questions, caption, existence_questions, noisy_caption, object_phrase, parse_caption,
    relation_questions, size_questions, count_questions, prior_color_questions, usual_color, count_words, instruction_text,
    split_counts, tokenize, vocabulary,
)

__all__ = [
    # config
    "WorldConfig", "CooccurrenceGroup", "SHAPES", "GRAMMAR_WORDS", "build_world",
    # scenes
    "Scene", "SceneObject", "SceneSampler", "Relation", "PREDICATES", "OPPOSITE",
    "scene_seed", "spatial_relations", "holding_predicates", "stream_rng",
    # pixels
    "render", "render_batch", "shape_mask", "object_mask", "HOLLOW_SHAPES", "encode_png", "to_pil",
    # text
    "caption", "noisy_caption", "NoisyCaption", "object_phrase", "parse_caption", "ParsedCaption", "MentionedObject",
    "existence_questions", "attribute_questions", "relation_questions", "Question", "STRATEGIES", "split_counts",
    "WorldStats", "vocabulary", "tokenize", "CAPTION_PROMPT", "size_questions", "INSTRUCTION_SUFFIXES",
    "instruction_text", "count_questions", "prior_color_questions", "usual_color", "count_words",
]
