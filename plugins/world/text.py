"""Text ground truth: captions, noisy captions, yes/no questions with exact answers, vocabulary.

Everything is closed-vocabulary, lower-case, with punctuation as separate tokens, so
``text.split()`` is the tokenizer and :func:`vocabulary` lists every word that can occur.

Captions list the objects left to right; between neighbours comes the relation that holds
(``left of``, else ``above`` / ``below``, else ``and`` when the pair is ambiguous)::

    a small red circle left of a large yellow star above a small blue ring .

Questions follow POPE ("is there a star in the image ?") for objects and the same yes/no form
for attributes ("is the star red ?") and relations ("is the circle left of the square ?").
Negatives for object questions are chosen like POPE's: *random* absent categories, *popular*
ones (most frequent in the world's statistics) or *adversarial* ones (most often seen together
with the categories that are present). The share of "yes" answers follows ``yes_ratio``.

>>> from plugins.world import SceneSampler, WorldConfig, caption, vocabulary
>>> cfg = WorldConfig()
>>> text = caption(SceneSampler(cfg).sample_split("demo", 0), cfg)
>>> set(text.split()) <= set(vocabulary(cfg)) and text.endswith(" .")
True
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from plugins.world.config import COUNT_WORDS, GRAMMAR_WORDS, INSTRUCTION_WORDS, NUMBER_WORDS, WorldConfig
from plugins.world.scene import (
    ATTRIBUTE_STREAM, CAPTION_STREAM, COUNT_STREAM, EXISTENCE_STREAM, OPPOSITE, RELATION_STREAM, SIZE_STREAM,
    Relation, Scene, SceneObject, SceneSampler, spatial_relations, stream_rng,
)

YES, NO = "yes", "no"
STRATEGIES: tuple[str, ...] = ("random", "popular", "adversarial")
"""How negatives are chosen, as in POPE."""
CAPTION_PROMPT = "describe the image ."
"""The instruction paired with captions; its words are in :func:`vocabulary`."""

INSTRUCTION_SUFFIXES: dict[str, str] = {
    "lmms-eval": "Answer the question using a single word or phrase.",  # lmms-eval's POPE post_prompt; LLaVA-1.5's short-answer prompt
    "vcd": "Please answer this question with one word.",  # VCD's (and ICD's) POPE prompt
    "yes-no": "Answer with yes or no.",  # a plain LLaVA-style yes/no instruction
}
"""Instructions the field appends to a yes/no question, by short name, exactly as their code writes them.

Their words are in :func:`vocabulary`, and training appends one at random (or none) to questions,
so a protocol's prompt suffix changes the answer a little, not the tokenizer's input to ``<unk>``.
:func:`instruction_text` gives the world's spelling (lower case, punctuation apart).
"""


def instruction_text(text: str) -> str:
    """``text`` as the world writes it: lower case, punctuation as separate tokens.

    >>> instruction_text(INSTRUCTION_SUFFIXES["vcd"])
    'please answer this question with one word .'
    """
    return " ".join(re.findall(r"[a-z]+|[.?!,;:]", text.lower()))


# ---------------------------------------------------------------------- words


def tokenize(text: str) -> list[str]:
    """The world's tokenizer: words and punctuation are already separated by single spaces."""
    return text.split()


def vocabulary(config: WorldConfig, extra: Iterable[str] = ()) -> list[str]:
    """Every token a caption, question, prompt or answer can use, sorted; ``extra`` adds more.

    >>> vocab = vocabulary(WorldConfig())
    >>> vocab[:4], "star" in vocab, "phrase" in vocab, len(vocab)
    (['.', '?', 'a', 'above'], True, True, 58)
    """
    words = set(GRAMMAR_WORDS) | set(INSTRUCTION_WORDS) | set(config.categories) | set(config.colors) | set(config.sizes)
    words |= set(COUNT_WORDS) | set(count_words(config))
    for item in extra:
        words.update(tokenize(item))
    return sorted(words)


