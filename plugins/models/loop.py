"""The training loop shared by the tiny LLaVA's stages and the tuning methods.

Used by :mod:`plugins.embedded.train` (stages 0-3) and :mod:`plugins.tuning.trainer` (the tuned methods).

One stage is :func:`run_stage`: AdamW with weight decay on matrices only, a linear warm-up then
cosine decay to 10 % of the peak rate (:func:`learning_rate`), the gradient norm clipped at 1, a
tqdm bar, and a log of the per-step losses. Batches are drawn by :func:`index_batches` (shuffled
per epoch with ``seed + epoch``) or :func:`length_grouped_batches` (similar lengths together).

>>> stage = StageConfig(steps=10, batch_size=4, lr=1e-3, warmup=2)
>>> [round(learning_rate(s, stage), 6) for s in (0, 1, 2, 9)]
[0.0005, 0.001, 0.001, 0.000134]
"""
from __future__ import annotations

import math
import random
import time
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from pydantic import Field
from tqdm.auto import tqdm

from plugins.config import StrictConfig

__all__ = ["StageConfig", "seed_everything", "index_batches", "length_grouped_batches", "learning_rate", "optimizer",
           "run_stage"]


class StageConfig(StrictConfig):
    """Optimiser settings of one stage (AdamW, linear warm-up, cosine decay to 10 % of the peak)."""

    steps: int = Field(ge=0)  # optimiser steps (0 skips the stage)
    batch_size: int = Field(ge=1)  # sequences (or image-caption pairs) per step
    lr: float = Field(gt=0)  # peak learning rate
    warmup: int = Field(default=20, ge=0)  # linear warm-up steps
    weight_decay: float = Field(default=0.0, ge=0)  # AdamW weight decay (matrices only)



def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def index_batches(n: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Endless shuffled batches of indices into ``n`` items; epoch ``e`` is shuffled with ``seed + e``."""
    epoch = 0
    while True:
        order = np.random.default_rng(seed + epoch).permutation(n)  # (n,)
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            yield order[start:start + batch_size]
        epoch += 1


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, window: int) -> Iterator[np.ndarray]:
    """Endless batches of indices whose items have similar ``lengths``, so little of a batch is padding.

    Each epoch (shuffled with ``seed + e``, as :func:`index_batches`) is cut into windows of
    ``window * batch_size`` items; a window is sorted by length and cut into batches, and the
    epoch's batches are then shuffled. This is the length-grouped sampling of Hugging Face's
    ``Trainer(group_by_length=True)``; ``window = 1`` gives plain shuffled batches.

    >>> batches = length_grouped_batches([1, 9, 2, 8, 3, 7, 4, 6], 2, seed=0, window=4)
    >>> sorted(sorted(int(i) for i in next(batches)) for _ in range(4))
    [[0, 2], [1, 3], [4, 6], [5, 7]]
    """
    n = len(lengths)
    lengths = np.asarray(lengths)
    epoch = 0
    while True:
        rng = np.random.default_rng(seed + epoch)
        order = rng.permutation(n)  # (n,)
        span = window * batch_size
        batches = []
        for start in range(0, n, span):
            part = order[start:start + span]
            part = part[np.argsort(-lengths[part], kind="stable")]  # longest first within the window
            batches += [part[i:i + batch_size] for i in range(0, len(part) - batch_size + 1, batch_size)]
        if not batches:  # fewer items than one batch: one short batch, as index_batches does
            batches = [order]
        for k in rng.permutation(len(batches)):
            yield batches[k]
        epoch += 1


def learning_rate(step: int, stage: StageConfig) -> float:
    """Linear warm-up to ``stage.lr``, then cosine decay to 10 % of it at the last step."""
    if step < stage.warmup:
        return stage.lr * (step + 1) / stage.warmup
    progress = (step - stage.warmup) / max(1, stage.steps - stage.warmup)
    return stage.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def optimizer(params: Sequence[tuple[str, torch.nn.Parameter]], stage: StageConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not on norms, biases, the CLIP temperature)."""
    decay = [p for _, p in params if p.ndim >= 2]
    other = [p for _, p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": stage.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=stage.lr, betas=(0.9, 0.98), eps=1e-8)


def run_stage(name: str, model: torch.nn.Module, stage: StageConfig, loss_fn: Callable[[int], torch.Tensor],
              progress: bool = True, after_step: Optional[Callable[[], None]] = None) -> dict[str, Any]:
    """Optimise the trainable parameters of ``model`` for ``stage.steps`` steps of ``loss_fn(step)``.

    Returns the stage's log: per-step losses, wall seconds, trainable parameter count.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = optimizer(params, stage)
    losses: list[float] = []
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(stage.steps), desc=name, disable=not progress, mininterval=1.0)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, stage)
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        if after_step is not None:
            after_step()
        losses.append(round(float(loss.detach()), 5))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    model.eval()
    return {
        "name": name, "steps": stage.steps, "batch_size": stage.batch_size, "lr": stage.lr,
        "seconds": round(time.perf_counter() - t0, 2),
        "trainable_parameters": sum(p.numel() for _, p in params),
        "loss_first10": round(float(np.mean(losses[:10])), 4) if losses else None,
        "loss_last10": round(float(np.mean(losses[-10:])), 4) if losses else None,
        "losses": losses,
    }
