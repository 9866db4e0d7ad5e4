"""Preference pairs from the synthetic world: faithful versus hallucinated answers, and retrieved images.

**Where the data comes from.** The world draws every scene from a named, seeded stream
(:func:`plugins.world.scene_seed`): the tiny LLaVA learned from ``train``, the benchmarks ask
about ``test``, the steering methods read ``demo``. Tuning data comes from a stream of its own,
:data:`PREFERENCE_SPLIT` (``"tune"``): training-side data that no benchmark ever shows and that
the checkpoint was not trained on. Popular and adversarial negatives are ranked by statistics of
the ``train`` stream, as the world benchmarks rank theirs.

**HA-DPO-style text pairs** (:func:`build_preferences`). For each scene the model itself answers
the caption prompt and a few yes/no questions (object, attribute, relation; object negatives
drawn at random, from popular or from co-occurring categories, attribute negatives at random or
from the colour prior). Every answer is then checked against the scene's exact ground truth, as
HA-DPO has GPT-4 check and correct the model's own descriptions:

* a caption that states anything false (:func:`caption_errors`) becomes the *rejected* text,
  and the caption the model meant, made true, the *chosen* one (:func:`faithful_caption`: as many
  objects as it mentioned, absent ones and repeats replaced by real objects it left out, each
  described exactly, in the world's grammar, which is the model's), so the pair differs in what
  it states and not in style or length;
* a wrong yes/no answer is rejected, the right one chosen;
* where the model was right, the chosen text is the ground-truth answer and the rejected one the
  same answer with a hallucination injected (:func:`inject_hallucination`: one object turned into
  an absent one the world's co-occurrence prior suggests, or given a wrong colour the colour
  prior suggests; for a yes/no question, the opposite answer).

**Re-Align's visual preference** (:func:`nearest_different`, :func:`with_retrieval`). For every
image, the most similar *other* image of the set by cosine similarity of the model's own image
embedding (:func:`image_embeddings`: the projected image features, averaged over image tokens).
rDPO then compares the chosen answer given its own image with the same answer given the
retrieved one: the two sides differ in the image, not in the text.

**Re-Align's dual-preference data** (:func:`realign_pairs`). Re-Align makes its *rejected* answers
from the same retrieval: the content of the retrieved image is written into the faithful answer
(its paper's "image retrieval-based hallucination injection", done by an LLM rewrite there, by the
world's closed grammar here, :func:`inject_retrieved`). So the text preference and the visual
preference come from one retrieval. Chosen answers are the ground truth: the exact caption, and
yes/no answers about the scene; rejected captions carry an object, a colour or a relation of the
retrieved scene that this scene does not have; rejected yes/no answers say "yes" to a question
about the retrieved scene's content (:func:`retrieved_questions`), balanced by as many questions
about the scene's own content (chosen "yes", rejected "no").

Everything is deterministic given the world, the model, the number of scenes and ``seed``.

>>> from plugins.world import Scene, SceneObject, WorldConfig
>>> world = WorldConfig()
>>> scene = Scene(seed=1, image_size=64, objects=(
...     SceneObject("circle", "red", "small", x=4, y=25, extent=14),
...     SceneObject("star", "blue", "large", x=40, y=22, extent=20)))
>>> said = "a red circle right of a yellow star and a heart ."
>>> caption_errors(said, scene, world), faithful_caption(said, scene, world)
(3, 'a small red circle left of a large blue star .')
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from plugins.benchmarks.pope import parse_pope_answer
from plugins.world import (
    CAPTION_PROMPT, STRATEGIES, Question, Scene, SceneObject, SceneSampler, WorldConfig, WorldStats, attribute_questions, caption,
    existence_questions, object_phrase, parse_caption, relation_questions, size_questions, spatial_relations,
)

if TYPE_CHECKING:
    import torch

    from plugins.models.adapter import LlavaAdapter
    from plugins.models.data import WorldData

__all__ = ["PREFERENCE_SPLIT", "STATS_SCENES", "CAPTION_TOKENS", "ANSWER_TOKENS", "PreferencePair", "PreferenceData",
           "tuning_questions", "scene_rng", "caption_errors", "faithful_caption", "inject_hallucination",
           "opposite_answer", "build_preferences", "image_embeddings", "nearest_different", "with_retrieval",
           "inject_retrieved", "retrieved_questions", "realign_pairs", "PREFERENCE_DATA"]

PREFERENCE_DATA = ("ha-dpo", "re-align")
"""How rejected answers are made: from the model's own errors and prior-driven injection (HA-DPO), or by
injecting the content of a retrieved similar image (Re-Align's dual-preference data)."""

PREFERENCE_SPLIT = "tune"
"""The world's scene stream for tuning data: disjoint seeds from ``train``, ``test`` and ``demo``."""
STATS_SCENES = 2000
"""``train`` scenes counted to rank popular and adversarial negatives (the world benchmarks count as many)."""
CAPTION_TOKENS = 40
"""New tokens a caption may take (the world caption benchmark's limit; the longest exact caption is 30 words)."""
ANSWER_TOKENS = 8
"""New tokens a yes/no answer may take (the yes/no benchmarks' limit)."""
YES, NO = "yes", "no"


@dataclass(frozen=True)
class PreferencePair:
    """One preference: for image ``image`` and question ``prompt``, ``chosen`` is preferred to ``rejected``."""

    image: int  # index into PreferenceData.data.scenes / images
    prompt: str  # the bare question (the adapter adds the chat template)
    chosen: str  # the faithful answer
    rejected: str  # the hallucinated answer
    kind: str  # "caption", "object", "attribute" or "relation"
    source: str  # "model": the model's own wrong answer; "injected": the model was right, a hallucination was written in


@dataclass(frozen=True)
class PreferenceData:
    """Preference pairs over the scenes of one world stream, and (for rDPO) each image's retrieved neighbour."""

    data: "WorldData"  # scenes, rendered images (N, H, W, 3) uint8 and exact captions
    pairs: tuple[PreferencePair, ...]
    retrieved: Optional[tuple[int, ...]] = None  # per image: index of the most similar other image (with_retrieval)

    def summary(self) -> dict[str, int]:
        """Pair counts: total, per kind, and how many rejected answers were the model's own."""
        out = {"pairs": len(self.pairs), "scenes": len(self.data.scenes),
               "model_errors": sum(p.source == "model" for p in self.pairs)}
        for kind in ("caption", "object", "attribute", "relation"):
            mine = [p for p in self.pairs if p.kind == kind]
            out[f"{kind}_pairs"] = len(mine)
            out[f"{kind}_model_errors"] = sum(p.source == "model" for p in mine)
        return out


# ---------------------------------------------------------------- questions and ground truth

def tuning_questions(scene: Scene, index: int, world: WorldConfig, stats: WorldStats,
                     counts: tuple[int, int, int] = (2, 2, 2)) -> list[Question]:
    """Yes/no questions about scene ``index`` of the tuning stream: ``counts`` = (object, attribute, relation).

    Half yes, half no where the scene allows. Object negatives cycle through POPE's three
    strategies by scene index (random, popular, adversarial), attribute negatives through random
    and adversarial (the colour prior), so every kind of negative the benchmarks ask about is
    represented; the draws come from the scene's own seeded streams.
    """
    return balanced_questions(scene, world, stats, counts, object_strategy=STRATEGIES[index % len(STRATEGIES)],
                              attribute_strategy=("random", "adversarial")[index % 2])


def balanced_questions(scene: Scene, world: WorldConfig, stats: WorldStats, counts: tuple[int, int, int], *,
                       object_strategy: str, attribute_strategy: str) -> list[Question]:
    """``counts`` = (object, attribute, relation) yes/no questions about ``scene``, half yes where it allows,
    with the given negative-sampling strategies (object: POPE's; attribute: random or adversarial).

    The attribute count applies to each of the world's two attributes: that many colour and that many
    size questions (the benchmark's attribute splits ask both).
    """
    n_object, n_attribute, n_relation = counts
    questions: list[Question] = []
    if n_object:
        questions += existence_questions(scene, world, strategy=object_strategy, n=n_object, stats=stats, yes_ratio=0.5)
    if n_attribute:
        questions += attribute_questions(scene, world, strategy=attribute_strategy, n=n_attribute, stats=stats,
                                         yes_ratio=0.5)
        questions += size_questions(scene, world, strategy=attribute_strategy, n=n_attribute, stats=stats,
                                    yes_ratio=0.5)
    if n_relation:
        questions += relation_questions(scene, world, n=n_relation, yes_ratio=0.5)
    return questions


def caption_errors(text: str, scene: Scene, world: WorldConfig) -> int:
    """How many false statements a caption makes about ``scene``, read as CHAIR-style scoring reads it.

    Each mention of an absent object, each repeated mention (a category occurs at most once in a
    scene), each stated colour or size that is wrong, and each stated relation between two
    present objects that does not hold counts once.

    >>> from plugins.world import Scene, SceneObject, WorldConfig
    >>> scene = Scene(seed=1, image_size=64, objects=(
    ...     SceneObject("circle", "red", "small", x=4, y=25, extent=14),
    ...     SceneObject("star", "blue", "large", x=40, y=22, extent=20)))
    >>> caption_errors("a red circle right of a yellow star and a heart .", scene, WorldConfig())
    3
    """
    present = {o.category: o for o in scene.objects}
    parsed = parse_caption(text, world)
    errors, seen = 0, set()
    for m in parsed.objects:
        obj = present.get(m.category)
        if obj is None or m.category in seen:
            errors += 1
        else:
            errors += (m.color is not None and m.color != obj.color) + (m.size is not None and m.size != obj.size)
        seen.add(m.category)
    for r in parsed.relations:
        if r.subject in present and r.object in present and r.subject != r.object:
            errors += r.predicate not in spatial_relations(present[r.subject], present[r.object], world.relation_margin)
    return errors


def faithful_caption(text: str, scene: Scene, world: WorldConfig) -> str:
    """The caption the model meant, made true: as many objects as it mentioned, each one real.

    Each mention is kept if it names a present object not mentioned before; a mention of an
    absent object, or a repeat, is renamed to a present object the caption never mentions (left
    to right), or dropped when none is left. The kept objects are then described exactly as the
    world's captions describe them — true size and colour, left to right, with the relations that
    hold between neighbours (:func:`plugins.world.caption`), which is also the grammar the model
    writes in. So the corrected caption differs from the model's in what it states, not in style
    or (where the scene has objects to spare) in length: HA-DPO's "style-consistent" correction.
    Returns ``""`` when the caption mentions no object at all.

    >>> from plugins.world import Scene, SceneObject, WorldConfig
    >>> scene = Scene(seed=1, image_size=64, objects=(
    ...     SceneObject("circle", "red", "small", x=4, y=25, extent=14),
    ...     SceneObject("star", "blue", "large", x=40, y=22, extent=20)))
    >>> faithful_caption("a large red circle right of a large red circle .", scene, WorldConfig())
    'a small red circle left of a large blue star .'
    """
    present = {o.category: o for o in scene.objects}
    mentions = [m.category for m in parse_caption(text, world).objects]
    spare = [o.category for o in sorted(scene.objects, key=lambda o: (o.center[0], o.center[1], o.category))
             if o.category not in mentions]  # true objects the caption leaves out, left to right
    kept: list[str] = []
    for category in mentions:
        if category not in present or category in kept:
            if not spare:
                continue
            category = spare.pop(0)
        kept.append(category)
    if not kept:
        return ""
    return caption(replace(scene, objects=tuple(present[c] for c in kept)), world)


def opposite_answer(answer: str) -> str:
    """``"no"`` for an answer the POPE parser reads as yes, ``"yes"`` otherwise."""
    return NO if parse_pope_answer(answer) == YES else YES


def inject_hallucination(scene: Scene, world: WorldConfig, rng: np.random.Generator,
                         sampler: Optional[SceneSampler] = None) -> str:
    """The exact caption of ``scene`` with one hallucination written in, as a biased model would.

    One object, chosen at random, is misdescribed, and the caption keeps its length: with
    probability 1/2 (or always, when the scene already shows every category) its colour becomes
    another colour drawn from that category's colour prior (a knowledge-conflict error); otherwise
    it becomes an absent category, the one the world's co-occurrence statistics suggest next to
    what is present (the partner a prior-driven model expects), keeping its colour, size and place.

    >>> from plugins.world import Scene, SceneObject, WorldConfig
    >>> scene = Scene(seed=1, image_size=64, objects=(SceneObject("star", "blue", "large", x=40, y=22, extent=20),))
    >>> texts = {inject_hallucination(scene, WorldConfig(), np.random.default_rng(s)) for s in range(20)}
    >>> "a large blue star ." in texts, all(len(t.split()) == 5 for t in texts)
    (False, True)
    """
    sampler = sampler if sampler is not None else SceneSampler(world)
    k = int(rng.integers(len(scene.objects)))
    obj = scene.objects[k]
    if rng.random() < 0.5 or len(scene.objects) >= len(sampler.categories):
        others = [i for i, c in enumerate(sampler.colors) if c != obj.color]
        weights = sampler.color_probs[sampler.categories.index(obj.category), others] + 1e-9  # (C-1,)
        wrong = replace(obj, color=sampler.colors[others[int(rng.choice(len(others), p=weights / weights.sum()))]])
    else:
        present = [sampler.categories.index(c) for c in scene.categories]
        wrong = replace(obj, category=sampler.categories[sampler.next_category(present, rng)])
    return caption(replace(scene, objects=tuple(wrong if i == k else o for i, o in enumerate(scene.objects))), world)


def scene_rng(seed: int, scene: Scene) -> np.random.Generator:
    """The generator of the random choices made for ``scene`` under ``seed`` (injected hallucinations)."""
    return np.random.default_rng([int(seed), int(scene.seed)])


# ---------------------------------------------------------------- HA-DPO-style pairs from the model's own answers

def build_preferences(model: "LlavaAdapter", world: WorldConfig, n_scenes: int, *, seed: int = 0,
                      counts: tuple[int, int, int] = (2, 2, 2), captions: bool = True,
                      batch_size: int = 64) -> PreferenceData:
    """Pairs for scenes ``0 .. n_scenes-1`` of :data:`PREFERENCE_SPLIT`: a caption (if ``captions``) and ``sum(counts)`` questions each.

    The model answers greedily (captions up to :data:`CAPTION_TOKENS` new tokens, yes/no answers
    up to :data:`ANSWER_TOKENS`); see the module docstring for how each answer becomes a pair.
    """
    from plugins.models.batch import Batch
    from plugins.models.data import build_world_data

    if n_scenes < 1:
        raise ValueError(f"n_scenes is {n_scenes!r}, expected at least 1")
    data = build_world_data(world, n_scenes, PREFERENCE_SPLIT)
    stats = WorldStats.estimate(world, n=STATS_SCENES, split="train")
    sampler = SceneSampler(world)
    images = list(data.images)
    described = model.generate(Batch(images, [CAPTION_PROMPT] * n_scenes), max_new_tokens=CAPTION_TOKENS,
                               batch_size=batch_size) if captions else []
    asked = [(i, q) for i, scene in enumerate(data.scenes) for q in tuning_questions(scene, i, world, stats, counts)]
    answers = model.generate(Batch([images[i] for i, _ in asked], [q.text for _, q in asked]),
                             max_new_tokens=ANSWER_TOKENS, batch_size=batch_size) if asked else []
    by_scene: dict[int, list[tuple[Question, str]]] = {}
    for (i, q), answer in zip(asked, answers):
        by_scene.setdefault(i, []).append((q, answer))

    pairs: list[PreferencePair] = []
    for i, scene in enumerate(data.scenes):
        if captions:
            said = described[i]
            fixed = faithful_caption(said, scene, world)
            if fixed and caption_errors(said, scene, world):  # the caption stated something false: correct it
                pairs.append(PreferencePair(i, CAPTION_PROMPT, fixed, said, "caption", "model"))
            else:  # right (or said nothing checkable): the truth against the truth with a hallucination in it
                rng = scene_rng(seed, scene)
                pairs.append(PreferencePair(i, CAPTION_PROMPT, data.captions[i],
                                            inject_hallucination(scene, world, rng, sampler), "caption", "injected"))
        for q, answer in by_scene.get(i, []):
            if parse_pope_answer(answer) != q.answer:
                pairs.append(PreferencePair(i, q.text, q.answer, answer, q.kind, "model"))
            else:
                pairs.append(PreferencePair(i, q.text, q.answer, opposite_answer(q.answer), q.kind, "injected"))
    return PreferenceData(data, tuple(pairs))


# ---------------------------------------------------------------- Re-Align's retrieval

def image_embeddings(model: "LlavaAdapter", images: Sequence[np.ndarray], batch_size: int = 64) -> "torch.Tensor":
    """(N, D) float32 CPU: each image's projected image features (what the LM reads), averaged over image tokens."""
    import torch

    parts = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = list(images[start:start + batch_size])
            pixels = model.processor.image_processor(chunk, return_tensors="pt")["pixel_values"]
            out = model.model.model.get_image_features(pixel_values=pixels.to(model.device, model.dtype))
            feats = out.pooler_output if hasattr(out, "pooler_output") else out  # list of (P, D) per image
            parts.append(torch.stack([f.float().mean(0) for f in feats]).cpu())  # (b, D)
    return torch.cat(parts).clone()  # an ordinary tensor, outside inference mode


def nearest_different(embeddings: "torch.Tensor", images: Optional[Sequence[np.ndarray]] = None) -> "torch.Tensor":
    """Per row of ``embeddings`` (N, D), the index (N,) of the most cosine-similar *other* row.

    A row never retrieves itself, nor — when ``images`` is given — any image with the same pixels
    (a duplicate is not a different image). Ties go to the lowest index. Needs two distinct images.

    >>> import torch
    >>> nearest_different(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])).tolist()
    [1, 0, 1]
    """
    import torch
    import torch.nn.functional as F

    if embeddings.ndim != 2 or len(embeddings) < 2:
        raise ValueError(f"embeddings is {tuple(embeddings.shape)}, expected (N, D) with N >= 2")
    unit = F.normalize(embeddings.float(), dim=-1)  # (N, D)
    similarity = unit @ unit.t()  # (N, N)
    same = torch.eye(len(unit), dtype=torch.bool)  # (N, N)
    if images is not None:
        if len(images) != len(unit):
            raise ValueError(f"{len(images)} images for {len(unit)} embeddings, expected one image per row")
        digest = [hashlib.sha256(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images]
        same |= torch.tensor([[a == b for b in digest] for a in digest])
    similarity = similarity.masked_fill(same, float("-inf"))
    if torch.isinf(similarity).all(dim=1).any():
        raise ValueError("an image has no different image to retrieve (all images are identical)")
    return similarity.argmax(dim=1)  # the first maximum: ties go to the lowest index


def with_retrieval(prefs: PreferenceData, model: "LlavaAdapter", batch_size: int = 64) -> PreferenceData:
    """``prefs`` with :attr:`PreferenceData.retrieved` filled in from the model's image embeddings."""
    images = list(prefs.data.images)
    nearest = nearest_different(image_embeddings(model, images, batch_size), images)
    return replace(prefs, retrieved=tuple(int(j) for j in nearest))


# ---------------------------------------------------------------- Re-Align's rejected answers: the retrieved image's content

def inject_retrieved(scene: Scene, other: Scene, world: WorldConfig, rng: np.random.Generator) -> tuple[str, str]:
    """``(caption, how)``: the exact caption of ``scene`` with one fact of the retrieved ``other`` written in.

    In this order, as far as the two scenes allow: an object of ``other`` absent from ``scene``
    replaces one of ``scene``'s (keeping its colour, size and place: ``how`` = "object"); a
    category both show in different colours takes ``other``'s colour ("attribute"); two neighbours
    of the caption are joined by the relation ``other`` shows between the same two categories,
    where it is false here ("relation"). Scenes with nothing to borrow fall back to the co-occurrence prior
    (:func:`inject_hallucination`, "prior"). The caption keeps its length.

    >>> from plugins.world import Scene, SceneObject, WorldConfig
    >>> a = Scene(seed=1, image_size=64, objects=(SceneObject("star", "blue", "large", x=40, y=22, extent=20),))
    >>> b = Scene(seed=2, image_size=64, objects=(SceneObject("heart", "red", "small", x=4, y=4, extent=14),))
    >>> inject_retrieved(a, b, WorldConfig(), np.random.default_rng(0))
    ('a large blue heart .', 'object')
    """
    present = {o.category: o for o in scene.objects}
    borrowed = [o.category for o in other.objects if o.category not in present]
    if borrowed:
        k = int(rng.integers(len(scene.objects)))
        new = replace(scene.objects[k], category=borrowed[int(rng.integers(len(borrowed)))])
        return caption(replace(scene, objects=tuple(new if i == k else o for i, o in enumerate(scene.objects))),
                       world), "object"
    recoloured = [o for o in other.objects if o.category in present and present[o.category].color != o.color]
    if recoloured:
        pick = recoloured[int(rng.integers(len(recoloured)))]
        new = replace(present[pick.category], color=pick.color)
        return caption(replace(scene, objects=tuple(new if o.category == pick.category else o for o in scene.objects)),
                       world), "attribute"
    relation = _borrowed_connector(scene, other, world)
    if relation is not None:
        return relation, "relation"
    return inject_hallucination(scene, world, rng), "prior"


_CONNECTORS = ("left of", "above", "below")  # the world's caption connectors (objects are written left to right)


def _borrowed_connector(scene: Scene, other: Scene, world: WorldConfig) -> Optional[str]:
    """The caption of ``scene`` in which two neighbours are related as ``other`` relates the same two
    categories, where that is false here (the pair is written in ``other``'s order if needed); None when
    no pair of neighbours allows it."""
    margin = world.relation_margin
    ordered = sorted(scene.objects, key=lambda o: (o.center[0], o.center[1], o.category))
    there = {o.category: o for o in other.objects}

    def connector(a: SceneObject, b: SceneObject, where: dict) -> list[str]:
        return [c for c in _CONNECTORS if c in spatial_relations(where[a.category], where[b.category], margin)]

    here = {o.category: o for o in scene.objects}
    for k in range(len(ordered) - 1):
        a, b = ordered[k], ordered[k + 1]
        if a.category not in there or b.category not in there:
            continue
        for first, second in ((a, b), (b, a)):
            false_here = [c for c in connector(first, second, there) if c not in connector(first, second, here)]
            if not false_here:
                continue
            sequence = ordered[:k] + [first, second] + ordered[k + 2:]
            words = [object_phrase(sequence[0])]
            for i, (x, y) in enumerate(zip(sequence, sequence[1:])):
                true = next(iter(connector(x, y, here)), "and")
                words += [false_here[0] if i == k else true, object_phrase(y)]
            return " ".join(words) + " ."
    return None


def retrieved_questions(scene: Scene, other: Scene, world: WorldConfig, n: int,
                        rng: np.random.Generator) -> list[Question]:
    """Up to ``n`` yes/no questions whose answer is "no" here and "yes" in the retrieved ``other`` scene.

    Objects of ``other`` absent here, colours ``other`` gives to a shared category, relations that
    hold in ``other`` between categories both scenes show and do not hold here; drawn in that mix
    at random.
    """
    present = {o.category: o for o in scene.objects}
    pool = [Question(f"is there {'an' if o.category[0] in 'aeiou' else 'a'} {o.category} in the image ?", NO, "object",
                     "retrieved", (o.category,)) for o in other.objects if o.category not in present]
    pool += [Question(f"is the {o.category} {o.color} ?", NO, "attribute", "retrieved", (o.category, o.color))
             for o in other.objects if o.category in present and present[o.category].color != o.color]
    for r in other.relations(world.relation_margin):
        a, b = present.get(r.subject), present.get(r.object)
        if a is not None and b is not None and r.predicate not in spatial_relations(a, b, world.relation_margin):
            pool.append(Question(f"is the {r.subject} {r.predicate} the {r.object} ?", NO, "relation", "retrieved",
                                 tuple(r)))
    if len(pool) <= n:
        return pool
    return [pool[i] for i in sorted(rng.choice(len(pool), size=n, replace=False).tolist())]


def realign_pairs(prefs: PreferenceData, world: WorldConfig, *, seed: int = 0,
                  counts: tuple[int, int, int] = (2, 2, 2), captions: bool = True) -> PreferenceData:
    """Re-Align's dual-preference pairs over the scenes of ``prefs``, whose retrieval must be filled in.

    Per scene: a caption pair (the exact caption against :func:`inject_retrieved`'s), and
    ``sum(counts) // 2`` questions about the retrieved scene's content (:func:`retrieved_questions`:
    chosen "no", rejected "yes") with as many about the scene's own content (chosen "yes",
    rejected "no"), so that "yes" and "no" are chosen equally often. The model is not asked anything:
    Re-Align builds its pairs from faithful answers, not from the model's mistakes.
    """
    if prefs.retrieved is None:
        raise ValueError("realign_pairs needs the retrieved image of every scene: call with_retrieval first")
    data = prefs.data
    stats = WorldStats.estimate(world, n=STATS_SCENES, split="train")
    half = max(1, sum(counts) // 2)
    pairs: list[PreferencePair] = []
    for i, scene in enumerate(data.scenes):
        other = data.scenes[prefs.retrieved[i]]
        rng = np.random.default_rng([int(seed), int(scene.seed), 0x5EA1])
        if captions:
            rejected, _ = inject_retrieved(scene, other, world, rng)
            pairs.append(PreferencePair(i, CAPTION_PROMPT, data.captions[i], rejected, "caption", "retrieved"))
        negatives = retrieved_questions(scene, other, world, half, rng)
        positives = [q for q in tuning_questions(scene, i, world, stats, counts) if q.answer == YES][:len(negatives)]
        for q in negatives:
            pairs.append(PreferencePair(i, q.text, NO, YES, q.kind, "retrieved"))
        for q in positives:
            pairs.append(PreferencePair(i, q.text, YES, NO, q.kind, "retrieved"))
    return replace(prefs, pairs=tuple(pairs))
