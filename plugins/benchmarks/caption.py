"""CHAIR-style caption hallucination metrics, exact on the closed-vocabulary scene world.

CHAIR (Rohrbach et al., "Object Hallucination in Image Captioning", EMNLP 2018) compares the
objects a caption names with the objects annotated in the image. On COCO that needs synonym
lists and human annotations, both incomplete; in the scene world the vocabulary is closed and
the ground truth is exact, so every number here is exact. Captions are read by the world's one
parser, :func:`plugins.world.parse_caption` (free-form output is fine: unknown words are
skipped), and scored by :func:`score_caption` (scorer :data:`SCORER_NAME`).

**Object level (CHAIR proper).** A *mention* is one occurrence of a category word. A mention is
*hallucinated* when its category is not in the scene. As in the official ``chair.py``, repeated
mentions count each time::

    CHAIR_i = (hallucinated object mentions) / (all object mentions)      over all captions
    CHAIR_s = (captions with >= 1 hallucinated mention) / (all captions)

**Attribute level.** Every mention of a *present* category that carries a colour and/or size
word states one attribute per word; a stated attribute is wrong when it differs from the scene
object's. Colour and size are counted separately (``color_*``, ``size_*``) and together::

    attr_CHAIR_i = (wrong attribute statements) / (attribute statements)
    attr_CHAIR_s = (captions with >= 1 wrong attribute statement) / (all captions)

Attributes of an absent category are not scored: that mention is already an object hallucination.

**Relation level.** Each relation the parser reads (``left of``, ``right of``, ``above``,
``below`` between neighbouring mentions) whose subject and object are both present is *checked*;
it is wrong unless it is in ``scene.relations(config.relation_margin)``, i.e. unless it holds by
at least the margin (a claim about a pair that is closer than the margin on that axis is wrong).
A relation with an absent end is *not* a relation hallucination — it is counted once, as an
object hallucination, and listed as unchecked::

    rel_CHAIR_i = (wrong checked relations) / (checked relations)
    rel_CHAIR_s = (captions with >= 1 wrong checked relation) / (all captions)

**Coverage.** ``recall`` = (scene objects the caption names) / (scene objects), pooled over
captions like CHAIR_i (a micro average: each scene object counts once). ``mean_words`` is the
mean number of words, a word being a whitespace-separated token with a letter or digit.

**Empty denominators.** A rate whose denominator is 0 (no object mention, no attribute
statement, no checked relation, no scene object) is 0.0, as in the official code's per-caption
CHAIR_i. So an empty or gibberish caption scores 0 hallucination *and* 0 recall: read the rates
next to ``recall`` and the counts, never alone.

>>> from plugins.world import Scene, SceneObject, WorldConfig
>>> cfg = WorldConfig()
>>> scene = Scene(seed=0, image_size=64, objects=(
...     SceneObject("circle", "red", "small", x=4, y=34, extent=14),
...     SceneObject("star", "blue", "large", x=40, y=30, extent=20)))
>>> m = chair_metrics(["a small red circle left of a large blue star .",
...                    "a red circle and a green star and a heart ."], [scene, scene], cfg)
>>> m["chair_s"], m["chair_i"], m["attr_chair_s"], m["attribute_wrong"], m["attribute_mentions"], m["recall"]
(0.5, 0.2, 0.5, 1, 6, 1.0)
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from plugins.world.config import WorldConfig
from plugins.world.scene import Relation, Scene
from plugins.world.text import parse_caption

SCORER_NAME = "chair-world-v1"
"""Recorded as ``provenance.parser`` with caption results; bump it if a definition here changes."""

_WORD = re.compile(r"\S*[A-Za-z0-9]\S*")  # a whitespace-separated token holding a letter or digit


@dataclass(frozen=True)
class WrongAttribute:
    """One wrong attribute statement: the caption said ``stated`` where the scene has ``actual``."""

    category: str  # the (present) object the attribute was stated for
    attribute: str  # "color" or "size"
    stated: str  # the word in the caption
    actual: str  # the scene object's value


@dataclass(frozen=True)
class CaptionScore:
    """Everything :func:`score_caption` found in one caption; counts are per mention."""

    mentioned: tuple[str, ...]  # distinct categories named, in caption order
    hallucinated: tuple[str, ...]  # distinct named categories absent from the scene, in caption order
    n_object_mentions: int  # category words read (repeats count)
    n_hallucinated_mentions: int  # of those, mentions of absent categories
    n_color: int  # colour words stated for present objects
    n_color_wrong: int  # of those, different from the object's colour
    n_size: int  # size words stated for present objects
    n_size_wrong: int  # of those, different from the object's size
    wrong_attributes: tuple[WrongAttribute, ...]  # every wrong statement, in caption order
    n_relations: int  # relations read, including those with an absent end
    n_relations_checked: int  # relations whose both ends are present
    n_relations_wrong: int  # checked relations that do not hold in the scene
    wrong_relations: tuple[Relation, ...]  # the wrong checked relations, in caption order
    unchecked_relations: tuple[Relation, ...]  # relations with an absent end (object hallucinations)
    n_scene_objects: int  # objects in the scene
    n_covered: int  # scene objects the caption names
    n_words: int  # words in the caption

    @property
    def n_attributes(self) -> int:
        """Attribute statements about present objects (colour + size)."""
        return self.n_color + self.n_size

    @property
    def n_attributes_wrong(self) -> int:
        return self.n_color_wrong + self.n_size_wrong

    @property
    def recall(self) -> float:
        """Share of scene objects named; 0.0 for an empty scene."""
        return _rate(self.n_covered, self.n_scene_objects)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: lists instead of tuples, relations as ``[subject, predicate, object]``, rates added."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = [list(v) if isinstance(v, tuple) else v for v in value]  # Relation -> [s, p, o]
        out.update(
            n_attributes=self.n_attributes, n_attributes_wrong=self.n_attributes_wrong,
            chair_s=int(self.n_hallucinated_mentions > 0),
            chair_i=_rate(self.n_hallucinated_mentions, self.n_object_mentions),
            attr_chair_i=_rate(self.n_attributes_wrong, self.n_attributes),
            rel_chair_i=_rate(self.n_relations_wrong, self.n_relations_checked),
            recall=self.recall)
        return out


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _distinct(items: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def count_words(text: str) -> int:
    """Whitespace-separated tokens holding a letter or digit; lone punctuation is not a word.

    >>> count_words("a small red circle ."), count_words("A star."), count_words("")
    (4, 2, 0)
    """
    return len(_WORD.findall(text))


def score_caption(text: str, scene: Scene, config: WorldConfig) -> CaptionScore:
    """Object, attribute and relation hallucinations of one caption against its scene.

    >>> from plugins.world import Scene, SceneObject, WorldConfig
    >>> scene = Scene(seed=0, image_size=64, objects=(
    ...     SceneObject("circle", "red", "small", x=4, y=34, extent=14),
    ...     SceneObject("star", "blue", "large", x=40, y=30, extent=20)))
    >>> s = score_caption("a large red circle right of a star and a heart .", scene, WorldConfig())
    >>> s.hallucinated, s.n_size_wrong, s.wrong_relations, s.recall
    (('heart',), 1, (Relation(subject='circle', predicate='right of', object='star'),), 1.0)
    """
    if not isinstance(text, str):
        raise TypeError(f"caption is a {type(text).__name__}, expected a string")
    if not isinstance(scene, Scene):
        raise TypeError(f"scene is a {type(scene).__name__}, expected plugins.world.Scene (Scene.from_dict reads a dict)")
    parsed = parse_caption(text, config)
    present = {o.category: o for o in scene.objects}
    holding = set(scene.relations(config.relation_margin))

    categories = [m.category for m in parsed.objects]
    n_color = n_color_wrong = n_size = n_size_wrong = 0
    wrong_attributes: list[WrongAttribute] = []
    for mention in parsed.objects:
        obj = present.get(mention.category)
        if obj is None:
            continue  # an object hallucination; its attributes are not scored
        if mention.color is not None:
            n_color += 1
            if mention.color != obj.color:
                n_color_wrong += 1
                wrong_attributes.append(WrongAttribute(obj.category, "color", mention.color, obj.color))
        if mention.size is not None:
            n_size += 1
            if mention.size != obj.size:
                n_size_wrong += 1
                wrong_attributes.append(WrongAttribute(obj.category, "size", mention.size, obj.size))

    checked = [r for r in parsed.relations if r.subject in present and r.object in present]
    unchecked = tuple(r for r in parsed.relations if not (r.subject in present and r.object in present))
    wrong_relations = tuple(r for r in checked if r not in holding)
    mentioned = _distinct(categories)
    return CaptionScore(
        mentioned=mentioned,
        hallucinated=tuple(c for c in mentioned if c not in present),
        n_object_mentions=len(categories),
        n_hallucinated_mentions=sum(c not in present for c in categories),
        n_color=n_color, n_color_wrong=n_color_wrong, n_size=n_size, n_size_wrong=n_size_wrong,
        wrong_attributes=tuple(wrong_attributes),
        n_relations=len(parsed.relations),
        n_relations_checked=len(checked),
        n_relations_wrong=len(wrong_relations),
        wrong_relations=wrong_relations,
        unchecked_relations=unchecked,
        n_scene_objects=len(scene.objects),
        n_covered=sum(c in present for c in mentioned),
        n_words=count_words(text),
    )


def _score_all(texts: Sequence[str], scenes: Sequence[Scene], config: WorldConfig) -> list[CaptionScore]:
    if isinstance(texts, str):
        raise TypeError("texts is a single string, expected one caption per scene (a list of strings)")
    texts, scenes = list(texts), list(scenes)
    if len(texts) != len(scenes):
        raise ValueError(f"{len(texts)} captions but {len(scenes)} scenes, expected one caption per scene")
    if not texts:
        raise ValueError("no captions, expected at least one")
    return [score_caption(t, s, config) for t, s in zip(texts, scenes)]


def caption_audit(texts: Sequence[str], scenes: Sequence[Scene], config: WorldConfig) -> list[dict[str, Any]]:
    """One JSON-ready dict per caption (its text, :meth:`CaptionScore.to_dict`), to see *which* words were wrong.

    >>> from plugins.world import Scene, SceneObject, WorldConfig
    >>> scene = Scene(seed=0, image_size=64, objects=(SceneObject("circle", "red", "small", x=4, y=34, extent=14),))
    >>> row = caption_audit(["a blue circle and a star ."], [scene], WorldConfig())[0]
    >>> row["hallucinated"], row["wrong_attributes"], row["chair_i"]
    (['star'], [{'category': 'circle', 'attribute': 'color', 'stated': 'blue', 'actual': 'red'}], 0.5)
    """
    return [{"caption": t, **s.to_dict()} for t, s in zip(texts, _score_all(texts, scenes, config))]


def chair_metrics(texts: Sequence[str], scenes: Sequence[Scene], config: WorldConfig) -> dict[str, float | int]:
    """CHAIR-style rates and counts over captions paired with their scenes by position.

    Rates (fractions in [0, 1], 0.0 on an empty denominator, see the module docstring):
    ``chair_s``, ``chair_i``, ``attr_chair_s``, ``attr_chair_i``, ``color_chair_i``,
    ``size_chair_i``, ``rel_chair_s``, ``rel_chair_i``, ``recall``; ``mean_words``. Counts:
    ``n`` (captions), ``object_mentions``, ``hallucinated_mentions``, ``attribute_mentions``,
    ``attribute_wrong``, ``relations_checked``, ``relations_wrong``, ``relations_unchecked``.
    """
    scores = _score_all(texts, scenes, config)
    n = len(scores)
    mentions = sum(s.n_object_mentions for s in scores)
    hallucinated = sum(s.n_hallucinated_mentions for s in scores)
    attributes = sum(s.n_attributes for s in scores)
    attributes_wrong = sum(s.n_attributes_wrong for s in scores)
    checked = sum(s.n_relations_checked for s in scores)
    relations_wrong = sum(s.n_relations_wrong for s in scores)
    return {
        "chair_s": sum(s.n_hallucinated_mentions > 0 for s in scores) / n,
        "chair_i": _rate(hallucinated, mentions),
        "attr_chair_s": sum(s.n_attributes_wrong > 0 for s in scores) / n,
        "attr_chair_i": _rate(attributes_wrong, attributes),
        "color_chair_i": _rate(sum(s.n_color_wrong for s in scores), sum(s.n_color for s in scores)),
        "size_chair_i": _rate(sum(s.n_size_wrong for s in scores), sum(s.n_size for s in scores)),
        "rel_chair_s": sum(s.n_relations_wrong > 0 for s in scores) / n,
        "rel_chair_i": _rate(relations_wrong, checked),
        "recall": _rate(sum(s.n_covered for s in scores), sum(s.n_scene_objects for s in scores)),
        "mean_words": sum(s.n_words for s in scores) / n,
        "n": n,
        "object_mentions": mentions,
        "hallucinated_mentions": hallucinated,
        "attribute_mentions": attributes,
        "attribute_wrong": attributes_wrong,
        "relations_checked": checked,
        "relations_wrong": relations_wrong,
        "relations_unchecked": sum(len(s.unchecked_relations) for s in scores),
    }
