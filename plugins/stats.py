"""Paired effects with confidence intervals: the statistics every reproduced verdict rests on.

A method and its reference answer the *same* items, so an effect is a paired difference
(method − reference), reported with a 95 % interval and a two-sided p-value:

* :func:`mcnemar` — yes/no accuracy when every image carries one question (items independent):
  the exact McNemar test on the discordant pairs (``b`` items only the method gets right, ``c``
  only the reference), and the matching exact interval: Clopper–Pearson on ``b / (b + c)``,
  mapped to the accuracy difference ``(b − c) / n`` (conditional on ``b + c``). The interval
  excludes 0 exactly when p < 0.05.
* :func:`cluster_bootstrap` — everything else: POPE's six questions per image, caption metrics
  (ratios of sums over captions), and sampling protocols with several seeds. Images are the
  independent unit, so the bootstrap resamples images (both arms together: paired), and with
  several seeds resamples seeds too; percentile interval, two-sided bootstrap p-value.
* :func:`holm` — Holm's step-down adjustment over the comparisons shown together;
  :func:`verdict` reads better / worse / no detectable change from the adjusted p and the sign.

Pure Python and numpy (no torch, no scipy); every function is deterministic for a given seed.

>>> e = mcnemar([True, True, True, False], [False, False, True, True])
>>> e.effect, e.discordant, round(e.p, 3)
(0.25, (2, 1), 1.0)
>>> holm([0.01, 0.04, 0.03])
[0.03, 0.06, 0.06]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

__all__ = ["Effect", "binom_cdf", "clopper_pearson", "mcnemar_p", "mcnemar", "cluster_bootstrap", "holm",
           "verdict", "VERDICTS", "LEVEL", "ALPHA", "N_BOOT"]

LEVEL = 0.95
"""Confidence level of every interval."""
ALPHA = 0.05
"""A comparison is a detectable change when its Holm-adjusted p-value is below this."""
N_BOOT = 2000
"""Bootstrap replicates: the smallest bootstrap p-value is 1/2001, and percentile bounds move by
about a tenth of the interval's width between seeds of the resampling."""
VERDICTS = ("better", "worse", "no detectable change")


@dataclass(frozen=True)
class Effect:
    """A paired difference method − reference, in the metric's own units (fractions for rates)."""

    effect: float  # the point estimate
    low: float  # lower bound of the LEVEL interval
    high: float  # upper bound
    p: float  # two-sided p-value of "no difference"
    test: str  # "mcnemar-exact" or "cluster-bootstrap"
    n_items: int  # paired items (questions or captions) per seed
    n_clusters: int  # independent units (images)
    n_seeds: int = 1  # seeds pooled (sampling protocols)
    discordant: Optional[tuple[int, int]] = None  # yes/no: (b, c) = (only method right, only reference right), summed over seeds
    replicates: int = 0  # bootstrap replicates (0 for exact tests)
    notes: tuple[str, ...] = field(default=())


# ---------------------------------------------------------------- exact binomial machinery

def _log_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p))


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p), summed exactly in log space (fine for n in the tens of thousands).

    >>> round(binom_cdf(1, 3, 0.5), 12)   # (1 + 3) / 8
    0.5
    >>> round(binom_cdf(0, 10, 0.5), 6)
    0.000977
    """
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    logs = [_log_pmf(i, n, p) for i in range(0, k + 1)]
    top = max(logs)
    if top == -math.inf:
        return 0.0
    return min(1.0, math.exp(top) * math.fsum(math.exp(x - top) for x in logs))


def _bisect(f, lo: float, hi: float, iters: int = 100) -> float:
    """The root of a function increasing from negative at ``lo`` to positive at ``hi``."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        if f(mid) > 0:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def clopper_pearson(x: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact (Clopper–Pearson) interval for a binomial proportion with ``x`` successes in ``n``.

    >>> lo, hi = clopper_pearson(7, 10)
    >>> round(lo, 4), round(hi, 4)
    (0.3475, 0.9333)
    >>> clopper_pearson(0, 5)[0], clopper_pearson(5, 5)[1]
    (0.0, 1.0)
    """
    if not 0 <= x <= n or n < 1:
        raise ValueError(f"clopper_pearson: {x} successes in {n} trials, expected 0 <= x <= n and n >= 1")
    tail = (1 - level) / 2
    # lower: P(X >= x | p) = tail, i.e. 1 - cdf(x - 1) - tail rises with p; upper: cdf(x | p) = tail falls with p
    lo = 0.0 if x == 0 else _bisect(lambda p: (1 - binom_cdf(x - 1, n, p)) - tail, 0.0, 1.0)
    hi = 1.0 if x == n else _bisect(lambda p: tail - binom_cdf(x, n, p), 0.0, 1.0)
    return lo, hi


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: twice the smaller binomial tail of the discordant pairs, at most 1.

    >>> mcnemar_p(0, 0), mcnemar_p(5, 5)
    (1.0, 1.0)
    >>> round(mcnemar_p(10, 2), 4)   # 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * 79 / 4096
    0.0386
    """
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binom_cdf(min(b, c), n, 0.5))


