"""VTI: visual and textual test-time intervention (Liu, Ye and Zou 2024, arXiv 2410.15778, ICLR 2025).

"Reducing Hallucinations in Vision-Language Models via Latent Space Steering". VTI reads two
steering directions off a small demo set and adds them, at every layer, to the vision encoder and
to the language model while new inputs are answered. Official code: github.com/shengliu66/VTI
(read at commit bb5dfee); file and line numbers below refer to it.

**Directions** (computed once per model by :func:`plugins.trainers.vti.vti_directions`). A demo is an image
``v_i`` with a faithful caption ``x_i`` and a hallucinated one ``x̄_i``.

* Visual, per encoder layer ``l`` and image token ``t`` (CLS included)::

      Δ_{l,t,i} = mean_k h_{l,t}(mask_k(v_i)) − h_{l,t}(v_i)        k = 1..num_trials

  ``mask_k`` replaces a random ``mask_ratio`` share of the ``patch_size`` patches of the
  processed image by the image's per-channel mean (``vti_utils/utils.py`` ``mask_patches``,
  lines 46-81, drawn at lines 170-175); ``h`` are the vision tower's hidden states.
* Textual, per decoder layer ``l``, at the last token of ``prompt + caption``::

      Δ_{l,i} = h_l(v_i, x_i) − h_l(v_i, x̄_i)

* Each direction is the mean of the differences over the demos plus their first principal axis
  (rank-1 PCA of the centred differences, a unit vector whose sign makes the largest-magnitude
  score positive: ``utils.py`` ``obtain_textual_vti`` line 228, ``obtain_visual_vti`` line 323;
  ``pca.py`` ``svd_flip``). The textual PCA runs on the concatenation of all layers, the visual
  one per token on the concatenation of all layers. The embedding layer's entry is dropped
  (``vti_text[1:]``, ``vti_vision[1:]`` in ``run_mmhal_vti.py``).
* The textual direction is computed with the visual intervention already active, as the
  official script adds the vision layers before calling ``obtain_textual_vti``.

**Intervention** (:func:`plugins.trainers.vti.steer_toward`, the same code the directions are trained under): every layer's MLP output ``y`` (each token's vector),
in the vision encoder with ``λ = alpha_image`` and the direction of that layer and token, in the
language model with ``λ = alpha_text`` and that layer's direction, is turned towards the
direction while keeping its norm (``vti_utils/llm_layers.py`` ``VTILayer.forward``, lines 16-31,
hooked after ``layer.mlp`` at lines 115-121)::

      y ← ‖y‖ · normalize( y/‖y‖ + scale · λ · d/‖d‖ )

**Official defaults**: ``alpha_image = alpha_text = 0.9`` (the run command in ``README.md``; the
argparse defaults of ``experiments/eval/run_mmhal_vti.py`` are 0 and 0.8), ``scale = 0.1``
(hard-coded, ``llm_layers.py`` line 28), ``num_demos = 70`` (README; argparse default 50),
``num_trials = 50`` and ``mask_ratio = 0.99`` (README and argparse), ``rank = 1``
(``run_mmhal_vti.py``), seed 42 (README). A strength of 0 adds no hook at all (the official script
skips ``add_vti_layers`` when an alpha is 0), so ``alpha_image = alpha_text = 0`` is plain greedy
decoding, bit for bit.

**Deviations.**

* Demo set: the first ``num_demos`` scenes of the synthetic world's held-out ``demo`` stream
  (:mod:`plugins.trainers.directions`), asked :data:`plugins.world.CAPTION_PROMPT`. The faithful
  caption is the exact caption (:func:`plugins.world.caption`); the hallucinated one mentions one
  absent object, the one the world's co-occurrence statistics suggest
  (:func:`plugins.world.noisy_caption` with insertion certain and no deletion). Officially: 70 of
  the 100 COCO train2014 images in ``experiments/data/hallucination_vti_demos.jsonl``, whose
  hallucinated captions add co-occurring objects, asked "Describe this image in detail.". A real
  LLaVA checkpoint gets the same world images (resized by its processor); ``world`` picks another
  synthetic world, and no other demo source exists yet.
* Visual PCA grouping: the official code reshapes the ``(layers, tokens, D)`` differences to
  ``(tokens, -1)`` without moving the token axis first, so each PCA row mixes several tokens of
  one layer; here each row is one token across all layers, as the code's own comment describes.
  The mean term, which dominates the direction, is the same either way.
* Hidden states are recorded by forward hooks on the layers, so the last decoder layer's entry is
  its raw output; the ``hidden_states`` the official code reads give it after the final norm.
* The caption follows ``ASSISTANT:`` after a space (officially glued to it), and answers are
  decoded greedily like every method here (the official MMHal run uses 5 beams).

Cost: ``num_demos × (num_trials + 1)`` vision-tower passes and ``2 × num_demos`` full passes,
and the visual differences held on the CPU (``num_demos × (layers + 1) × tokens × width`` floats:
4 GB for LLaVA-1.5's CLIP ViT-L/336 at the defaults), once per model (cached, see :class:`plugins.methods.steering.SteeringMethod`); afterwards one
vector operation per layer and token, no extra forward pass.

>>> VTI().config.alpha_text, VTI().config.scale
(0.9, 0.1)
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from pydantic import Field

from plugins.methods.base import MethodConfig
from plugins.methods.steering import SteeringMethod
from plugins.registry import register_method
from plugins.trainers.vti import steering_hooks, vti_directions

if TYPE_CHECKING:
    from plugins.models.adapter import LlavaAdapter
    from plugins.models.batch import Batch

__all__ = ["VTI"]


@register_method("vti")
class VTI(SteeringMethod):
    """Visual and textual intervention: turn every layer's MLP output towards demo-set directions (Liu et al. 2024)."""

    artifact_kind = "vti-directions"
    trainer = staticmethod(vti_directions)  # every config field decides the directions
    # The same shift at every text position and per image-token position inside the vision tower:
    # a prompt prefix gets the same keys and values however the prompt pass is split.
    shares_prompt_prefixes: ClassVar[bool] = True

    class Config(MethodConfig):
        """VTI's hyper-parameters; defaults from the official README run command and ``llm_layers.py``."""

        alpha_image: float = Field(0.9, ge=0)  # λ of the vision-encoder direction (README --alpha_image 0.9); 0 = none
        alpha_text: float = Field(0.9, ge=0)  # λ of the language-model direction (README --alpha_text 0.9); 0 = none
        scale: float = Field(0.1, ge=0)  # step size multiplying λ, hard-coded 0.1 in VTILayer.forward
        num_demos: int = Field(70, ge=2)  # demo images (README --num_demos 70); at least 2 for a principal axis
        num_trials: int = Field(50, ge=1)  # random masks averaged per demo image (README --num_trials 50)
        mask_ratio: float = Field(0.99, ge=0, le=1)  # share of image patches masked per trial (README --mask_ratio 0.99)
        seed: int = Field(42, ge=0)  # seeds the random masks (README --seed 42)
        world: Optional[dict[str, Any]] = None  # WorldConfig fields of the demo world (default: the default world)

    @property
    def image_strength(self) -> float:
        return self.config.scale * self.config.alpha_image

    @property
    def text_strength(self) -> float:
        return self.config.scale * self.config.alpha_text

    def hooks(self, model: "LlavaAdapter", batch: "Batch") -> contextlib.AbstractContextManager:
        """MLP-output hooks on every vision-encoder and decoder layer whose strength is not 0."""
        if self.image_strength == 0 and self.text_strength == 0:
            return contextlib.nullcontext()
        return steering_hooks(model, self.directions(model), self.image_strength, self.text_strength)