def count_words(config: WorldConfig) -> tuple[str, ...]:
    """The counts a counting question can name: one to ``max_objects + 1`` (a wrong count may exceed the truth).

    >>> count_words(WorldConfig())
    ('one', 'two', 'three', 'four', 'five', 'six')
    """
    return NUMBER_WORDS[:config.max_objects + 1]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def object_phrase(obj: SceneObject) -> str:
    """``"a small red circle"``: article, size, colour, category."""
    return f"{_article(obj.size)} {obj.size} {obj.color} {obj.category}"


def _left_to_right(objects: Iterable[SceneObject]) -> list[SceneObject]:
    # Ties on x are broken by y, then by name, so the order never depends on sampling order.
    return sorted(objects, key=lambda o: (o.center[0], o.center[1], o.category))


def _connector(a: SceneObject, b: SceneObject, margin: float) -> str:
    rels = spatial_relations(a, b, margin)
    for predicate in ("left of", "above", "below"):  # objects are sorted left to right: never "right of"
        if predicate in rels:
            return predicate
    return "and"


def _join(mentions: Sequence[tuple[SceneObject, bool]], margin: float) -> str:
    """Phrases joined by connectors; only two real neighbours get a relation, anything else "and"."""
    parts: list[str] = []
    for i, (obj, real) in enumerate(mentions):
        if i:
            prev, prev_real = mentions[i - 1]
            parts.append(_connector(prev, obj, margin) if real and prev_real else "and")
        parts.append(object_phrase(obj))
    return " ".join(parts) + " ."


# ---------------------------------------------------------------------- captions


def caption(scene: Scene, config: WorldConfig) -> str:
    """The canonical, fully correct caption of ``scene``.

    >>> from plugins.world import Scene, SceneObject
    >>> s = Scene(seed=0, image_size=64, objects=(
    ...     SceneObject("star", "blue", "large", x=40, y=30, extent=20),
    ...     SceneObject("circle", "red", "small", x=4, y=34, extent=14)))
    >>> caption(s, WorldConfig())
    'a small red circle left of a large blue star .'
    """
    return _join([(o, True) for o in _left_to_right(scene.objects)], config.relation_margin)


@dataclass(frozen=True)
class NoisyCaption:
    """A training caption with its injected errors recorded (data imperfection, on purpose)."""

    text: str  # the caption as a model would see it
    inserted: tuple[str, ...]  # categories mentioned but absent from the scene (0 or 1)
    dropped: tuple[str, ...]  # categories present but left out (0 or 1)


def noisy_caption(scene: Scene, config: WorldConfig, *, rng: Optional[np.random.Generator] = None,
                  sampler: Optional[SceneSampler] = None) -> NoisyCaption:
    """A caption that, with ``caption_drop_prob``, leaves out one present object and, with
    ``caption_insert_prob``, mentions one absent object (joined by "and", never by a relation).

    The absent object is the one the world's own statistics suggest next (co-occurrence groups,
    then popularity; its colour from the attribute prior), which is how real captions go wrong.
    A one-object scene never loses its only object. Draws come from the scene's caption stream
    unless ``rng`` is given; pass ``sampler`` to skip rebuilding one per call.

    >>> from plugins.world import SceneSampler
    >>> cfg = WorldConfig(caption_insert_prob=1.0, caption_drop_prob=0.0)
    >>> scene = SceneSampler(cfg).sample_split("train", 0)
    >>> noisy = noisy_caption(scene, cfg)
    >>> len(noisy.inserted), noisy.inserted[0] in scene.categories, noisy.inserted[0] in noisy.text
    (1, False, True)
    """
    rng = rng if rng is not None else stream_rng(scene.seed, CAPTION_STREAM)
    sampler = sampler if sampler is not None else SceneSampler(config)
    mentions = [(o, True) for o in _left_to_right(scene.objects)]
    dropped: tuple[str, ...] = ()
    inserted: tuple[str, ...] = ()
    if len(mentions) >= 2 and rng.random() < config.caption_drop_prob:
        gone = mentions.pop(int(rng.integers(len(mentions))))
        dropped = (gone[0].category,)
    if len(scene.objects) < len(sampler.categories) and rng.random() < config.caption_insert_prob:
        present = [sampler.categories.index(c) for c in scene.categories]
        cat = sampler.next_category(present, rng)
        color = sampler.colors[int(rng.choice(len(sampler.colors), p=sampler.color_probs[cat]))]
        size = sampler.sizes[int(rng.integers(len(sampler.sizes)))]
        # A phantom has no position: it is only ever joined by "and" (see _join).
        phantom = SceneObject(sampler.categories[cat], color, size, x=0, y=0, extent=config.sizes[size])
        mentions.insert(int(rng.integers(len(mentions) + 1)), (phantom, False))
        inserted = (phantom.category,)
    return NoisyCaption(_join(mentions, config.relation_margin), inserted, dropped)


