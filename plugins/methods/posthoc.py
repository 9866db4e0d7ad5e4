"""Reading and rewriting answers in the synthetic world's closed grammar, for post-decoding methods.

Woodpecker and LogicCheckGPT both end with a text-only LLM (GPT-3.5) that extracts the objects an
answer mentions and rewrites the answer so that it agrees with the evidence. In the scene world the
language is closed (:mod:`plugins.world.text`), so both steps are exact rules instead:

* :func:`parse_question` reads which template a question follows — object existence
  (``is there a star in the image ?``), colour (``is the star red ?``), spatial relation
  (``is the circle left of the square ?``) or the caption prompt — and what it asks about;
* :func:`asserted_objects` lists the objects an answer claims to see (the key concepts);
* :func:`rewrite_caption` removes mentions, repeats and wrong attributes from a caption and fixes
  or neutralises the words that relate neighbouring mentions;
* :func:`world_items` tells which items of a batch are world items at all; a method passes the
  others through unchanged and warns once, since neither stand-in knows anything outside the world;
* :class:`WorldPostprocess` is the base of such methods: a ``world`` config field, the
  :class:`WorldConfig` it names, and a fingerprint that also covers the world's code.

Revised yes/no answers are the world's own answer words, ``"yes"`` or ``"no"``.

>>> from plugins.world import WorldConfig
>>> world = WorldConfig()
>>> parse_question("is the star red ?", world)
Probe(kind='attribute', target=('star', 'red'))
>>> rewrite_caption("a small red circle left of a yellow star above a blue ring .", world, drop={"star"})
'a small red circle and a blue ring .'
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Collection, Mapping, Optional, Sequence

from pydantic import field_validator

from plugins.benchmarks.pope import parse_pope_answer
from plugins.methods.base import Method, MethodConfig
from plugins.world import CAPTION_PROMPT, OPPOSITE, WorldConfig, build_world, holding_predicates, parse_caption

__all__ = ["Probe", "parse_question", "answer_polarity", "asserted_objects", "rewrite_caption", "world_items",
           "build_world", "holding_predicates", "relation_verdict", "WorldPostprocess", "WorldMethodConfig", "YES", "NO"]

YES, NO = "yes", "no"
_TOKEN = re.compile(r"[a-z]+|[.?!,;]")  # the tokenisation parse_caption uses, so spans line up with its reading
_CONNECTORS = frozenset({"left", "right", "of", "above", "below", "and", ".", "?", "!", ",", ";"})
_RELATION_WORDS = frozenset({"left", "right", "above", "below"})


@dataclass(frozen=True)
class Probe:
    """What a question asks, by the world's templates."""

    kind: str  # "object" | "attribute" | "relation" (yes/no questions), "caption", or "free" (anything else)
    target: tuple[str, ...] = ()  # (category,) | (category, colour) | (subject, predicate, object) | ()

    @property
    def yes_no(self) -> bool:
        """Is this one of the yes/no templates?"""
        return self.kind in ("object", "attribute", "relation")

    @property
    def objects(self) -> tuple[str, ...]:
        """The categories the question names."""
        if self.kind == "relation":
            return (self.target[0], self.target[2])
        return self.target[:1]


def parse_question(question: str, world: WorldConfig) -> Probe:
    """The template ``question`` follows and its slots; case and spacing before punctuation are forgiven.

    >>> w = WorldConfig()
    >>> parse_question("Is there a star in the image?", w), parse_question("is the ring right of the bar ?", w)
    (Probe(kind='object', target=('star',)), Probe(kind='relation', target=('ring', 'right of', 'bar')))
    >>> parse_question("describe the image .", w).kind, parse_question("what is this ?", w).kind
    ('caption', 'free')
    """
    words = _TOKEN.findall(question.lower())
    text = " ".join(words)
    cats, colors = set(world.categories), set(world.colors)
    if text == CAPTION_PROMPT:
        return Probe("caption")
    match = re.fullmatch(r"is there an? (\w+) in the image \?", text)
    if match and match[1] in cats:
        return Probe("object", (match[1],))
    match = re.fullmatch(r"is the (\w+) (\w+) \?", text)
    if match and match[1] in cats and match[2] in colors:
        return Probe("attribute", (match[1], match[2]))
    match = re.fullmatch(r"is the (\w+) (left of|right of|above|below) the (\w+) \?", text)
    if match and match[1] in cats and match[3] in cats:
        return Probe("relation", (match[1], match[2], match[3]))
    return Probe("free")


def answer_polarity(answer: str) -> str:
    """``"yes"`` or ``"no"`` by the pinned POPE parser, so a revision is judged the way it is scored."""
    return parse_pope_answer(answer)


def asserted_objects(probe: Probe, answer: str, world: WorldConfig) -> tuple[str, ...]:
    """The categories ``answer`` claims are in the image, distinct and in order.

    A yes to a yes/no question asserts the objects the question names; a no asserts nothing. Any
    other answer is read as a caption.

    >>> w = WorldConfig()
    >>> asserted_objects(Probe("object", ("star",)), "yes", w), asserted_objects(Probe("object", ("star",)), "no", w)
    (('star',), ())
    >>> asserted_objects(Probe("caption"), "a red star left of a ring and a star .", w)
    ('star', 'ring')
    """
    if probe.yes_no:
        return probe.objects if answer_polarity(answer) == YES else ()
    return tuple(dict.fromkeys(m.category for m in parse_caption(answer, world).objects))


def _predicate(connector: Sequence[str]) -> Optional[str]:
    """The relation a connector states (``["left", "of", "a"]`` → ``"left of"``), as parse_caption reads it."""
    predicate = None
    for i, word in enumerate(connector):
        if word in ("left", "right") and connector[i + 1:i + 2] == ["of"]:
            predicate = f"{word} of"
        elif word in ("above", "below"):
            predicate = word
        elif word in (".", "?", "!", ";"):
            predicate = None  # a sentence boundary breaks a relation, as in parse_caption
    return predicate


