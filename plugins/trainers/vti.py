"""VTI's steering directions and the intervention they are trained under (:mod:`plugins.methods.vti` answers with them).

:func:`vti_directions` is the trainer the method caches (:func:`plugins.artifacts.cached_artifact`,
kind ``vti-directions``): from the demo set (:mod:`plugins.trainers.directions`), the visual
direction per vision-encoder layer and image token (masked minus clear images) and the textual
one per decoder layer (faithful minus hallucinated captions, read with the visual intervention
already on, as the official script does). Each is the mean difference plus the first principal
axis (:func:`mean_plus_principal_axis`). The intervention itself, :func:`steer_toward` through
:func:`steering_hooks`, lives here because training the textual direction runs it; the method
uses the same code to answer.

>>> steer_toward(torch.tensor([3.0, 4.0]), torch.tensor([-7.0, 0.0]), 1.2).tolist()  # turned, norm kept
[-3.0, 4.0]
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F

from plugins.models.hooks import ForwardHooks
from plugins.trainers.directions import DEMO_BATCH, demo_scenes, encode_with_answers, layer_states, vision_layers
from plugins.world import build_world

if TYPE_CHECKING:
    from plugins.models.adapter import LlavaAdapter
    from plugins.models.batch import Batch

__all__ = ["vti_directions", "steering_hooks", "steer_toward", "SteerOutput", "mean_plus_principal_axis",
           "mask_patches"]


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


def steering_hooks(model: "LlavaAdapter", directions: dict[str, Any], image_strength: float,
                   text_strength: float) -> ForwardHooks:
    """:class:`SteerOutput` hooks on every vision-encoder and decoder layer's MLP, where that strength is not 0.

    ``directions`` holds ``"vision"``: one (T, D) direction per encoder layer, and ``"text"``: one
    (D,) per decoder layer. Answering uses both; training the textual direction, the visual one only.
    """
    hooks = ForwardHooks()
    if image_strength != 0:
        for layer, direction in zip(vision_layers(model), directions["vision"]):  # direction (T, D)
            hooks.add(_mlp(layer), SteerOutput(direction, image_strength))
    if text_strength != 0:
        for layer, direction in zip(model.decoder_layers, directions["text"]):  # direction (D,)
            hooks.add(_mlp(layer), SteerOutput(direction, text_strength))
    return hooks


def vti_directions(model: "LlavaAdapter", *, alpha_image: float, alpha_text: float, scale: float, num_demos: int,
                   num_trials: int, mask_ratio: float, seed: int, world: Optional[dict[str, Any]]) -> dict[str, Any]:
    """``{"vision": (L_v, T, D_v) or None, "text": (L, D) or None}``, float32 on CPU, from the demo set.

    The arguments are :class:`plugins.methods.vti.VTI`'s config fields (see its module docstring).
    """
    from plugins.models.batch import Batch
    from plugins.world import CAPTION_PROMPT, SceneSampler, caption, noisy_caption, render

    image_strength, text_strength = scale * alpha_image, scale * alpha_text
    world = build_world(world)
    scenes = demo_scenes(world, num_demos)
    batch = Batch([render(s, world) for s in scenes], [CAPTION_PROMPT] * len(scenes))
    directions: dict[str, Any] = {"vision": None, "text": None}
    if image_strength != 0:
        directions["vision"] = _visual_direction(model, batch, num_trials, mask_ratio, seed)
    if text_strength != 0:
        lying = world.model_copy(update={"caption_insert_prob": 1.0, "caption_drop_prob": 0.0})
        sampler = SceneSampler(world)
        faithful = [caption(s, world) for s in scenes]
        hallucinated = [noisy_caption(s, lying, sampler=sampler).text for s in scenes]
        with steering_hooks(model, directions, image_strength, 0.0):  # the visual intervention is on, as officially
            directions["text"] = _textual_direction(model, batch, faithful, hallucinated)
    return directions


@torch.no_grad()
def _visual_direction(model: "LlavaAdapter", batch: "Batch", num_trials: int, mask_ratio: float,
                      seed: int) -> torch.Tensor:
    """(L_v, T, D_v): mean over ``num_trials`` random masks of the hidden-state change, per layer and token."""
    patch = int(model.config.vision_config.patch_size)
    generator = torch.Generator().manual_seed(seed)
    diffs = []
    for i in range(len(batch)):
        pixels = model.encode(batch[i]).pixel_values[0]  # (3, H, W), processed
        n_patches = (pixels.shape[1] // patch) * (pixels.shape[2] // patch)
        n_masked = int(mask_ratio * n_patches)
        masked = torch.stack([mask_patches(pixels.cpu(), n_masked, patch, generator)
                              for _ in range(num_trials)]).to(pixels)  # (K, 3, H, W)
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
def _textual_direction(model: "LlavaAdapter", batch: "Batch", faithful: list[str],
                       hallucinated: list[str]) -> torch.Tensor:
    """(L, D): faithful minus hallucinated caption, at the last token of every decoder layer."""
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
