"""ICT's trusted directions: which attention heads tell trusted from untrusted inputs, and which way.

:mod:`plugins.methods.ict` shifts those heads while answering.

:func:`ict_directions` is the trainer the method caches (:func:`plugins.artifacts.cached_artifact`,
kind ``ict-directions``): POPE-style questions on the demo set (:mod:`plugins.trainers.directions`)
answered at the last token with a trusted input (the image, the true answer) and with untrusted
ones (a blurred image, a wrong answer, the asked object hidden); per head a logistic probe scored
by cross-validation (:func:`probe_accuracies`), the best heads kept (:func:`select_heads`) with
their unit mean-difference directions and the spread of the activations along them
(:func:`trusted_directions`).

>>> u, s = trusted_directions(torch.tensor([[[1.0, 0.0]], [[3.0, 0.0]]]), torch.tensor([[[-1.0, 0.0]], [[-3.0, 0.0]]]))
>>> u.tolist(), round(s.item() ** 2, 4)
([[1.0, 0.0]], 5.0)
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from plugins.models.hooks import ForwardHooks
from plugins.trainers.directions import DEMO_BATCH, demo_scenes, encode_with_answers
from plugins.world import build_world

if TYPE_CHECKING:
    from plugins.models.adapter import LlavaAdapter

__all__ = ["ict_directions", "head_shape", "probe_accuracies", "trusted_directions", "select_heads", "gaussian_blur",
           "blur_box", "LEVELS"]

PROBE_C = 1.0  # inverse L2 strength of the probes: sklearn LogisticRegression's default, as officially
QUESTIONS_PER_SCENE = 6  # POPE: 3 present + 3 absent objects per image
LEVELS = {"both": ("image", "object"), "image": ("image",), "object": ("object",)}


# ---------------------------------------------------------------- head selection

def probe_accuracies(x: torch.Tensor, y: torch.Tensor, folds: int, c: float = PROBE_C) -> torch.Tensor:
    """Mean held-out accuracy of a logistic probe per unit: ``x`` (n, U, d), labels ``y`` (n,) in {0, 1} → (U,).

    Folds are contiguous, like sklearn's ``KFold`` without shuffling (shuffle ``x`` first). Each
    probe minimises ``½‖w‖² + c · Σ log(1 + exp(−s·(w·x + b)))`` with ``s = ±1``, as sklearn's
    ``LogisticRegression`` does; all units are fitted together with L-BFGS in float64.
    """
    n = x.shape[0]
    sizes = [n // folds + (1 if i < n % folds else 0) for i in range(folds)]
    bounds = np.cumsum([0] + sizes)
    accuracies = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        test = torch.zeros(n, dtype=torch.bool)
        test[start:stop] = True
        w, b = _fit_logistic(x[~test], y[~test], c)
        predicted = (torch.einsum("nud,ud->nu", x[test].double(), w) + b) > 0  # (n_test, U)
        accuracies.append((predicted == y[test, None].bool()).double().mean(0))
    return torch.stack(accuracies).mean(0).float()


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, c: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (U, d) and intercepts (U,) of U independent L2 logistic regressions on x (n, U, d)."""
    with torch.inference_mode(False), torch.enable_grad():
        x = x.double().clone()  # a normal tensor even if the activations were recorded in inference mode
        sign = (2 * y.double() - 1)[:, None].clone()  # (n, 1): +1 for label 1, -1 for label 0
        w = torch.zeros(x.shape[1], x.shape[2], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, history_size=20, tolerance_grad=1e-6,
                                      tolerance_change=1e-10, line_search_fn="strong_wolfe")

        def objective() -> torch.Tensor:
            optimizer.zero_grad()
            margins = sign * (torch.einsum("nud,ud->nu", x, w) + b)  # (n, U)
            loss = 0.5 * (w * w).sum() + c * F.softplus(-margins).sum()  # the U problems are independent: sum them
            loss.backward()
            return loss

        optimizer.step(objective)
    return w.detach(), b.detach()


