"""Instruction tuning with balanced positive and negative instructions (LRV-Instruction, Liu et al. 2023).

Paper: Liu et al., "Mitigating Hallucination in Large Multi-Modal Models via Robust Instruction
Tuning", ICLR 2024, arXiv 2306.14565. Official code and data: github.com/FuxiaoLiu/LRV-Instruction.
The objective is plain instruction tuning, the mean cross-entropy of the answer tokens
(:func:`plugins.tuning.losses.sft_loss`)::

    L = −1/N Σ_answer tokens log π(y_t | x, y_<t)

what matters is the data: GPT-4-written instructions of many tasks, positive ones and
*negative* ones that ask about objects that are not in the image or about a manipulated
attribute of one that is, answered by saying so, with positives and negatives balanced.

**Official defaults** (``MiniGPT-4/train_configs/minigpt4_stage2_finetune.yaml``): lr 3e-5
decaying to 1e-5 (cosine) after 200 warm-up steps from 1e-6, weight decay 0.05, batch 1, the
vision encoder and Q-Former frozen.

**Here**: ``scenes`` scenes of the ``tune`` stream, each with its exact caption (positive) and
``questions`` yes/no questions, half of them negative and hard: absent objects that are popular
or co-occur with what is present, the colour a shape usually has when this one has another,
the opposite of a true relation (:func:`plugins.tuning.instructions.instruction_set`
``mix="negative"``).

**Deviations.** Full fine-tuning of every weight at lr 5e-5 for 300 steps of 16 examples,
no warm-up; negative answers are the world's one-word "no" rather than a sentence explaining
what is wrong; the data are rule-made from exact ground truth, not written by GPT-4.

>>> LRV().config.weight_decay, LRV().config.lr
(0.05, 5e-05)
"""
from __future__ import annotations

from pydantic import Field, NonNegativeInt

from plugins.methods.tuned import TunedConfig, TunedMethod
from plugins.registry import register_method
from plugins.trainers.tuned import train_lrv

__all__ = ["LRV"]


@register_method("lrv")
class LRV(TunedMethod):
    """Instruction tuning with balanced positive and negative instructions (LRV-Instruction, Liu et al. 2023).

    Paper, equation, official defaults and deviations: the module docstring.
    """

    trainer = staticmethod(train_lrv)

    class Config(TunedConfig):
        """See the module docstring."""

        questions: tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt] = (2, 2, 2)  # instruction questions per scene: object, attribute, relation (plus the caption)
        weight_decay: float = Field(0.05, ge=0)  # AdamW weight decay on matrices (official 0.05)