def rewrite_caption(text: str, world: WorldConfig, *, drop: Collection[str] = (), colors: Mapping[str, str] = {},
                    sizes: Mapping[str, str] = {}, once: Collection[str] = (),
                    relation: Optional[Callable[[str, str, str], Optional[str]]] = None) -> str:
    """``text`` with the given edits; returned unchanged (byte for byte) when no edit applies.

    The caption is cut into one segment per mention: the words since the previous category word
    (a connector such as ``left of``, then article, size and colour) up to and including the
    category word; what follows the last mention is the tail. Edits:

    * ``drop`` — categories whose every mention is removed (hallucinated objects);
    * ``once`` — categories whose later mentions are removed (the world has at most one object per
      category, so a repeat is a counting error);
    * ``colors`` / ``sizes`` — category → the word that replaces a *stated* colour / size word
      (nothing is added where the caption stated none);
    * ``relation(subject, predicate, object)`` — for two kept mentions that were neighbours, the
      words to put instead of a stated predicate (``"and"`` to claim nothing), or ``None`` to keep it.

    When a removal makes two mentions neighbours that were not, a relation word between them
    would claim a relation nobody stated, so their connector becomes ``and``. The first kept mention
    loses its connector. Edited captions come back lower-case, one space between tokens.

    >>> w = WorldConfig()
    >>> rewrite_caption("a large red star left of a small red star .", w, once={"star"}, colors={"star": "yellow"})
    'a large yellow star .'
    >>> rewrite_caption("a red circle left of a star .", w, relation=lambda s, p, o: "right of")
    'a red circle right of a star .'
    >>> rewrite_caption("A red circle.", w, drop={"heart"})
    'A red circle.'
    """
    tokens = _TOKEN.findall(text.lower())
    cats, color_words, size_words = set(world.categories), set(world.colors), set(world.sizes)
    segments: list[tuple[list[str], list[str], str]] = []  # (connector, phrase, category) per mention
    start = 0
    for i, token in enumerate(tokens):
        if token in cats:
            words = tokens[start:i]
            cut = 0
            while cut < len(words) and words[cut] in _CONNECTORS:
                cut += 1
            segments.append((words[:cut], words[cut:], token))
            start = i + 1
    tail = tokens[start:]

    out: list[str] = []
    changed = False
    seen: set[str] = set()
    previous_kept: Optional[int] = None  # index of the last kept segment
    for index, (connector, phrase, category) in enumerate(segments):
        if category in drop or (category in once and category in seen):
            changed = True
            continue
        seen.add(category)
        new_phrase = [colors.get(category, w) if w in color_words else sizes.get(category, w) if w in size_words
                      else w for w in phrase]
        changed |= new_phrase != phrase
        if previous_kept is None:
            if index > 0:  # the mentions before it went; a caption does not start with "left of"
                changed |= bool(connector)
                connector = []
        elif previous_kept != index - 1:
            if _RELATION_WORDS.intersection(connector):
                connector, changed = ["and"], True
        elif relation is not None:
            stated = _predicate(connector)
            if stated is not None:
                fixed = relation(segments[previous_kept][2], stated, category)
                if fixed is not None and fixed != stated:
                    connector, changed = fixed.split(), True
        out += connector + new_phrase + [category]
        previous_kept = index
    if not changed:
        return text
    if previous_kept is None:  # every mention went: keep only the closing punctuation
        tail = [w for w in tail if w in (".", "?", "!")][:1]
    return " ".join(out + tail)


def relation_verdict(predicate: str, holding: Sequence[str]) -> Optional[str]:
    """``"yes"`` if ``predicate`` holds, ``"no"`` if its opposite does, else ``None`` (too close to call)."""
    if predicate in holding:
        return YES
    if OPPOSITE[predicate] in holding:
        return NO
    return None


def world_items(batch: Any, world: WorldConfig, method: str) -> list[bool]:
    """Per item: does it hold a world image (``image_size`` square RGB)? Warns once per call about the rest.

    The stand-ins of these methods (a detector trained on world scenes, object extraction over the
    world's vocabulary) know nothing else, so other items are passed through unchanged — not
    silently: a ``RuntimeWarning`` names the method and how many items it did not correct.
    """
    size = world.image_size
    flags = [image is not None and image.shape[:2] == (size, size) for image in batch.images]
    if not all(flags):
        warnings.warn(f"{method}: {flags.count(False)} of {len(flags)} items are not {size} px images of the synthetic "
                      f"world; their answers pass through uncorrected (its stand-in models only know the world)",
                      RuntimeWarning, stacklevel=3)
    return flags


class WorldMethodConfig(MethodConfig):
    """Hyper-parameters every world post-decoding method has."""

    world: Optional[dict[str, Any]] = None  # WorldConfig fields of the world its stand-ins know (default world)

    @field_validator("world")
    @classmethod
    def _world(cls, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        build_world(value)  # fails here, with the world's own message, rather than at the first batch
        return value


class WorldPostprocess(Method):
    """Base of the post-decoding methods whose stand-ins know only the synthetic world (not registered itself).

    Sets :attr:`world` from the config. The fingerprint adds the source of the world's modules:
    the rules parse and rewrite its grammar and a detector learns from its renderer, so a change
    there must mark results stale too (this module is covered already, as a base class's).
    """

    Config: ClassVar[type[MethodConfig]] = WorldMethodConfig
    shares_prompt_prefixes: ClassVar[bool] = True  # they only rewrite decoded text

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.world = build_world(self.config.world)