def mcnemar(method_correct: Sequence[bool], reference_correct: Sequence[bool], level: float = LEVEL) -> Effect:
    """Accuracy difference of two paired yes/no answer sets (one question per image), with the exact test.

    >>> e = mcnemar([True] * 10 + [False] * 2 + [True] * 8, [False] * 10 + [True] * 2 + [True] * 8)
    >>> e.effect, e.discordant, round(e.p, 4)
    (0.4, (10, 2), 0.0386)
    >>> round(e.low, 3), round(e.high, 3)   # Clopper-Pearson of 10/12 is (0.5159, 0.9791); (2θ - 1) * 12 / 20
    (0.019, 0.575)
    """
    m = np.asarray(method_correct, dtype=bool)
    r = np.asarray(reference_correct, dtype=bool)
    if m.shape != r.shape or m.ndim != 1 or len(m) == 0:
        raise ValueError(f"mcnemar: answer vectors of shapes {m.shape} and {r.shape}, expected two equal non-empty 1-D")
    b, c, n = int((m & ~r).sum()), int((~m & r).sum()), len(m)
    d = b + c
    if d == 0:
        lo = hi = 0.0
    else:
        t_lo, t_hi = clopper_pearson(b, d, level)
        lo, hi = (2 * t_lo - 1) * d / n, (2 * t_hi - 1) * d / n
    return Effect((b - c) / n, lo, hi, mcnemar_p(b, c), "mcnemar-exact", n, n, 1, (b, c))


# ---------------------------------------------------------------- the paired cluster bootstrap

def _as_grid(a: Sequence, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"cluster_bootstrap: {name} has shape {arr.shape}, expected (seeds, clusters) or (clusters,)")
    return arr