@dataclass(frozen=True)
class MentionedObject:
    """An object named in a caption; size or colour is None when the caption leaves it out."""

    category: str  # a category word of the config
    color: Optional[str]  # the colour word before it, if any
    size: Optional[str]  # the size word before it, if any


@dataclass(frozen=True)
class ParsedCaption:
    """What :func:`parse_caption` read from a caption."""

    objects: tuple[MentionedObject, ...]  # in caption order
    relations: tuple[Relation, ...]  # relations stated between neighbouring mentions


def parse_caption(text: str, config: WorldConfig) -> ParsedCaption:
    """The objects and relations a caption states; tolerant of free-form model output.

    A category word closes a mention, taking the last size and colour words seen since the
    previous mention; a relation word between two mentions relates them; anything outside the
    vocabulary is ignored. The inverse of :func:`caption`, and what CHAIR-style scoring needs.

    >>> parse_caption("A small red circle left of a blue star.", WorldConfig()).relations
    (Relation(subject='circle', predicate='left of', object='star'),)
    """
    cats, colors, sizes = set(config.categories), set(config.colors), set(config.sizes)
    # Not tokenize(): free-form output may glue punctuation to words ("star.").
    tokens = re.findall(r"[a-z]+|[.?!,;]", text.lower())
    objects: list[MentionedObject] = []
    relations: list[Relation] = []
    size = color = predicate = None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        pair = " ".join(tokens[i:i + 2])
        if pair in ("left of", "right of"):
            predicate, i = pair, i + 2
            continue
        if tok in ("above", "below"):
            predicate = tok
        elif tok in sizes:
            size = tok
        elif tok in colors:
            color = tok
        elif tok in cats:
            if predicate and objects:
                relations.append(Relation(objects[-1].category, predicate, tok))
            objects.append(MentionedObject(tok, color, size))
            size = color = predicate = None
        elif tok in (".", "?", "!", ";"):
            predicate = None  # a sentence boundary breaks a relation
        i += 1
    return ParsedCaption(tuple(objects), tuple(relations))


