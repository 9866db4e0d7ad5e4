"""VTI: visual and textual test-time intervention (Liu, Ye and Zou 2024, arXiv 2410.15778, ICLR 2025).

"Reducing Hallucinations in Vision-Language Models via Latent Space Steering". VTI reads two
steering directions off a small demo set and adds them, at every layer, to the vision encoder and
to the language model while new inputs are answered. Official code: github.com/shengliu66/VTI
(read at commit bb5dfee); file and line numbers below refer to it.

**Directions** (computed once per model, :meth:`VTI.compute_directions`). A demo is an image
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

**Intervention** (:func:`steer_toward`): every layer's MLP output ``y`` (each token's vector),
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
  (:mod:`plugins.methods.steering`), asked :data:`plugins.world.CAPTION_PROMPT`. The faithful
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
>>> steer_toward(torch.tensor([3.0, 4.0]), torch.tensor([-7.0, 0.0]), 1.2).tolist()  # turned, norm kept
[-3.0, 4.0]
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from pydantic import Field

from plugins.methods.base import ForwardHooks, MethodConfig
from plugins.methods.steering import (
    DEMO_BATCH, SteeringMethod, demo_scenes, encode_with_answers, layer_states, vision_layers,
)
from plugins.registry import register_method

if TYPE_CHECKING:
    from plugins.models.batch import Batch
    from plugins.models.llava import LlavaAdapter

__all__ = ["VTI", "steer_toward", "SteerOutput", "mean_plus_principal_axis", "mask_patches"]


def steer_toward(x: torch.Tensor, direction: torch.Tensor, strength: float) -> torch.Tensor:
    """``x`` (..., D) turned towards ``direction`` (broadcastable to x) by ``strength``, each vector keeping its norm.

    ``‖x‖ · normalize(x/‖x‖ + strength · direction/‖direction‖)``, computed in float32 and returned
    in ``x``'s dtype; ``x`` is not modified.
    """
    x32 = x.float()
    norm = x32.norm(dim=-1, keepdim=True)  # (..., 1)
    turned = F.normalize(x32, dim=-1) + strength * F.normalize(direction.float(), dim=-1)  # (..., D)
    return (F.normalize(turned, dim=-1) * norm).to(x.dtype)


class SteerOutput:
    """A forward hook replacing a module's output ``y`` (B, T, D) by :func:`steer_toward` ``(y, direction, strength)``."""

    def __init__(self, direction: torch.Tensor, strength: float):
        self.direction = direction  # (D,) for every token, or (T, D) per token position
        self.strength = strength  # scale * alpha

    def __call__(self, module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        return steer_toward(output, self.direction.to(output.device), self.strength)


def mean_plus_principal_axis(diffs: torch.Tensor) -> torch.Tensor:
    """``diffs`` (..., N, F) → (..., F): the mean over N plus the first principal axis of the centred rows.

    The axis is a unit vector whose sign makes the largest-magnitude score (left singular
    vector entry) positive, as ``svd_flip`` does in the official ``pca.py``.

    >>> mean_plus_principal_axis(torch.tensor([[0.0, 1.0], [1.0, 1.0], [5.0, 1.0]])).tolist()
    [3.0, 1.0]
    """
    if diffs.shape[-2] < 2:
        raise ValueError(f"a principal axis needs at least 2 demos, got {diffs.shape[-2]}")
    mean = diffs.mean(dim=-2, keepdim=True)  # (..., 1, F)
    u, _, vh = torch.linalg.svd(diffs - mean, full_matrices=False)  # (..., N, K), (..., K, F)
    scores = u[..., :, 0]  # (..., N)
    sign = torch.sign(scores.gather(-1, scores.abs().argmax(dim=-1, keepdim=True)))  # (..., 1)
    return mean.squeeze(-2) + sign * vh[..., 0, :]


def mask_patches(pixels: torch.Tensor, n_masked: int, patch: int, generator: torch.Generator) -> torch.Tensor:
    """A copy of ``pixels`` (3, H, W) with ``n_masked`` random ``patch``-pixel squares set to the per-channel mean."""
    rows, cols = pixels.shape[1] // patch, pixels.shape[2] // patch
    hit = torch.zeros(rows * cols, dtype=torch.bool)
    hit[torch.randperm(rows * cols, generator=generator)[:n_masked]] = True
    hit = hit.view(rows, cols).repeat_interleave(patch, 0).repeat_interleave(patch, 1)  # (rows·patch, cols·patch)
    full = torch.zeros(pixels.shape[1:], dtype=torch.bool)  # (H, W); a ragged border stays unmasked
    full[:hit.shape[0], :hit.shape[1]] = hit
    return torch.where(full.to(pixels.device), pixels.mean(dim=(1, 2), keepdim=True), pixels)


@register_method("vti")
class VTI(SteeringMethod):
    """Visual and textual intervention: turn every layer's MLP output towards demo-set directions (Liu et al. 2024)."""

    artifact_kind = "vti-directions"
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
        return self._hooks(model, self.directions(model))

    def _hooks(self, model: "LlavaAdapter", directions: dict[str, Any], *, text: bool = True) -> ForwardHooks:
        hooks = ForwardHooks()
        if self.image_strength != 0:
            for layer, direction in zip(vision_layers(model), directions["vision"]):  # direction (T, D)
                hooks.add(_mlp(layer), SteerOutput(direction, self.image_strength))
        if text and self.text_strength != 0:
            for layer, direction in zip(model.decoder_layers, directions["text"]):  # direction (D,)
                hooks.add(_mlp(layer), SteerOutput(direction, self.text_strength))
        return hooks

    # ------------------------------------------------------------ directions

    def compute_directions(self, model: "LlavaAdapter") -> dict[str, Any]:
        """``{"vision": (L_v, T, D_v) or None, "text": (L, D) or None}``, float32 on CPU, from the demo set."""
        from plugins.models.batch import Batch
        from plugins.world import CAPTION_PROMPT, SceneSampler, caption, noisy_caption, render

        world = self.world
        scenes = demo_scenes(world, self.config.num_demos)
        batch = Batch([render(s, world) for s in scenes], [CAPTION_PROMPT] * len(scenes))
        directions: dict[str, Any] = {"vision": None, "text": None}
        if self.image_strength != 0:
            directions["vision"] = self._visual_direction(model, batch)
        if self.text_strength != 0:
            lying = world.model_copy(update={"caption_insert_prob": 1.0, "caption_drop_prob": 0.0})
            sampler = SceneSampler(world)
            faithful = [caption(s, world) for s in scenes]
            hallucinated = [noisy_caption(s, lying, sampler=sampler).text for s in scenes]
            with self._hooks(model, directions, text=False):  # the visual intervention is on, as officially
                directions["text"] = self._textual_direction(model, batch, faithful, hallucinated)
        return directions

    @torch.no_grad()
    def _visual_direction(self, model: "LlavaAdapter", batch: "Batch") -> torch.Tensor:
        patch = int(model.config.vision_config.patch_size)
        generator = torch.Generator().manual_seed(self.config.seed)
        diffs = []
        for i in range(len(batch)):
            pixels = model.encode(batch[i]).pixel_values[0]  # (3, H, W), processed
            n_patches = (pixels.shape[1] // patch) * (pixels.shape[2] // patch)
            n_masked = int(self.config.mask_ratio * n_patches)
            masked = torch.stack([mask_patches(pixels.cpu(), n_masked, patch, generator)
                                  for _ in range(self.config.num_trials)]).to(pixels)  # (K, 3, H, W)
            clear = _vision_states(model, pixels[None])[:, 0]  # (L+1, T, D)
            total = sum(_vision_states(model, masked[s:s + DEMO_BATCH]).sum(1)
                        for s in range(0, len(masked), DEMO_BATCH))  # (L+1, T, D), a running sum keeps memory flat
            diffs.append(total / len(masked) - clear)
        stacked = torch.stack(diffs)  # (N, L+1, T, D)
        n, layers, tokens, width = stacked.shape
        direction = torch.empty(tokens, layers * width)
        for t in range(0, tokens, DEMO_BATCH):  # a few tokens at a time: no second full copy of the differences
            chunk = stacked[:, :, t:t + DEMO_BATCH].permute(2, 0, 1, 3).reshape(-1, n, layers * width)  # (t, N, (L+1)·D)
            direction[t:t + DEMO_BATCH] = mean_plus_principal_axis(chunk)
        direction = direction.reshape(tokens, layers, width).transpose(0, 1)  # (L+1, T, D)
        return direction[1:].contiguous()  # drop the embedding output: one (T, D) per encoder layer

    @torch.no_grad()
    def _textual_direction(self, model: "LlavaAdapter", batch: "Batch", faithful: list[str],
                           hallucinated: list[str]) -> torch.Tensor:
        diffs = []
        for s in range(0, len(batch), DEMO_BATCH):
            chunk = batch[s:s + DEMO_BATCH]
            good = _last_token_states(model, encode_with_answers(model, chunk, faithful[s:s + DEMO_BATCH]))
            bad = _last_token_states(model, encode_with_answers(model, chunk, hallucinated[s:s + DEMO_BATCH]))
            diffs.append(good - bad)  # (B, L+1, D)
        stacked = torch.cat(diffs)  # (N, L+1, D)
        n, layers, width = stacked.shape
        return mean_plus_principal_axis(stacked.reshape(n, layers * width)).reshape(layers, width)[1:].contiguous()


def _mlp(layer: Any) -> Any:
    mlp = getattr(layer, "mlp", None)
    if mlp is None:
        raise TypeError(f"{type(layer).__name__} has no .mlp submodule; VTI steers each layer's MLP output")
    return mlp


def _vision_states(model: "LlavaAdapter", pixels: torch.Tensor) -> torch.Tensor:
    """(L+1, n, T, D) float32 CPU hidden states of the vision tower (embedding output first) for pixels (n, 3, H, W)."""
    with layer_states(vision_layers(model)) as states:
        model.vision_tower(pixels)
    return torch.stack(states)


def _last_token_states(model: "LlavaAdapter", encoded: Any) -> torch.Tensor:
    """(B, L+1, D) float32 CPU hidden states of the language model at every item's last token."""
    with layer_states(model.decoder_layers, lambda h: h[:, -1]) as states:
        model.model(**encoded.model_inputs(), logits_to_keep=1)
    return torch.stack(states, dim=1)
