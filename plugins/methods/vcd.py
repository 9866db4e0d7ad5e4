"""VCD — Visual Contrastive Decoding (Leng et al., CVPR 2024; github.com/DAMO-NLP-SG/VCD).

The contrast stream sees the same question with a *noised* image: the preprocessed pixels x
are pushed ``noise_step`` steps along a diffusion forward process,
``x' = sqrt(ᾱ_t)·x + sqrt(1 − ᾱ_t)·ε``, ε ~ N(0, I), with the official schedule of 1,000 steps
(β_s = 1e-5 + (5e-3 − 1e-5)·sigmoid(linspace(−6, 6, 1000))_s, ᾱ_t = Π_{s≤t}(1 − β_s);
``vcd_utils/vcd_add_noise.py``). Tokens that the noised image supports as much as the clean one
owe little to the image, so they are pushed down::

    scores = (1 + α)·l(v, x) − α·l(v', x)    on tokens with p(v, x) >= β·max p, −inf elsewhere

Official defaults: α = 1, β = 0.2, noise step 500 — the values of the official POPE script
(``experiments/cd_scripts/llava1.5_pope.bash``: ``cd_alpha=1``, ``cd_beta=0.2``,
``noise_step=500``); the argparse default of ``cd_beta`` is 0.1. That script samples from
``softmax(scores)`` at temperature 1 and appends "Please answer this question with one word." to
each POPE question: the matrix runs VCD under that sampling protocol (five seeds) as well as under
the common, greedy one (:mod:`plugins.models.decoding`). Noise ε is drawn from
``batch.image_seed(i)``, so an item gets the same noise alone or in a batch. Deviation: the
official code draws fresh noise per question; here it is drawn per image (and batch seed), so the
six POPE questions about one image contrast against the same noised copy. Each question's noise
has the same distribution either way, and the contrast prompts then share the noised image and
their common prefix, which the adapter encodes once (:meth:`LlavaAdapter.prompt_cache`): VCD
costs about twice the baseline instead of three times.

>>> import torch
>>> from plugins.registry import create_method
>>> vcd = create_method("vcd")
>>> l, l_noised = torch.tensor([[3.0, 2.0, 0.0]]), torch.tensor([[3.0, 0.0, 0.0]])
>>> vcd.scores(l, l_noised, step=0)  # 2*l - l': the token the noise supports less wins
tensor([[3., 4., -inf]])
"""
from __future__ import annotations

import torch
from pydantic import Field

from plugins.methods.contrastive import ContrastiveConfig, ContrastiveMethod
from plugins.models.batch import Batch
from plugins.models.noise import DIFFUSION_STEPS, add_diffusion_noise
from plugins.registry import register_method

@register_method("vcd")
class VCD(ContrastiveMethod):
    """Contrast with the same question asked about a diffusion-noised copy of the image."""

    class Config(ContrastiveConfig):
        alpha: float = Field(1.0, ge=0)  # contrast weight: (1+α)·l − α·l(noised)
        beta: float = Field(0.2, ge=0, lt=1)  # plausibility cut on the clean distribution (official POPE script 0.2)
        noise_step: int = Field(500, ge=0, lt=DIFFUSION_STEPS)  # diffusion step of the noised image (of 1,000)

    def contrast_inputs(self, model, batch: Batch) -> Batch:
        if not all(batch.has_images):
            missing = [i for i, has in zip(batch.ids, batch.has_images) if not has][:3]
            raise ValueError(f"VCD needs an image for every item; items {missing} have none")
        return batch  # same question and image; the pixels are noised after preprocessing

    def contrast_pixels(self, pixel_values: torch.Tensor, batch: Batch) -> torch.Tensor:
        seeds = [batch.image_seed(i) for i, has in enumerate(batch.has_images) if has]
        return add_diffusion_noise(pixel_values, self.config.noise_step, seeds)

    def combine(self, logits: torch.Tensor, contrast: torch.Tensor, step: int) -> torch.Tensor:
        alpha = self.config.alpha
        return (1 + alpha) * logits - alpha * contrast