# ---------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class WorldStats:
    """Counts over a set of scenes: what "popular" and "adversarial" negatives rank by.

    POPE ranks by the annotations of the data the model saw, so build this from the train split
    (:meth:`estimate`) and use it to make test questions.

    >>> stats = WorldStats.estimate(WorldConfig(), n=200)
    >>> stats.n_scenes, len(stats.popular_ranking())
    (200, 12)
    """

    n_scenes: int  # how many scenes were counted
    categories: tuple[str, ...]  # config order, for tie-breaking
    category_counts: dict[str, int]  # scenes containing the category
    pair_counts: dict[str, dict[str, int]]  # pair_counts[a][b]: scenes containing both (symmetric, no diagonal)
    color_counts: dict[str, dict[str, int]]  # color_counts[category][colour]: objects of that category in that colour
    size_counts: dict[str, dict[str, int]] = None  # type: ignore[assignment]  # size_counts[category][size]; None for stats made before sizes were counted

    @classmethod
    def from_scenes(cls, scenes: Iterable[Scene], config: WorldConfig) -> "WorldStats":
        cats = tuple(config.categories)
        n = 0
        single: Counter[str] = Counter()
        pairs: Counter[tuple[str, str]] = Counter()
        colors: Counter[tuple[str, str]] = Counter()
        sizes: Counter[tuple[str, str]] = Counter()
        for scene in scenes:
            n += 1
            present = scene.categories
            single.update(present)
            pairs.update((a, b) for a in present for b in present if a != b)
            colors.update((o.category, o.color) for o in scene.objects)
            sizes.update((o.category, o.size) for o in scene.objects)
        return cls(
            n_scenes=n,
            categories=cats,
            category_counts={c: single[c] for c in cats},
            pair_counts={a: {b: pairs[a, b] for b in cats if b != a} for a in cats},
            color_counts={c: {k: colors[c, k] for k in sorted(config.colors)} for c in cats},
            size_counts={c: {k: sizes[c, k] for k in sorted(config.sizes)} for c in cats},
        )

    @classmethod
    def estimate(cls, config: WorldConfig, n: int = 2000, split: str = "train") -> "WorldStats":
        """Counts over scenes ``0 .. n-1`` of ``split`` (default: the training data)."""
        return cls.from_scenes(SceneSampler(config).scenes(split, n), config)

    def popular_ranking(self) -> tuple[str, ...]:
        """Categories from most to least frequent (ties: config order)."""
        order = {c: i for i, c in enumerate(self.categories)}
        return tuple(sorted(self.categories, key=lambda c: (-self.category_counts[c], order[c])))

    def cooccurrence_score(self, category: str, present: Iterable[str]) -> int:
        """How often ``category`` was seen together with the ``present`` ones (summed)."""
        return sum(self.pair_counts[p].get(category, 0) for p in present if p != category)


# ---------------------------------------------------------------------- questions


@dataclass(frozen=True)
class Question:
    """A yes/no question about one scene with its exact answer."""

    text: str  # e.g. "is there a star in the image ?"
    answer: str  # "yes" or "no"
    kind: str  # survey level: "object", "attribute" or "relation"
    strategy: str  # how the negatives of this set were drawn: random | popular | adversarial
    target: tuple[str, ...]  # (category,) | (category, colour) | (subject, predicate, object)


def split_counts(n: int, yes_ratio: float, n_pos: int, n_neg: int) -> tuple[int, int]:
    """How many yes and no questions to ask: ``n`` at ``yes_ratio``, shrunk to what the scene offers.

    When a scene has too few positives (or negatives), the other side shrinks with it, so the
    ratio holds per scene wherever possible instead of drifting towards "no".

    >>> split_counts(6, 0.5, n_pos=5, n_neg=9), split_counts(6, 0.5, n_pos=2, n_neg=9)
    ((3, 3), (2, 2))
    """
    def half_up(x: float) -> int:  # round() is banker's rounding; counts should round 2.5 up
        return int(np.floor(x + 0.5))

    n_yes = half_up(n * yes_ratio)
    n_no = n - n_yes
    if n_yes > n_pos:
        n_yes = n_pos
        n_no = half_up(n_yes * (1 - yes_ratio) / yes_ratio)
    if n_no > n_neg:
        n_no = n_neg
        if yes_ratio < 1:
            n_yes = min(n_yes, half_up(n_no * yes_ratio / (1 - yes_ratio)))
    return n_yes, n_no


def _pick(items: Sequence, k: int, rng: np.random.Generator) -> list:
    if k <= 0:
        return []
    return [items[i] for i in sorted(rng.choice(len(items), size=k, replace=False).tolist())]


def _shuffled(questions: list[Question], rng: np.random.Generator) -> list[Question]:
    # Mixed order, so a model cannot learn "the first questions are the yes ones".
    return [questions[i] for i in rng.permutation(len(questions)).tolist()]


def _need_stats(strategy: str, stats: Optional[WorldStats], config: WorldConfig) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    if strategy != "random" and stats is None:
        raise ValueError(f"strategy {strategy!r} ranks by world statistics: pass stats=WorldStats.estimate(config)")
    if stats is not None and stats.categories != tuple(config.categories):
        raise ValueError(f"stats were counted for other categories ({', '.join(stats.categories)}) "
                         f"than this config has ({', '.join(config.categories)}); rebuild them from this config")


