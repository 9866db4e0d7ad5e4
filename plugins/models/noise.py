"""VCD's diffusion forward process: images pushed along the official noise schedule.

Visual contrastive decoding (:mod:`plugins.methods.vcd`) contrasts the model's answer with its
answer about a noised copy of the image, and the diagnostics (:mod:`plugins.diagnostics`) use the
same noise as a reference picture; both take it from here. The schedule is the official code's:
``β_t = sigmoid(linspace(−6, 6, 1000))_t · (0.5e-2 − 1e-5) + 1e-5``, ``ᾱ_t = Π_{s≤t} (1 − β_s)``, and a
noised image is ``√ᾱ_t · x + √(1 − ᾱ_t) · ε`` with ``ε ~ N(0, I)``.
"""
from __future__ import annotations

import torch

__all__ = ["DIFFUSION_STEPS", "diffusion_alpha_bar", "add_diffusion_noise"]

DIFFUSION_STEPS = 1000  # length of the official noise schedule


def diffusion_alpha_bar(step: int, steps: int = DIFFUSION_STEPS) -> float:
    """ᾱ_step of the official sigmoid schedule: the share of the clean signal's variance kept.

    >>> round(diffusion_alpha_bar(0), 6), round(diffusion_alpha_bar(500), 3), round(diffusion_alpha_bar(999), 3)
    (0.999978, 0.745, 0.081)
    """
    if not 0 <= step < steps:
        raise ValueError(f"noise step {step} is outside the schedule, expected 0 <= step < {steps}")
    betas = torch.sigmoid(torch.linspace(-6, 6, steps)) * (0.5e-2 - 1e-5) + 1e-5
    return float(torch.cumprod(1 - betas, dim=0)[step])


def add_diffusion_noise(pixels: torch.Tensor, step: int, seeds: list[int]) -> torch.Tensor:
    """(N, 3, H, W) preprocessed images → their noised copies at ``step``; image i uses ``seeds[i]``."""
    if len(seeds) != pixels.shape[0]:
        raise ValueError(f"{len(seeds)} seeds for {pixels.shape[0]} images, expected one per image")
    alpha_bar = diffusion_alpha_bar(step)
    noise = torch.stack([torch.randn(pixels.shape[1:], generator=torch.Generator().manual_seed(s)) for s in seeds])
    return (alpha_bar ** 0.5) * pixels + ((1 - alpha_bar) ** 0.5) * noise.to(pixels.device, pixels.dtype)
