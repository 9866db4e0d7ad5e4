"""Reproducible sampling through greedy search: the Gumbel-max trick with per-item seeds.

Drawing a token from ``softmax(l / T)`` (restricted to the top-p nucleus) is the same as taking
``argmax(log_softmax(l / T) + g)`` with ``g`` independent standard Gumbel noise per token. So
:class:`GumbelSampler`, the last logits processor of a sampling protocol, adds that noise and lets
``generate``'s greedy search pick the argmax: the answer is a sample, while every other processor
(a contrastive method's, a plausibility cut) runs exactly as under greedy decoding — the cut's
``-inf`` tokens can never be drawn.

The noise of row ``r`` at generation step ``t`` comes from a generator seeded by the item's seed
(:meth:`plugins.models.batch.Batch.item_seed`: the cell's seed and the item's id) and ``t``, drawn on
the CPU in float64. So an item gets the same draw whatever the batch size, chunking or device,
rows of a contrastive method's extra streams get their item's noise (they stay on its tokens),
and the method and the baseline see the *same* random numbers for an item (common random
numbers: their comparison is paired in the noise as well).

>>> import torch
>>> s = GumbelSampler([7, 8], temperature=1.0, top_p=1.0)
>>> scores = torch.tensor([[0.0, 0.0, float("-inf")], [5.0, 0.0, 0.0]])
>>> out = s(torch.zeros(2, 1, dtype=torch.long), scores)
>>> bool(out[0, 2] == float("-inf")), out.shape
(True, torch.Size([2, 3]))
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch

__all__ = ["GumbelSampler", "step_seed", "nucleus"]


def step_seed(item_seed: int, step: int) -> int:
    """A 63-bit seed for one item's noise at one step."""
    return int.from_bytes(hashlib.sha256(f"{item_seed}:{step}".encode()).digest()[:8], "big") >> 1


def nucleus(logp: torch.Tensor, top_p: float) -> torch.Tensor:
    """``logp`` with every token outside the top-p nucleus set to -inf (the most likely token always stays).

    >>> lp = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    >>> nucleus(lp, 0.7).exp().round(decimals=2).tolist()
    [[0.5, 0.30000001192092896, 0.0]]
    """
    if top_p >= 1.0:
        return logp
    sorted_lp, order = torch.sort(logp, dim=-1, descending=True)
    before = torch.cumsum(sorted_lp.exp(), dim=-1) - sorted_lp.exp()  # probability mass of the tokens ranked above
    drop_sorted = before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logp.masked_fill(drop, float("-inf"))


class GumbelSampler:
    """Turns greedy search into sampling at ``temperature`` within the ``top_p`` nucleus (see the module docstring).

    ``seeds``: one per item of the chunk; rows beyond them (extra streams, item-major beams are not
    allowed) reuse ``seeds[row % len(seeds)]``. One instance serves one ``generate`` call.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float):
        if not seeds:
            raise ValueError("GumbelSampler needs one seed per item, got none")
        self.seeds = [int(s) for s in seeds]
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.step = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        rows, vocab = scores.shape
        if rows % len(self.seeds):
            raise ValueError(f"GumbelSampler: {rows} rows for {len(self.seeds)} items; expected a multiple")
        logp = torch.log_softmax(scores.double() / self.temperature, dim=-1)
        logp = nucleus(logp, self.top_p)
        noise = torch.empty(rows, vocab, dtype=torch.float64)
        for r in range(rows):
            g = torch.Generator().manual_seed(step_seed(self.seeds[r % len(self.seeds)], self.step))
            u = torch.rand(vocab, generator=g, dtype=torch.float64).clamp_(1e-300, 1.0 - 1e-16)
            noise[r] = -torch.log(-torch.log(u))
        self.step += 1
        return (logp + noise.to(logp.device)).to(scores.dtype)
