"""LogicCheckGPT: drop the objects on which the model contradicts itself (Wu et al. 2024).

Wu et al., "Logical Closed Loop: Uncovering Object Hallucinations in Large Vision-Language
Models", arXiv 2402.11622 (code: github.com/Hyperwjf/LogicCheckGPT, ``check_mplug.py``). The idea:
a model that really sees an object describes its attributes, and asked which objects have those
attributes, names the object again — the loop closes. About an object it made up, the attributes
come from its language prior and the inverse question, which does not name the object, leads
elsewhere. The official pipeline, for an answer that is not a "no" (POPE's parser):

1. **object extraction** — GPT-3.5 lists the objects the answer mentions;
2. **object-to-attribute questions** — the LVLM is asked to describe each object ("Could you
   please describe the {object} in the picture? ...") once greedily and twice sampled;
   GPT-3.5 splits the descriptions into single-attribute claims (stopping after more than five)
   with the object's name masked;
3. **attribute-to-object questions** — each claim becomes "Could you tell me all the objects that
   {attribute} in the image?", asked to the LVLM, which never hears the object's name;
4. **logical-closure check** — an inverse answer closes the loop when it names the object (a word
   match, else GPT-3.5 judges); with r = closed / asked, the object exists when r ≥ 0.4
   (``threshold`` in ``get_refinement``; no claims at all gives r = 0: absent);
5. **refinement** — GPT-3.5 rewrites the answer without the objects that failed.

**Offline stand-ins — not the official pipeline.** No third model exists here, so the evaluated
model asks itself, in the synthetic world's closed grammar (:mod:`plugins.world.text`):

* step 1 (GPT-3.5) → exact parsing: a yes to a world yes/no question asserts the objects it names
  (``is there a star in the image ?`` → star; colour and relation questions → their objects), any
  other answer is read as a caption (:func:`plugins.methods.posthoc.asserted_objects`); a "no"
  passes through unchecked, as in the official code;
* step 2 → for each object, the world's colour question for every colour, ``is the {object}
  {colour} ?`` (7 questions per object with the default world), greedy; the colours answered yes
  are the object's attribute claims. The world's questions ask colours only, and the adapter
  decodes greedily, so there are no sampled answers and no size or state claims;
* step 3 → ``inverse="description"`` (default): the one object-free question the model knows,
  ``describe the image .`` (once per image), read as the answer to "which objects are {colour}?"
  for every colour — the objects it describes in that colour. ``inverse="named"`` asks
  ``is there a {colour} {object} in the image ?`` instead: one question per claim, but it names the
  object, which the official code avoids (it drops inverse questions that mention the object);
* step 4 → the official rule: r = (claims whose inverse answer contains the object) / (claims),
  keep when r ≥ ``threshold`` (0.4), an object without claims fails;
* step 5 (GPT-3.5) → a yes to a yes/no question about a failed object becomes ``"no"``; a caption
  loses every mention of it (:func:`plugins.methods.posthoc.rewrite_caption`).

The loop can only close for a model whose answers about attributes mean something. An earlier
default checkpoint answered colour questions little better than chance (over a quarter of the
objects really present got no colour at all), and there the check removed real objects about as
readily as made-up ones: on 300 world-pope adversarial questions accuracy fell from 0.68 to 0.56
(``named``: 0.62). What it does on the current default model is on its page of the site.

Follow-up questions go through ``model.generate`` on the same image, without the method (no
recursion); identical (image, question) pairs within a chunk are asked once. ``threshold=0`` keeps
every object, so answers pass through unchanged. Items that are not world images pass through
with a ``RuntimeWarning`` (the object extraction knows only the world's vocabulary).

>>> closure_ratio({"yellow", "red"}, {"yellow": {"star"}, "red": {"heart"}}, "star")
0.5
>>> closure_ratio(set(), {}, "star")
0.0
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

from pydantic import Field

from plugins.methods.posthoc import (
    NO, YES, WorldMethodConfig, WorldPostprocess, answer_polarity, asserted_objects, parse_question, rewrite_caption,
    world_items,
)
from plugins.registry import register_method
from plugins.world import CAPTION_PROMPT, parse_caption

if TYPE_CHECKING:
    import numpy as np

    from plugins.models.adapter import LlavaAdapter
    from plugins.models.batch import Batch

__all__ = ["LogicCheck", "closure_ratio", "forward_question", "named_inverse_question", "described_as"]

FOLLOW_UP_BATCH = 64  # follow-up questions per generate call; answers do not depend on it (batch-invariant adapter)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def forward_question(category: str, color: str) -> str:
    """Object-to-attribute, in the world's colour template: ``is the star red ?``."""
    return f"is the {category} {color} ?"


def named_inverse_question(category: str, color: str) -> str:
    """Attribute-to-object with the object named (``inverse="named"``): ``is there an orange star in the image ?``."""
    return f"is there {_article(color)} {color} {category} in the image ?"


def described_as(description: str, world: Any) -> dict[str, set[str]]:
    """colour → the categories a description states in that colour (``inverse="description"``).

    >>> from plugins.world import WorldConfig
    >>> sorted(described_as("a small red star left of a ring and a red heart .", WorldConfig())["red"])
    ['heart', 'star']
    """
    out: dict[str, set[str]] = {}
    for mention in parse_caption(description, world).objects:
        if mention.color is not None:
            out.setdefault(mention.color, set()).add(mention.category)
    return out


