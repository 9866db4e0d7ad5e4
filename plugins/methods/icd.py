"""ICD — Instruction Contrastive Decoding (Wang et al., Findings of ACL 2024; github.com/p1k0pan/ICD).

The contrast stream asks the same question about the same image, but behind a *disturbance
instruction* that tells the model to be a vague, confused detector; what that prompt still
favours is what the model would say without looking carefully, so it is subtracted::

    scores = (1 + α)·l(v, x) − α·l(v, d + x)    on tokens with p(v, x) >= β·max p, −inf elsewhere

Official defaults: α = 1, β = 0.1 (``--cd_alpha``/``--cd_beta`` of the generation scripts),
and the instruction the paper reports best, "You are a confused objects detector to provide a
fuzzy overview or impression of the image." (one of five pre-prompts in
``experiments/gen_scripts/icd_llava_pope.py``).

Deviation: the official code puts the instruction in place of LLaVA's system prompt; the adapter
formats every checkpoint through its own chat template, which has a user turn only, so the
instruction is written in front of the question in the user turn. On the embedded world model
the instruction is made of words outside its closed vocabulary, so it reaches the model as
``<unk>`` tokens: still a disturbance of the prompt, but not the semantic one of the paper.

>>> import torch
>>> from plugins.registry import create_method
>>> icd = create_method("icd", {"alpha": 0.5})
>>> icd.scores(torch.tensor([[2.0, 1.0]]), torch.tensor([[2.0, 0.0]]), step=0)
tensor([[2.0000, 1.5000]])
"""
from __future__ import annotations

import torch
from pydantic import Field

from plugins.methods.contrastive import ContrastiveConfig, ContrastiveMethod
from plugins.models.batch import Batch
from plugins.registry import register_method

CONFUSED_DETECTOR = "You are a confused objects detector to provide a fuzzy overview or impression of the image."


@register_method("icd")
class ICD(ContrastiveMethod):
    """Contrast with the same question behind a disturbance instruction."""

    class Config(ContrastiveConfig):
        alpha: float = Field(1.0, ge=0)  # contrast weight: (1+α)·l − α·l(disturbed)
        beta: float = Field(0.1, ge=0, lt=1)  # plausibility cut on the undisturbed distribution
        instruction: str = Field(CONFUSED_DETECTOR, min_length=1, max_length=500)  # the disturbance instruction

    def contrast_inputs(self, model, batch: Batch) -> Batch:
        return batch.replace(prompts=[f"{self.config.instruction} {q}" for q in batch.prompts])

    def combine(self, logits: torch.Tensor, contrast: torch.Tensor, step: int) -> torch.Tensor:
        alpha = self.config.alpha
        return (1 + alpha) * logits - alpha * contrast