def existence_questions(scene: Scene, config: WorldConfig, *, strategy: str = "random", n: int = 6,
                        stats: Optional[WorldStats] = None, yes_ratio: Optional[float] = None,
                        rng: Optional[np.random.Generator] = None) -> list[Question]:
    """POPE-style object questions: present categories answer yes, absent ones no.

    Negatives: ``random`` absent categories; ``popular``, the absent categories ranked first by
    frequency in ``stats``; ``adversarial``, the absent ones ranked first by how often they were
    seen with the present categories (ties: frequency, then config order). Positives are drawn
    at random from the present categories. ``yes_ratio`` defaults to ``config.yes_ratio``.

    >>> from plugins.world import SceneSampler
    >>> cfg = WorldConfig()
    >>> scene = SceneSampler(cfg).sample_split("test", 0)
    >>> qs = existence_questions(scene, cfg, strategy="adversarial", stats=WorldStats.estimate(cfg, n=300))
    >>> all((q.answer == "yes") == (q.target[0] in scene.categories) for q in qs)
    True
    """
    _need_stats(strategy, stats, config)
    rng = rng if rng is not None else stream_rng(scene.seed, EXISTENCE_STREAM)
    ratio = config.yes_ratio if yes_ratio is None else yes_ratio
    present = list(scene.categories)
    absent = [c for c in config.categories if c not in present]
    n_yes, n_no = split_counts(n, ratio, len(present), len(absent))

    if strategy == "random":
        negatives = _pick(absent, n_no, rng)
    else:
        assert stats is not None
        order = {c: i for i, c in enumerate(config.categories)}

        def rank(c: str) -> tuple[int, ...]:
            # Deterministic top-k as in POPE; ties fall back to frequency, then config order.
            popular = (-stats.category_counts[c], order[c])
            return popular if strategy == "popular" else (-stats.cooccurrence_score(c, present), *popular)

        negatives = sorted(absent, key=rank)[:n_no]

    qs = [Question(f"is there {_article(c)} {c} in the image ?", YES, "object", strategy, (c,))
          for c in _pick(present, n_yes, rng)]
    qs += [Question(f"is there {_article(c)} {c} in the image ?", NO, "object", strategy, (c,)) for c in negatives]
    return _shuffled(qs, rng)


def attribute_questions(scene: Scene, config: WorldConfig, *, strategy: str = "random", n: int = 2,
                        stats: Optional[WorldStats] = None, yes_ratio: Optional[float] = None,
                        rng: Optional[np.random.Generator] = None) -> list[Question]:
    """Colour questions about present objects ("is the star red ?"); at most one yes and one no per object.

    The wrong colour of a "no" question: ``random``, any other colour; ``popular``, the colour
    most frequent overall in ``stats``; ``adversarial``, the colour most frequent *for this
    category* in ``stats`` — for a blue star that is "yellow", the attribute prior: a
    knowledge-conflict probe.

    >>> from plugins.world import SceneSampler
    >>> cfg = WorldConfig()
    >>> scene = SceneSampler(cfg).sample_split("test", 1)
    >>> all((q.answer == "yes") == (scene.get(q.target[0]).color == q.target[1])
    ...     for q in attribute_questions(scene, cfg, n=4))
    True
    """
    _need_stats(strategy, stats, config)
    rng = rng if rng is not None else stream_rng(scene.seed, ATTRIBUTE_STREAM)
    return _value_questions(scene, config, sorted(config.colors), lambda o: o.color,
                            stats.color_counts if stats is not None else None, strategy, n, yes_ratio, rng)