def closure_ratio(claims: set[str], inverse: Mapping[str, set[str]], category: str) -> float:
    """Share of the attribute ``claims`` whose inverse answer (``inverse[attribute]``) names ``category``; 0 without claims."""
    if not claims:
        return 0.0
    return sum(category in inverse.get(attribute, set()) for attribute in claims) / len(claims)


def _image_key(image: "np.ndarray") -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()[:16] + "x".join(map(str, image.shape))


@register_method("logiccheck")
class LogicCheck(WorldPostprocess):
    """LogicCheckGPT (Wu et al. 2024): object-attribute logical-closure questions to the model itself; failed objects removed."""

    class Config(WorldMethodConfig):
        threshold: float = Field(0.4, ge=0.0, le=1.0)  # keep an object when >= this share of its claims close the loop (official 0.4); 0 keeps all
        inverse: Literal["description", "named"] = "description"  # attribute-to-object question: object-free description, or named yes/no
        description_tokens: int = Field(40, ge=1)  # max new tokens of the description (the world-caption benchmark's length)
        answer_tokens: int = Field(8, ge=1)  # max new tokens of each yes/no follow-up (the POPE benchmarks' length)

    def _ask(self, model: "LlavaAdapter", questions: Sequence[tuple["np.ndarray", str]], max_new_tokens: int,
             seed: int) -> dict[tuple[str, str], str]:
        """Greedy answers of the plain model, keyed by (image key, question); each distinct pair asked once."""
        from plugins.models.batch import Batch

        unique: dict[tuple[str, str], "np.ndarray"] = {}
        for image, question in questions:
            unique.setdefault((_image_key(image), question), image)
        if not unique:
            return {}
        keys = sorted(unique)  # a fixed order: answers must not depend on which item asked first
        asked = Batch(images=[unique[k] for k in keys], prompts=[q for _, q in keys],
                      ids=[f"{k}|{q}" for k, q in keys], seed=seed)
        answers = model.generate(asked, max_new_tokens=max_new_tokens, batch_size=FOLLOW_UP_BATCH)
        return dict(zip(keys, answers))

    def failed_objects(self, model: "LlavaAdapter", images: Sequence["np.ndarray"],
                       objects: Sequence[Sequence[str]], seed: int = 0) -> list[dict[str, float]]:
        """Per item, object → closure ratio r for the objects that fail (r < threshold)."""
        colors = sorted(self.world.colors)
        keys = [_image_key(image) if objs else "" for image, objs in zip(images, objects)]
        forward = self._ask(model, [(image, forward_question(o, c)) for image, objs in zip(images, objects)
                                    for o in objs for c in colors], self.config.answer_tokens, seed)
        claims = [{o: {c for c in colors if answer_polarity(forward[key, forward_question(o, c)]) == YES} for o in objs}
                  for key, objs in zip(keys, objects)]
        if self.config.inverse == "description":
            # Only items with a claim need the description: an object without claims fails anyway.
            described = self._ask(model, [(image, CAPTION_PROMPT) for image, item in zip(images, claims)
                                          if any(item.values())], self.config.description_tokens, seed)
            inverse = [{o: described_as(described[key, CAPTION_PROMPT], self.world) for o in item}
                       if any(item.values()) else {o: {} for o in item} for key, item in zip(keys, claims)]
        else:
            named = self._ask(model, [(image, named_inverse_question(o, c)) for image, item in zip(images, claims)
                                      for o, cs in item.items() for c in cs], self.config.answer_tokens, seed)
            inverse = [{o: {c: {o} if answer_polarity(named[key, named_inverse_question(o, c)]) == YES else set()
                            for c in cs} for o, cs in item.items()} for key, item in zip(keys, claims)]
        out = []
        for item_claims, item_inverse in zip(claims, inverse):
            ratios = {o: closure_ratio(cs, item_inverse[o], o) for o, cs in item_claims.items()}
            out.append({o: r for o, r in ratios.items() if r < self.config.threshold})
        return out

    def postprocess(self, model: "LlavaAdapter", batch: "Batch", texts: list[str]) -> list[str]:
        """Each answer without the objects that fail the closed loop; non-world items unchanged (with a warning)."""
        flags = world_items(batch, self.world, self.name)
        probes = [parse_question(q, self.world) for q in batch.prompts]
        objects = [asserted_objects(p, t, self.world) if ok else () for p, t, ok in zip(probes, texts, flags)]
        if self.config.threshold == 0 or not any(objects):
            return list(texts)  # every ratio is >= 0: nothing can fail, so no follow-up is asked
        failed = self.failed_objects(model, batch.images, objects, batch.seed)
        out = []
        for probe, text, gone in zip(probes, texts, failed):
            if not gone:
                out.append(text)
            elif probe.yes_no:
                out.append(NO)  # the question's object (or one of a relation's two) is judged absent
            else:
                out.append(rewrite_caption(text, self.world, drop=set(gone)))
        return out
