"""Continued tuning on a controlled world: the arms of the survey's causes as experiments (issue 8).

The survey (its section 3.2) blames misalignment on causes at three levels: data (imbalance,
co-occurrence, imperfect captions), model (an ability gap between a weak vision encoder and a
strong LLM, knowledge conflicts with the LLM's priors) and inference. On the synthetic world
each cause is a knob (:class:`plugins.world.WorldConfig`) or a model change, so its effect can
be measured: train the same model twice, once with the cause and once without, and compare.

``world-tune`` is one arm of such a comparison. Starting from the model under test (the default
tiny LLaVA), it continues end-to-end tuning (the survey's stage 3, as
:func:`plugins.models.train.tune_end_to_end` does it) on scenes of ``world``'s tuning stream:

* per scene, with probability ``caption_share``, the world's *noisy* caption (its
  ``caption_insert_prob`` / ``caption_drop_prob`` decide how noisy), else ``questions`` =
  (object, attribute, relation) yes/no questions with random negatives, of which the share
  answered "yes" follows the world's ``yes_ratio``; one supervised example per caption or question;
* ``reset_projector`` re-initialises the projector (seeded) and ``reset_vision`` the vision
  tower; ``freeze_vision`` keeps the tower's weights fixed and ``freeze_lm`` the language
  model's (with both frozen, only the projector trains: the survey's stage 2 again). A
  re-initialised, frozen tower is the weakest encoder there is: the ability-gap arm.

The cell's seed is the arm's ``seed`` (the runner fills it in), so seeds are independent training
runs and a comparison gets a confidence interval. Training uses the instruction-tuning loop of
:func:`plugins.tuning.trainer.train_instructions` (AdamW, cosine schedule, full fine-tuning of
what is not frozen) and is cached like every tuned method; the tuned tensors are swapped in only
while answering.

>>> from plugins.registry import create_method
>>> arm = create_method("world-tune", {"world": {"yes_ratio": 0.8}, "seed": 2})
>>> arm.world.yes_ratio, arm.config.seed, arm.config.steps
(0.8, 2, 300)
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import Field, NonNegativeInt

from plugins.methods.tuned import TunedConfig, TunedMethod
from plugins.registry import register_method

if TYPE_CHECKING:
    from plugins.models.data import WorldData
    from plugins.models.llava import LlavaAdapter
    from plugins.tuning.instructions import Instruction
    from plugins.tuning.trainer import TuningRun
    from plugins.world import WorldConfig

__all__ = ["WorldTune", "world_instructions", "reinitialise"]


def world_instructions(data: "WorldData", world: "WorldConfig", counts: tuple[int, int, int], caption_share: float,
                       seed: int) -> list["Instruction"]:
    """Per scene of ``data``: its noisy caption (probability ``caption_share``) or ``counts`` yes/no questions.

    Questions use random negatives and the world's ``yes_ratio``; captions the world's caption noise.

    >>> from plugins.models.data import build_world_data
    >>> from plugins.world import WorldConfig
    >>> world = WorldConfig(yes_ratio=1.0)
    >>> examples = world_instructions(build_world_data(world, 20, "tune"), world, (2, 0, 0), 0.0, 0)
    >>> {e.answer for e in examples}
    {'yes'}
    """
    from plugins.tuning.instructions import Instruction
    from plugins.world import CAPTION_PROMPT, attribute_questions, existence_questions, noisy_caption, relation_questions

    rng = np.random.default_rng(seed)
    out: list[Instruction] = []
    n_obj, n_attr, n_rel = counts
    for i, scene in enumerate(data.scenes):
        if rng.random() < caption_share:
            noisy = noisy_caption(scene, world, rng=rng)
            out.append(Instruction(i, CAPTION_PROMPT, noisy.text, "caption", bool(noisy.inserted)))
            continue
        questions = (existence_questions(scene, world, strategy="random", n=n_obj)
                     + attribute_questions(scene, world, strategy="random", n=n_attr)
                     + relation_questions(scene, world, n=n_rel))
        out += [Instruction(i, q.text, q.answer, q.kind, q.answer == "no") for q in questions]
    return out


def reinitialise(module: torch.nn.Module) -> int:
    """Draw fresh weights for every sub-module of ``module`` that can (``reset_parameters``); returns how many.

    CLIP's class embedding, a bare parameter, is redrawn from N(0, 1) as CLIP initialises it.
    """
    count = 0
    for sub in module.modules():
        if sub is not module and hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
            count += 1
        embedding = getattr(sub, "class_embedding", None)
        if isinstance(embedding, torch.nn.Parameter):
            with torch.no_grad():
                embedding.normal_()
    return count


@register_method("world-tune")
class WorldTune(TunedMethod):
    """One arm of a cause experiment: continued end-to-end tuning on a controlled world (not a mitigation)."""

    class Config(TunedConfig):
        """See the module docstring."""

        lr: float = Field(1e-4, gt=0)  # peak learning rate (AdamW), full fine-tuning of what is not frozen
        warmup: int = Field(20, ge=0)  # linear warm-up steps, then cosine decay to 10 % of the peak
        questions: tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt] = (4, 2, 2)  # object, attribute, relation questions per question scene (stage 3's)
        caption_share: float = Field(0.25, ge=0, le=1)  # share of scenes given as a (noisy) caption instead of questions (stage 3's)
        reset_projector: bool = False  # re-initialise the projector before tuning
        reset_vision: bool = False  # re-initialise the vision tower before tuning (with freeze_vision: the ability-gap arm)
        freeze_vision: bool = False  # keep the vision tower's weights fixed
        freeze_lm: bool = False  # keep the language model's weights (and its LM head) fixed

    def train(self, model: "LlavaAdapter", progress: bool = True) -> "TuningRun":
        from plugins.models.data import build_world_data
        from plugins.tuning import trainer
        from plugins.tuning.preferences import PREFERENCE_SPLIT

        c = self.config
        t0 = time.perf_counter()
        data = build_world_data(self.world, c.scenes, PREFERENCE_SPLIT)
        examples = world_instructions(data, self.world, tuple(c.questions), c.caption_share, c.seed)
        data_seconds = time.perf_counter() - t0
        run = trainer.train_instructions(model, data.images, examples, self.stage(), seed=c.seed,
                                         name=f"world-tune ({self.describe()})", prepare_policy=self._prepare,
                                         progress=progress)
        yes = [e for e in examples if e.kind != "caption"]
        run.stats.update(data_seconds=round(data_seconds, 2), world_fingerprint=self.world.fingerprint(),
                         yes_share=round(sum(e.answer == "yes" for e in yes) / max(1, len(yes)), 4),
                         captions=sum(e.kind == "caption" for e in examples))
        return run

    def describe(self) -> str:
        c = self.config
        parts = [f"seed {c.seed}"] + [k for k in ("reset_projector", "reset_vision", "freeze_vision", "freeze_lm")
                                      if getattr(c, k)]
        return ", ".join(parts)

    def _prepare(self, policy: torch.nn.Module) -> None:
        c = self.config
        tower, projector = policy.model.vision_tower, policy.model.multi_modal_projector
        if c.reset_projector:
            reinitialise(projector)
        if c.reset_vision:
            reinitialise(tower)
        if c.freeze_vision:
            tower.requires_grad_(False)
        if c.freeze_lm:
            policy.model.language_model.requires_grad_(False)
            policy.get_output_embeddings().requires_grad_(False)
