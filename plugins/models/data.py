"""Training examples for the tiny LLaVA, drawn from the world's "train" stream only.

Test scenes come from the disjoint "test" stream (:mod:`plugins.embedded.quick_eval`), so no test
image or question is ever trained on. Every example is a token sequence in the chat format of
:mod:`plugins.models.tokenizer` with a loss mask on the assistant's words (LLaVA trains on
answers only), plus the index of its image, if any:

* **text-only** (stage 0): what the LM learns language and its priors from, with no image —
  ``USER: describe the image . ASSISTANT: <noisy caption></s>`` and question answering over a
  textual context, ``USER: <noisy caption> is there a heart in the image ? ASSISTANT: yes</s>``
  (one question per example) whose answers are the scene's truth. The noisy caption drops or inserts objects the way the
  world's priors suggest (``caption_drop_prob``, ``caption_insert_prob``), so the LM also learns
  to guess partners that go unmentioned: the co-occurrence prior an LVLM's LM brings along.
  A share of questions comes with no context at all: pure prior.
* **caption pairs** (stage 1): ``<s> caption </s>`` for the CLIP text encoder, paired with the image;
* **image captions** (stages 2 and 3, mixed with image questions): ``USER: <image>\\ndescribe the image . ASSISTANT: <caption></s>``;
* **image questions** (stages 2 and 3): several object, attribute and relation questions about one image
  as a multi-turn conversation (negatives drawn at random, as in instruction data that was never
  built to probe hallucination).

>>> from plugins.world import WorldConfig
>>> from plugins.models.tokenizer import WordEncoder, build_vocab
>>> world = WorldConfig()
>>> data = build_world_data(world, n=4)
>>> data.images.shape, data.images.dtype
((4, 64, 64, 3), dtype('uint8'))
>>> ex = caption_example(data, 0, WordEncoder(build_vocab(world)), n_image_tokens=64)
>>> len(ex.input_ids) == len(ex.labels), ex.image
(True, 0)
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np
import torch

from plugins.world import (
    CAPTION_PROMPT, INSTRUCTION_SUFFIXES, Scene, SceneSampler, WorldConfig, attribute_questions, caption,
    count_questions, existence_questions, instruction_text, noisy_caption, relation_questions, render_batch, size_questions,
)
from plugins.world.scene import stream_rng

from plugins.models.tokenizer import WordEncoder

IGNORE = -100  # label of positions without loss (prompt, image, padding), as torch's cross-entropy expects
TRAIN_STREAM = 101  # scene-stream id for draws made here (question mix, context dropping); the world uses 0-5


@dataclass(frozen=True)
class WorldData:
    """Scenes ``0 .. n-1`` of one split with their images and exact captions."""

    world: WorldConfig  # the world the scenes were drawn from
    split: str  # "train" for training; never "test"
    scenes: tuple[Scene, ...]  # (N,) scenes
    images: np.ndarray  # (N, H, W, 3) uint8 rendered scenes
    captions: tuple[str, ...]  # (N,) exact captions


def build_world_data(world: WorldConfig, n: int, split: str = "train", start: int = 0) -> WorldData:
    """Sample and render ``n`` scenes of ``split`` (seeded by the world: same config, same data)."""
    scenes = tuple(SceneSampler(world).scenes(split, n, start=start))
    return WorldData(world, split, scenes, render_batch(scenes, world), tuple(caption(s, world) for s in scenes))


@dataclass(frozen=True)
class Example:
    """One training sequence."""

    input_ids: list[int]  # (T,) token ids, starting with <s>
    labels: list[int]  # (T,) target ids where the loss applies, IGNORE elsewhere (not yet shifted)
    image: Optional[int]  # index into WorldData.images, or None for text-only


def _conversation(enc: WordEncoder, turns: Sequence[tuple[str, str]], n_image_tokens: int) -> Example:
    """``<s> USER: [<image>...] q1 ASSISTANT: a1</s> USER: q2 ASSISTANT: a2</s> ...``; loss on answers and </s>."""
    ids, labels = [enc.bos_id], [IGNORE]
    for i, (question, answer) in enumerate(turns):
        prompt = enc.user_turn(question, n_image_tokens if i == 0 else 0)
        reply = enc(answer) + [enc.eos_id]
        ids += prompt + reply
        labels += [IGNORE] * len(prompt) + reply
    return Example(ids, labels, None)


def caption_example(data: WorldData, i: int, enc: WordEncoder, n_image_tokens: int,
                    noisy: bool = False) -> Example:
    """Scene ``i``'s caption as an answer to the caption prompt; ``noisy`` uses the world's noisy caption."""
    text = noisy_caption(data.scenes[i], data.world).text if noisy else data.captions[i]
    ex = _conversation(enc, [(CAPTION_PROMPT, text)], n_image_tokens)
    return Example(ex.input_ids, ex.labels, i)


SUFFIX_TEXTS: tuple[str, ...] = tuple(instruction_text(INSTRUCTION_SUFFIXES[k]) for k in sorted(INSTRUCTION_SUFFIXES))
"""The instruction suffixes in the world's spelling, in sorted-name order (what training appends)."""