def trusted_directions(trusted: torch.Tensor, untrusted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit mean-difference directions (U, d) from untrusted to trusted, and the std (U,) of all activations along them.

    ``trusted`` and ``untrusted`` are (n, U, d); the std is the population std over both sets.

    >>> u, s = trusted_directions(torch.tensor([[[1.0, 0.0]], [[3.0, 0.0]]]), torch.tensor([[[-1.0, 0.0]], [[-3.0, 0.0]]]))
    >>> u.tolist(), round(s.item() ** 2, 4)
    ([[1.0, 0.0]], 5.0)
    """
    units = F.normalize(trusted.float().mean(0) - untrusted.float().mean(0), dim=-1)  # (U, d)
    both = torch.cat([trusted, untrusted]).float()  # (2n, U, d)
    stds = torch.einsum("nud,ud->nu", both, units).std(dim=0, unbiased=False)  # (U,)
    return units, stds


def select_heads(trusted: torch.Tensor, untrusted: torch.Tensor, k: int, folds: int, seed: int) -> dict[str, torch.Tensor]:
    """The ``k`` heads whose probes best tell ``trusted`` from ``untrusted`` (each (n, L, H, hd)), with their shifts.

    Returns ``heads`` (k, 2) as (layer, head), unit ``directions`` (k, hd), ``stds`` (k,) and every
    head's probe ``accuracy`` (L, H). Ties keep the earlier head.
    """
    n, n_layers, n_heads, head_dim = trusted.shape
    x = torch.cat([trusted, untrusted]).reshape(2 * n, n_layers * n_heads, head_dim)  # (2n, U, hd)
    y = torch.cat([torch.zeros(n), torch.ones(n)])  # trusted 0, untrusted 1, as officially
    order = torch.randperm(2 * n, generator=torch.Generator().manual_seed(seed))  # the folds need mixed labels
    accuracy = probe_accuracies(x[order], y[order], folds)  # (U,)
    top = sorted(range(n_layers * n_heads), key=lambda u: (-float(accuracy[u]), u))[:k]
    units, stds = trusted_directions(trusted.reshape(n, -1, head_dim)[:, top], untrusted.reshape(n, -1, head_dim)[:, top])
    return {"heads": torch.tensor([[u // n_heads, u % n_heads] for u in top], dtype=torch.long),
            "directions": units, "stds": stds, "accuracy": accuracy.reshape(n_layers, n_heads)}


# ---------------------------------------------------------------- untrusted images

def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """``image`` (H, W, 3) uint8 blurred by a Gaussian of standard deviation ``sigma`` px (edges replicated)."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()  # (2r+1,)
    planes = torch.from_numpy(image).permute(2, 0, 1)[:, None].float()  # (3, 1, H, W)
    planes = F.pad(planes, (radius, radius, radius, radius), mode="replicate")
    planes = F.conv2d(F.conv2d(planes, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))  # separable
    return planes[:, 0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def blur_box(image: np.ndarray, blurred: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``image`` with the box ``(x0, y0, x1, y1)`` taken from ``blurred``: one object hidden, the rest intact."""
    x0, y0, x1, y1 = box
    out = image.copy()
    out[y0:y1, x0:x1] = blurred[y0:y1, x0:x1]
    return out


# ---------------------------------------------------------------- the trainer

def ict_directions(model: "LlavaAdapter", *, levels: str, head_fraction: float, num_demos: int, folds: int,
                   blur_radius: float, seed: int, world: Optional[dict[str, Any]]) -> dict[str, Any]:
    """Per level, the selected heads with unit directions, stds and every head's probe accuracy (CPU).

    The arguments are :class:`plugins.methods.ict.ICT`'s config fields but ``alpha``, which only
    scales the shift when answering (see its module docstring).
    """
    from plugins.world import existence_questions, render

    world = build_world(world)
    n_scenes = math.ceil(num_demos / QUESTIONS_PER_SCENE)
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, str, str]] = []  # image, blurred, object-hidden, q, label
    for scene in demo_scenes(world, n_scenes, min_objects=QUESTIONS_PER_SCENE // 2):
        image = render(scene, world)
        blurred = gaussian_blur(image, blur_radius)
        for q in existence_questions(scene, world, strategy="random", n=QUESTIONS_PER_SCENE, yes_ratio=0.5):
            hidden = blur_box(image, blurred, scene.get(q.target[0]).bbox) if q.answer == "yes" else blurred
            rows.append((image, blurred, hidden, q.text, q.answer))
    rows = rows[:num_demos]
    questions = [r[3] for r in rows]
    trusted = _head_activations(model, [r[0] for r in rows], questions, [r[4] for r in rows])
    untrusted = {
        "image": lambda: _head_activations(
            model, [r[1] if r[4] == "yes" else r[0] for r in rows], questions, ["yes"] * len(rows)),
        "object": lambda: _head_activations(
            model, [r[2] for r in rows], questions, [r[4] for r in rows]),
    }
    n_layers, n_heads = trusted.shape[1:3]
    k = max(1, round(head_fraction * n_layers * n_heads))
    return {level: select_heads(trusted, untrusted[level](), k, folds, seed)
            for level in LEVELS[levels]}


def head_shape(model: "LlavaAdapter") -> tuple[int, int]:
    """(heads, head_dim) of the language model's attention, from its config and ``o_proj``'s input width."""
    n_heads = int(model.config.text_config.num_attention_heads)
    width = model.decoder_layers[0].self_attn.o_proj.in_features
    if width % n_heads:
        raise ValueError(f"o_proj takes {width} features, not a multiple of num_attention_heads={n_heads}")
    return n_heads, width // n_heads


@torch.no_grad()
def _head_activations(model: "LlavaAdapter", images: Sequence[np.ndarray], questions: Sequence[str],
                      answers: Sequence[str]) -> torch.Tensor:
    """(n, L, H, hd) float32 CPU: every head's output at the last token of ``question`` answered by ``answer``."""
    from plugins.models.batch import Batch
    from plugins.models.compat import cache_keyword

    n_heads, head_dim = head_shape(model)
    chunks = []
    for start in range(0, len(questions), DEMO_BATCH):
        stop = start + DEMO_BATCH
        batch = Batch(images[start:stop], questions[start:stop])
        encoded = encode_with_answers(model, batch, answers[start:stop])
        # Six questions per image: everything before the last token goes into a prompt cache that
        # encodes each image and each shared prefix once; only the last token's pass is read.
        with model.shared_image_features():
            cache, _ = model.prompt_cache(encoded, encoded.prompt_length - 1)
        seen: list[torch.Tensor] = []
        hooks = ForwardHooks()
        for layer in model.decoder_layers:
            hooks.add(layer.self_attn.o_proj, lambda module, args: seen.append(args[0][:, -1].float().cpu()), pre=True)
        with hooks:
            model.model(input_ids=encoded.input_ids[:, -1:], attention_mask=encoded.attention_mask,
                        position_ids=encoded.position_ids[:, -1:], **{cache_keyword(): cache}, use_cache=True,
                        logits_to_keep=1)
        chunks.append(torch.stack(seen, dim=1).reshape(len(batch), len(seen), n_heads, head_dim))  # (B, L, H, hd)
    return torch.cat(chunks)
