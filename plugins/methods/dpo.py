"""DPO on hallucinated vs corrected answers of the model itself (HA-DPO style, Zhao et al. 2023).

Paper: Zhao et al., "Beyond Hallucinations: Enhancing LVLMs through Hallucination-Aware Direct
Preference Optimization", arXiv 2311.16839; the loss is DPO's (Rafailov et al. 2023). Official
code: github.com/opendatalab/HA-DPO (``ha_dpo/trainer/base_dpo_trainer.py``, ``dpo_loss``;
``llava_dpo_trainer.py``, chosen and rejected run as one batch, answers scored by their summed
token log-probabilities). Per pair, with π the tuned model and ref the frozen original::

    L = −log σ(β · [(log π(y_w|x) − log π(y_l|x)) − (log ref(y_w|x) − log ref(y_l|x))])
        + sft_weight · CE(y_w | x)

(:func:`plugins.tuning.losses.dpo_loss`, :func:`~plugins.tuning.losses.sft_loss`).

**Official defaults** (LLaVA-1.5-7B run in ``ha_dpo/models/llava-v1_5/README.md``): β = 0.1,
LoRA r = 128 / α = 256 on every linear layer, learning rate 2e-6, cosine schedule, no warm-up,
weight decay 0, batch 16 per GPU on 8 GPUs, one epoch; the trainer's auxiliary language loss
``gamma`` defaults to 0. Data: LLaVA's own descriptions of Visual Genome images with the
hallucinations GPT-4 found rewritten ("style-consistent"), plus POPE-style yes/no questions.

**Here** (:mod:`plugins.tuning.preferences`): ``scenes`` scenes of the world's ``tune``
stream; the model describes each and answers ``questions`` yes/no questions; exact ground truth
plays GPT-4 (a wrong caption against the caption it meant made true, a wrong answer against
the right one, a hallucination written into the truth where the model was right).

**Deviations.** Full fine-tuning of all 1.3 M parameters instead of LoRA on a 7B model, at
lr 5e-5 for 300 steps of 16 pairs (≈ 1.7 passes over 2,800 pairs); ground truth instead of
GPT-4; ``sft_weight`` = 1 instead of 0 (HA-DPO's ``gamma``, Re-Align's ``sft_weight``): without
it the tiny model's captions degenerated in our runs on a validation stream of the world
(``tune-val``, never the test split); 0 restores the official objective.

>>> DPO().config.beta, DPO().config.sft_weight
(0.1, 1.0)
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt

from plugins.methods.tuned import TunedConfig, TunedMethod
from plugins.registry import register_method
from plugins.trainers.tuned import train_dpo

__all__ = ["DPO", "PreferenceConfig"]


class PreferenceConfig(TunedConfig):
    """What DPO and rDPO share: the preference data, β and the SFT weight (and :class:`TunedConfig`'s fields)."""

    questions: tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt] = (2, 2, 2)  # yes/no questions per scene: object, attribute, relation
    captions: bool = True  # also one caption pair per scene
    beta: float = Field(0.1, gt=0)  # β of the DPO loss (official 0.1)
    sft_weight: float = Field(1.0, ge=0)  # weight of the chosen answers' cross-entropy (HA-DPO gamma, Re-Align sft_weight: both 0; see docstring)
    data: Literal["ha-dpo", "re-align"] = "ha-dpo"  # rejected answers: the model's own errors (HA-DPO) or the retrieved image's content (Re-Align)


@register_method("dpo")
class DPO(TunedMethod):
    """DPO on hallucinated vs corrected answers of the model itself (HA-DPO style, Zhao et al. 2023).

    Paper, equation, official defaults and deviations: the module docstring.
    """

    trainer = staticmethod(train_dpo)

    class Config(PreferenceConfig):
        """See the module docstring."""