def relation_questions(scene: Scene, config: WorldConfig, *, n: int = 2, yes_ratio: Optional[float] = None,
                       rng: Optional[np.random.Generator] = None) -> list[Question]:
    """Spatial questions ("is the circle left of the square ?") about unambiguous pairs only.

    A "yes" asks a relation that holds; a "no" asks the opposite of one that holds (the circle
    is clearly right of the square), so no answer depends on a pair within ``relation_margin``.

    >>> from plugins.world import Scene, SceneObject
    >>> s = Scene(seed=0, image_size=64, objects=(
    ...     SceneObject("circle", "red", "small", x=4, y=25, extent=14),
    ...     SceneObject("square", "blue", "large", x=40, y=22, extent=20)))
    >>> sorted((q.text, q.answer) for q in relation_questions(s, WorldConfig(), n=2))
    [('is the circle left of the square ?', 'yes'), ('is the circle right of the square ?', 'no')]
    """
    rng = rng if rng is not None else stream_rng(scene.seed, RELATION_STREAM)
    ratio = config.yes_ratio if yes_ratio is None else yes_ratio
    true = list(scene.relations(config.relation_margin))
    false = [Relation(r.subject, OPPOSITE[r.predicate], r.object) for r in true]
    n_yes, n_no = split_counts(n, ratio, len(true), len(false))
    qs = [Question(f"is the {r.subject} {r.predicate} the {r.object} ?", answer, "relation", "random", tuple(r))
          for answer, pool, k in ((YES, true, n_yes), (NO, false, n_no)) for r in _pick(pool, k, rng)]
    return _shuffled(qs, rng)


def size_questions(scene: Scene, config: WorldConfig, *, strategy: str = "random", n: int = 2,
                   stats: Optional[WorldStats] = None, yes_ratio: Optional[float] = None,
                   rng: Optional[np.random.Generator] = None) -> list[Question]:
    """Size questions about present objects ("is the star small ?"); the second attribute the world has.

    Like :func:`attribute_questions` (at most one yes and one no per object, kind ``"attribute"``),
    the wrong size of a "no" question: ``random``, any other size; ``popular``, the size most
    frequent overall in ``stats``; ``adversarial``, the size most frequent for this category.
    Draws come from the scene's own size stream, so adding size questions changes no colour question.

    >>> from plugins.world import Scene, SceneObject
    >>> s = Scene(seed=0, image_size=64, objects=(SceneObject("star", "blue", "tiny", x=4, y=4, extent=10),))
    >>> [(q.text, q.answer) for q in size_questions(s, WorldConfig(), n=1)]
    [('is the star tiny ?', 'yes')]
    """
    _need_stats(strategy, stats, config)
    rng = rng if rng is not None else stream_rng(scene.seed, SIZE_STREAM)
    return _value_questions(scene, config, sorted(config.sizes), lambda o: o.size,
                            stats.size_counts if stats is not None else None, strategy, n, yes_ratio, rng)


def _value_questions(scene: Scene, config: WorldConfig, values: Sequence[str], value_of: Callable[[SceneObject], str],
                     table: Optional[dict[str, dict[str, int]]], strategy: str, n: int, yes_ratio: Optional[float],
                     rng: np.random.Generator) -> list[Question]:
    """Attribute questions ("is the star red ?"): at most one yes and one no per object, the wrong value by ``strategy``.

    ``values`` are the attribute's names, ``value_of`` reads an object's, ``table`` counts them per
    category (``WorldStats.color_counts`` or ``size_counts``): ``popular`` names the value most
    frequent overall, ``adversarial`` the one most frequent for the object's category.
    """
    ratio = config.yes_ratio if yes_ratio is None else yes_ratio
    objects = list(scene.objects)
    n_yes, n_no = split_counts(n, ratio, len(objects), len(objects) if len(values) > 1 else 0)

    def wrong(obj: SceneObject) -> str:
        others = [v for v in values if v != value_of(obj)]
        if strategy == "random":
            return others[int(rng.integers(len(others)))]
        assert table is not None
        if strategy == "popular":
            counts = {v: sum(table[k][v] for k in table) for v in others}
        else:
            counts = {v: table[obj.category][v] for v in others}
        return min(others, key=lambda v: (-counts[v], v))

    qs = [Question(f"is the {o.category} {value_of(o)} ?", YES, "attribute", strategy, (o.category, value_of(o)))
          for o in _pick(objects, n_yes, rng)]
    for o in _pick(objects, n_no, rng):
        value = wrong(o)
        qs.append(Question(f"is the {o.category} {value} ?", NO, "attribute", strategy, (o.category, value)))
    return _shuffled(qs, rng)