def cluster_bootstrap(method_num: Sequence, method_den: Sequence, reference_num: Sequence, reference_den: Sequence,
                      *, n_items: Optional[int] = None, n_boot: int = N_BOOT, seed: int = 0,
                      level: float = LEVEL, method_minus: Optional[tuple[Sequence, Sequence]] = None,
                      reference_minus: Optional[tuple[Sequence, Sequence]] = None) -> Effect:
    """Paired bootstrap of a ratio-of-sums metric, resampling clusters (images) and seeds.

    Each argument is an array (seeds × clusters), or (clusters,) for one seed, of per-image sums:
    for accuracy ``num`` = questions answered right and ``den`` = questions asked; for CHAIR_i
    hallucinated mentions and object mentions; for CHAIR_s the caption's 0/1 and 1. The metric of
    an arm in one seed is Σ num / Σ den over the images; the effect is the mean over seeds of
    method − reference. A reference with one seed (greedy) is set against every method seed; with
    as many seeds as the method they are paired by position (same seed: the same random numbers).

    Every replicate draws the images once (with replacement) for both arms, and the seeds once
    (with replacement); the interval is the percentile interval of the replicates and the p-value
    twice the share of replicates on the far side of zero ((count + 1) / (n_boot + 1), at most 1).

    >>> e = cluster_bootstrap([1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 1], [1, 1, 1, 1], n_boot=200)
    >>> e.effect, e.low, e.high, e.test
    (0.25, 0.0, 0.75, 'cluster-bootstrap')
    >>> cluster_bootstrap([1, 0], [1, 1], [1, 0], [1, 1], n_boot=50).p   # identical answers: no evidence at all
    1.0

    ``method_minus`` and ``reference_minus`` (``(num, den)``, same shapes as their arm) turn each
    arm's metric into a gap, metric − minus metric on the same clusters (accuracy on random minus
    adversarial questions of the same images, say); the effect is then the difference of gaps,
    and each replicate resamples the clusters of both terms together.

    >>> cluster_bootstrap([1, 1], [1, 1], [1, 1], [1, 1], method_minus=([0, 1], [1, 1]),
    ...                   reference_minus=([1, 1], [1, 1]), n_boot=100).effect   # gaps 0.5 and 0.0
    0.5
    """
    mn, md = _as_grid(method_num, "method_num"), _as_grid(method_den, "method_den")
    rn, rd = _as_grid(reference_num, "reference_num"), _as_grid(reference_den, "reference_den")
    if mn.shape != md.shape or rn.shape != rd.shape or mn.shape[1] != rn.shape[1]:
        raise ValueError(f"cluster_bootstrap: shapes {mn.shape}, {md.shape} (method) and {rn.shape}, {rd.shape} "
                         "(reference) must agree, with the same clusters")
    seeds, clusters = mn.shape
    if rn.shape[0] not in (1, seeds):
        raise ValueError(f"cluster_bootstrap: the reference has {rn.shape[0]} seeds, the method {seeds}; "
                         "expected 1 or the same number")
    if (method_minus is None) != (reference_minus is None):
        raise ValueError("cluster_bootstrap: give method_minus and reference_minus together (a gap in both arms)")
    # Signed terms of the statistic: (+1 method, -1 reference) and, for gaps, their minus terms.
    terms = [(1.0, mn, md), (-1.0, rn, rd)]
    if method_minus is not None and reference_minus is not None:
        mmn, mmd = _as_grid(method_minus[0], "method_minus"), _as_grid(method_minus[1], "method_minus")
        rmn, rmd = _as_grid(reference_minus[0], "reference_minus"), _as_grid(reference_minus[1], "reference_minus")
        if mmn.shape != mn.shape or mmd.shape != mn.shape or rmn.shape != rn.shape or rmd.shape != rn.shape:
            raise ValueError("cluster_bootstrap: a minus term's shape differs from its arm's (same seeds and clusters)")
        terms += [(-1.0, mmn, mmd), (1.0, rmn, rmd)]
    terms = [(sign, np.repeat(n, seeds, axis=0), np.repeat(d, seeds, axis=0)) if n.shape[0] == 1 and seeds > 1
             else (sign, n, d) for sign, n, d in terms]
    if any((d.sum(axis=1) <= 0).any() for _, _, d in terms):
        raise ValueError("cluster_bootstrap: a seed has no denominator at all (no items to score)")
    if n_boot < 1:
        raise ValueError(f"cluster_bootstrap: n_boot is {n_boot}, expected >= 1")

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)

    point = float(np.mean(sum(sign * n.sum(1) / d.sum(1) for sign, n, d in terms)))
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    chunk = max(1, 4_000_000 // max(1, seeds * clusters * len(terms) // 2))  # bound memory: seeds x chunk x clusters floats
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, clusters, size=(b, clusters))
        diff = sum(sign * ratio(n[:, idx].sum(2), d[:, idx].sum(2)) for sign, n, d in terms)  # (S, b)
        pick = rng.integers(0, seeds, size=(b, seeds)) if seeds > 1 else np.zeros((b, 1), dtype=int)
        draws[start:start + b] = diff[pick.T, np.arange(b)[None, :]].mean(axis=0)
    tail = (1 - level) / 2
    lo, hi = np.quantile(draws, [tail, 1 - tail])
    below, above = int((draws <= 0).sum()), int((draws >= 0).sum())
    p = min(1.0, 2 * min(below + 1, above + 1) / (n_boot + 1))
    if np.all(draws == 0):
        p = 1.0
    items = int(round(md[0].sum())) if n_items is None else n_items
    return Effect(point, float(lo), float(hi), float(p), "cluster-bootstrap", items, clusters, seeds,
                  replicates=n_boot)


# ---------------------------------------------------------------- families of comparisons

def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order (the family-wise error stays ≤ α).

    >>> holm([0.04, 0.001, 0.5, 0.02])
    [0.08, 0.004, 0.5, 0.06]
    >>> holm([])
    []
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: (pvalues[i], i))
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def verdict(effect: float, p_adjusted: float, higher_is_better: bool, alpha: float = ALPHA) -> str:
    """``better`` / ``worse`` when the adjusted p-value is below ``alpha``, by the sign; else no detectable change.

    >>> verdict(-0.03, 0.01, higher_is_better=False), verdict(-0.03, 0.01, True), verdict(0.2, 0.2, True)
    ('better', 'worse', 'no detectable change')
    """
    if p_adjusted >= alpha or effect == 0:
        return "no detectable change"
    return "better" if (effect > 0) == higher_is_better else "worse"