def with_suffix(question: str, rng: np.random.Generator, suffix_prob: float) -> str:
    """``question``, followed with probability ``suffix_prob`` by one of :data:`SUFFIX_TEXTS` (uniform).

    No draw is made when ``suffix_prob`` is 0, so suffix-free data keep their random streams.

    >>> with_suffix("is the star red ?", np.random.default_rng(0), 1.0).startswith("is the star red ? ")
    True
    """
    if suffix_prob <= 0 or rng.random() >= suffix_prob:
        return question
    return question + " " + SUFFIX_TEXTS[int(rng.integers(len(SUFFIX_TEXTS)))]


def question_turns(scene: Scene, world: WorldConfig, n_object: int, n_attribute: int, n_relation: int,
                   rng: np.random.Generator, n_size: int = 0, suffix_prob: float = 0.0,
                   n_count: int = 0) -> list[tuple[str, str]]:
    """Object, colour, size, relation and counting questions about ``scene`` (random negatives), shuffled.

    With ``suffix_prob`` each question is followed, with that probability, by an instruction
    suffix (:data:`plugins.world.INSTRUCTION_SUFFIXES`), as evaluation protocols append them.
    """
    qs = (existence_questions(scene, world, strategy="random", n=n_object)
          + attribute_questions(scene, world, strategy="random", n=n_attribute)
          + (size_questions(scene, world, strategy="random", n=n_size) if n_size else [])
          + relation_questions(scene, world, n=n_relation)
          + (count_questions(scene, world, n=n_count) if n_count else []))
    return [(with_suffix(qs[j].text, rng, suffix_prob), qs[j].answer) for j in rng.permutation(len(qs)).tolist()]


def question_example(data: WorldData, i: int, enc: WordEncoder, n_image_tokens: int,
                     n_object: int = 4, n_attribute: int = 2, n_relation: int = 2, n_size: int = 0,
                     suffix_prob: float = 0.0, n_count: int = 0) -> Example:
    """Scene ``i``'s questions as one multi-turn conversation about its image."""
    rng = stream_rng(data.scenes[i].seed, TRAIN_STREAM)
    turns = question_turns(data.scenes[i], data.world, n_object, n_attribute, n_relation, rng, n_size, suffix_prob,
                           n_count)
    ex = _conversation(enc, turns, n_image_tokens)
    return Example(ex.input_ids, ex.labels, i)


def text_examples(data: WorldData, i: int, enc: WordEncoder, no_context_prob: float = 0.25,
                  n_object: int = 4, n_attribute: int = 2, n_relation: int = 2,
                  max_questions: Optional[int] = None, n_size: int = 0, suffix_prob: float = 0.0,
                  n_count: int = 0) -> list[Example]:
    """Stage 0's text-only examples of scene ``i``: its noisy caption, then one single-turn example per question.

    Each question example is ``USER: <noisy caption> <question> ASSISTANT: <answer></s>``, or, with
    probability ``no_context_prob`` (drawn per question), the question alone (the LM can then only
    answer from its prior). ``max_questions`` keeps the first of the shuffled questions.

    Single turns, not one conversation per scene: measured on the default world (a text probe of
    answering from a caption, exact captions, validation scenes), a 4-layer LM pre-trained on
    conversations of 11 questions after one caption still answered from its prior only after
    1,000 steps at lr 3e-3 (50 % on random negatives), while single turns at lr 1e-3 learned to
    read the context (84 % after 1,000 steps of batch 32, 93 % after 1,000 of batch 64).
    """
    scene, world = data.scenes[i], data.world
    rng = stream_rng(scene.seed, TRAIN_STREAM)
    noisy = noisy_caption(scene, world).text
    out = [_conversation(enc, [(CAPTION_PROMPT, noisy)], 0)]
    turns = question_turns(scene, world, n_object, n_attribute, n_relation, rng, n_size, suffix_prob,
                           n_count)[:max_questions]
    for question, answer in turns:
        context = "" if rng.random() < no_context_prob else noisy + " "
        out.append(_conversation(enc, [(context + question, answer)], 0))
    return out


def clip_text_ids(data: WorldData, enc: WordEncoder) -> list[list[int]]:
    """``<s> caption </s>`` per scene, for the stage-1 CLIP text encoder (it pools at ``</s>``)."""
    return [[enc.bos_id] + enc(c) + [enc.eos_id] for c in data.captions]


