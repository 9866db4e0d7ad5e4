"""Continued tuning on a controlled world: the arms of the survey's causes as experiments (issue 8).

The survey (its section 3.2) blames misalignment on causes at three levels: data (imbalance,
co-occurrence, imperfect captions), model (an ability gap between a weak vision encoder and a
strong LLM, knowledge conflicts with the LLM's priors) and inference. On the synthetic world
each cause is a knob (:class:`plugins.world.WorldConfig`) or a model change, so its effect can
be measured: train the same model twice, once with the cause and once without, and compare.

``world-tune`` is one arm of such a comparison. Starting from the model under test (the default
tiny LLaVA), it continues end-to-end tuning (the survey's stage 3, as
:func:`plugins.embedded.train.tune_end_to_end` does it) on scenes of ``world``'s tuning stream:

* per scene, with probability ``caption_share``, the world's *noisy* caption (its
  ``caption_insert_prob`` / ``caption_drop_prob`` decide how noisy), else ``questions`` =
  (object, attribute, relation) yes/no questions with random negatives, of which the share
  answered "yes" follows the world's ``yes_ratio``; one supervised example per caption or question;
* ``reset_projector`` re-initialises the projector (seeded) and ``reset_vision`` the vision
  tower; ``freeze_vision`` keeps the tower's weights fixed and ``freeze_lm`` the language
  model's (with both frozen, only the projector trains: the survey's stage 2 again). A
  re-initialised, frozen tower is the weakest encoder there is: the ability-gap arm.

The cell's seed is the arm's ``seed`` (the runner fills it in), so seeds are independent training
runs and a comparison gets a confidence interval. Training (:func:`plugins.trainers.tuned.train_world_tune`)
uses the instruction-tuning loop of :func:`plugins.tuning.trainer.train_instructions` (AdamW, cosine
schedule, full fine-tuning of what is not frozen) and is cached like every tuned method; the tuned
tensors are swapped in only while answering.

>>> from plugins.registry import create_method
>>> arm = create_method("world-tune", {"world": {"yes_ratio": 0.8}, "seed": 2})
>>> arm.world.yes_ratio, arm.config.seed, arm.config.steps
(0.8, 2, 300)
"""
from __future__ import annotations

from pydantic import Field, NonNegativeInt

from plugins.methods.tuned import TunedConfig, TunedMethod
from plugins.registry import register_method
from plugins.trainers.tuned import train_world_tune

__all__ = ["WorldTune"]


@register_method("world-tune")
class WorldTune(TunedMethod):
    """One arm of a cause experiment: continued end-to-end tuning on a controlled world (not a mitigation)."""

    trainer = staticmethod(train_world_tune)

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
