"""Hallucination-augmented contrastive tuning: instruction loss plus image-caption contrast (Jiang et al. 2024).

Paper: Jiang et al., "Hallucination Augmented Contrastive Learning for Multimodal Large
Language Model", CVPR 2024, arXiv 2312.06968. Official code: github.com/X-PLUG/mPLUG-HalOwl,
folder ``hacl`` (``llava/model/language_model/llava_llama.py``): the LLM reads the projected
image tokens followed by an end-of-sequence embedding, alone, and a caption with its end
token, alone; the last hidden state of each goes through its own linear projection and is
L2-normalised (v for the image, t for the caption, h for a hallucinated caption); then::

    L = CE(y | x) + w · (L_i2t + L_t2i) / 2
    L_i2t = −mean_i log softmax_j([v_i·t_j, v_i·h_k] / τ)[i],   L_t2i = −mean_i log softmax_j(t_i·v_j / τ)[i]

(:func:`plugins.tuning.losses.contrastive_loss`; hallucinated captions are extra negatives on
the image-to-text side only).

**Official defaults**: temperature ``itc_temp`` learned from 0.07 and clamped to [0.001, 0.5]
after every step; projections ``Linear(hidden, hidden)``; instruction tuning at lr 2e-5, cosine
with 3 % warm-up, batch 16 per GPU, one epoch (``hacl/README.MD``); the generation loss is on
(``--do_generation True``). The weight ``ita_weight`` is read from the model config, and we
found no released value; an earlier version of the same file adds the two losses unweighted,
so ``contrastive_weight`` defaults to 1.

**Here**: ``scenes`` scenes of the ``tune`` stream; the language loss on their exact captions
and yes/no questions with random negatives (the kind of data the model was trained on,
:func:`plugins.tuning.instructions.instruction_set` ``mix="plain"``), one example per image
per step; the contrastive loss on the same images, their exact captions and one hallucinated
caption each (:func:`~plugins.tuning.instructions.hallucinated_captions`).

**Deviations.** Full fine-tuning at lr 5e-5 for 300 steps of 16 images instead of an epoch of
LLaVA-665k; hallucinated captions written by rules (one object or colour changed) instead of
by GPT-4; no feature queue and no cross-GPU gathering (both off by default officially); the
projections and the temperature are trained with the model and discarded afterwards.

>>> HACL().config.temperature, HACL().config.contrastive_weight
(0.07, 1.0)
"""
from __future__ import annotations

from pydantic import Field, NonNegativeInt

from plugins.methods.tuned import TunedConfig, TunedMethod
from plugins.registry import register_method
from plugins.trainers.tuned import train_hacl

__all__ = ["HACL"]


@register_method("hacl")
class HACL(TunedMethod):
    """Hallucination-augmented contrastive tuning: instruction loss plus image-caption contrast (Jiang et al. 2024).

    Paper, equation, official defaults and deviations: the module docstring.
    """

    trainer = staticmethod(train_hacl)

    class Config(TunedConfig):
        """See the module docstring."""

        questions: tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt] = (2, 2, 2)  # instruction questions per scene: object, attribute, relation (plus the caption)
        contrastive_weight: float = Field(1.0, ge=0)  # weight of the contrastive loss next to the language loss
        temperature: float = Field(0.07, gt=0)  # initial learned temperature (official itc_temp 0.07, clamped to [0.001, 0.5])