def hard_negative_captions(scene: Scene, world: WorldConfig, rng: np.random.Generator) -> list[str]:
    """Captions that differ from the true one in exactly one fact (NegCLIP-style hard negatives).

    Up to three: one object's category replaced by an absent category, one object's colour
    replaced, and two objects' categories swapped (same words, wrong binding). Contrastive
    training against these cannot succeed by matching colours or word sets alone: it has to see shapes.

    >>> from plugins.world import SceneSampler
    >>> world = WorldConfig()
    >>> scene = SceneSampler(world).sample_split("train", 0)
    >>> negs = hard_negative_captions(scene, world, np.random.default_rng(0))
    >>> len(negs), caption(scene, world) in negs
    (3, False)
    """
    objs = list(scene.objects)
    out: list[str] = []

    def caption_with(changed: list) -> str:
        return caption(replace(scene, objects=tuple(changed)), world)

    absent = [c for c in world.categories if c not in scene.categories]
    k = int(rng.integers(len(objs)))
    if absent:
        changed = list(objs)
        changed[k] = replace(objs[k], category=absent[int(rng.integers(len(absent)))])
        out.append(caption_with(changed))
    other_colours = [c for c in sorted(world.colors) if c != objs[k].color]
    changed = list(objs)
    changed[k] = replace(objs[k], color=other_colours[int(rng.integers(len(other_colours)))])
    out.append(caption_with(changed))
    if len(objs) >= 2:
        a, b = (int(x) for x in rng.choice(len(objs), size=2, replace=False))
        changed = list(objs)
        changed[a], changed[b] = replace(objs[a], category=objs[b].category), replace(objs[b], category=objs[a].category)
        out.append(caption_with(changed))
    truth = caption(scene, world)
    return [c for c in out if c != truth]


def pad_batch(seqs: Sequence[Sequence[int]], pad: int) -> torch.Tensor:
    """``(B, T)`` long tensor, right-padded with ``pad`` to the longest sequence."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), pad, dtype=torch.long)  # (B, T)
    for row, s in enumerate(seqs):
        out[row, :len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def collate(examples: Sequence[Example], pixels: Optional[torch.Tensor], pad_id: int) -> dict[str, torch.Tensor]:
    """A training batch: ``input_ids``, ``attention_mask``, ``labels`` (B, T) and ``pixel_values`` (B, 3, H, W).

    ``pixels`` is the normalised image tensor of the whole data set (N, 3, H, W); examples without an
    image must not be mixed with examples that have one.
    """
    ids = pad_batch([e.input_ids for e in examples], pad_id)  # (B, T)
    batch = {
        "input_ids": ids,
        "attention_mask": (pad_batch([[1] * len(e.input_ids) for e in examples], 0)),  # (B, T) 1 = real token
        "labels": pad_batch([e.labels for e in examples], IGNORE),  # (B, T)
    }
    with_image = [e.image is not None for e in examples]
    if any(with_image):
        if not all(with_image) or pixels is None:
            raise ValueError("a batch mixes examples with and without images; build them separately")
        batch["pixel_values"] = pixels[torch.as_tensor([e.image for e in examples])]  # (B, 3, H, W)
    return batch


def region_labels(data: WorldData, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch supervision for the *supervised* stage-1 alternative and the grounding probe.

    Returns ``(category, colour)``, each ``(N, P)`` int64 with ``P = (H // patch_size) ** 2`` patches
    in row-major order (the ViT's order): the index of the category (in ``world.categories``) and of
    the colour (in sorted colour names) of the object covering most of the patch, or ``-1`` where
    objects cover less than a quarter of it (background).
    """
    from plugins.world import object_mask  # local: only this helper needs masks

    world = data.world
    side = world.image_size // patch_size
    colors = sorted(world.colors)
    cat_index = {c: k for k, c in enumerate(world.categories)}
    category = np.full((len(data.scenes), side * side), -1, dtype=np.int64)  # (N, P)
    colour = np.full((len(data.scenes), side * side), -1, dtype=np.int64)  # (N, P)
    for n, scene in enumerate(data.scenes):
        best = np.full(side * side, 0.25 * patch_size * patch_size, dtype=np.float32)  # (P,) coverage to beat
        for obj in scene.objects:
            mask = object_mask(obj, world.image_size)  # (H, W) coverage in [0, 1]
            cover = mask.reshape(side, patch_size, side, patch_size).sum(axis=(1, 3)).reshape(-1)  # (P,)
            win = cover > best
            best[win] = cover[win]
            category[n, win] = cat_index[obj.category]
            colour[n, win] = colors.index(obj.color)
    return category, colour