def usual_color(category: str, config: WorldConfig) -> Optional[str]:
    """The colour ``category`` most likely has under ``config.attribute_priors`` (ties: the later name); ``None`` without a prior.

    >>> usual_color("star", WorldConfig()), usual_color("bar", WorldConfig())
    ('yellow', None)
    """
    prior = config.attribute_priors.get(category)
    return max(prior, key=lambda c: (prior[c], c)) if prior else None


def prior_color_questions(scene: Scene, config: WorldConfig) -> list[Question]:
    """Knowledge-conflict colour questions: for each object whose colour is *not* its shape's usual one, two questions.

    The usual colour is the most likely one under ``config.attribute_priors`` (the prior
    :func:`plugins.benchmarks.world.prior_consistent` reads). A star drawn blue, when stars are
    yellow nine times in ten, gets ``"is the star blue ?"`` (yes) and ``"is the star yellow ?"``
    (no): the second names what the language prior expects and the image contradicts. Objects of
    shapes without a prior, or drawn in their usual colour, get none. Kind ``"attribute"``,
    strategy ``"prior"``; in object order, the "yes" question first.

    >>> from plugins.world import Scene, SceneObject
    >>> s = Scene(seed=0, image_size=64, objects=(SceneObject("star", "blue", "small", x=4, y=4, extent=14),
    ...     SceneObject("heart", "red", "small", x=40, y=4, extent=14), SceneObject("bar", "red", "small", x=4, y=40, extent=14)))
    >>> [(q.text, q.answer) for q in prior_color_questions(s, WorldConfig())]
    [('is the star blue ?', 'yes'), ('is the star yellow ?', 'no')]
    """
    qs = []
    for o in scene.objects:
        usual = usual_color(o.category, config)
        if usual is not None and o.color != usual:
            qs += [Question(f"is the {o.category} {o.color} ?", YES, "attribute", "prior", (o.category, o.color)),
                   Question(f"is the {o.category} {usual} ?", NO, "attribute", "prior", (o.category, usual))]
    return qs


def count_questions(scene: Scene, config: WorldConfig, *, n: int = 2, yes_ratio: Optional[float] = None,
                    rng: Optional[np.random.Generator] = None) -> list[Question]:
    """Counting questions ("are there three objects in the image ?"): general question answering.

    Not a hallucination probe: a question the world can ask that is about none of the survey's
    three levels, to see whether a mitigation costs general ability (Re-Align claims gains there).
    A "yes" names the scene's number of objects (clutter marks are not objects); a "no" names one
    more or one fewer (never zero), so every "no" is a near miss. Kind ``"count"``; target the
    count named. At most one yes and one no per scene.

    >>> from plugins.world import Scene, SceneObject
    >>> s = Scene(seed=0, image_size=64, objects=(
    ...     SceneObject("circle", "red", "small", x=4, y=25, extent=14),
    ...     SceneObject("square", "blue", "large", x=40, y=22, extent=20)))
    >>> sorted((q.text, q.answer) for q in count_questions(s, WorldConfig(), n=2))[1]
    ('are there two objects in the image ?', 'yes')
    """
    rng = rng if rng is not None else stream_rng(scene.seed, COUNT_STREAM)
    ratio = config.yes_ratio if yes_ratio is None else yes_ratio
    words = count_words(config)
    k = len(scene.objects)
    if not 1 <= k < len(words):
        raise ValueError(f"a scene of {k} objects cannot be counted with max_objects={config.max_objects}")
    wrong = [c for c in (k - 1, k + 1) if 1 <= c <= len(words)]
    n_yes, n_no = split_counts(n, ratio, 1, 1)

    def ask(count: int, answer: str) -> Question:
        return Question(f"are there {words[count - 1]} objects in the image ?", answer, "count", "random",
                        (words[count - 1],))

    qs = [ask(k, YES) for _ in range(n_yes)]
    qs += [ask(wrong[int(rng.integers(len(wrong)))], NO) for _ in range(n_no)]
    return _shuffled(qs, rng)
