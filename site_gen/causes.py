"""The survey's causes as experiments: effects with confidence intervals, and diagnostics tables.

A cause node of the taxonomy may name ``experiments`` (:class:`site_gen.schema.CauseExperiment`):
two arms of ``plugins/reproduce.yaml`` (method labels) and the number that should move. For
each training seed that both arms ran, the effect is treated minus control (for a gap, each arm's
``measure`` minus its ``minus`` first). The interval is the one the comparison records use
(:func:`plugins.compare.gap_effect`): a paired cluster bootstrap over the test images and the
training seeds, read from the arms' per-question predictions, so a gap between two splits of the
same images is resampled jointly. Only where no predictions are at hand (records from elsewhere)
does it fall back to Student's t over the seeds, and says so. The verdict is *confirmed* when the
interval lies entirely on the predicted side of zero, *contradicted* when it lies entirely on the
other side, and *not confirmed* otherwise.

>>> effect_interval([2.0, 4.0, 3.0])
(3.0, 0.515..., 5.484...)
>>> verdict("increase", 0.5, 5.5), verdict("decrease", 0.5, 5.5), verdict("increase", -1.0, 5.0)
('confirmed', 'contradicted', 'not confirmed')
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from statistics import fmean, stdev
from typing import Optional

from pathlib import Path

from plugins.api import RATE_METRICS, ResultRecord

from .load import KnowledgeBase
from .schema import CauseExperiment, Measure, TaxonomyNode

DIAGNOSTICS_BENCHMARK = "world-diagnostics"
"""Records of this benchmark are diagnostics (visual dependence, attention, logit lens), shown on their own page."""

T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         15: 2.131, 20: 2.086, 30: 2.042}
"""Two-sided 95 % quantiles of Student's t by degrees of freedom (a missing df uses the next smaller one)."""


def t_quantile(df: int) -> float:
    if df < 1:
        raise ValueError(f"degrees of freedom {df}, expected >= 1")
    return T_975[max(k for k in T_975 if k <= df)] if df <= 30 else 1.96


def effect_interval(diffs: list[float]) -> tuple[float, Optional[float], Optional[float]]:
    """Mean of paired differences and its 95 % t-interval (None, None with fewer than two)."""
    mean = fmean(diffs)
    if len(diffs) < 2:
        return mean, None, None
    half = t_quantile(len(diffs) - 1) * stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def verdict(expect: str, low: Optional[float], high: Optional[float]) -> str:
    if low is None or high is None:
        return "too few seeds"
    if (expect == "increase" and low > 0) or (expect == "decrease" and high < 0):
        return "confirmed"
    if (expect == "increase" and high < 0) or (expect == "decrease" and low > 0):
        return "contradicted"
    return "not confirmed"


def scale(metric: str) -> float:
    """Rates are shown in percent (points), other metrics as they are."""
    return 100.0 if metric in RATE_METRICS or metric == "accuracy" else 1.0


def describe(m: Measure, minus: Optional[Measure] = None) -> str:
    text = f"{m.metric} on {m.benchmark}/{m.split}"
    if minus is not None:
        text = f"{m.metric} on {m.benchmark}/{m.split} minus {minus.metric} on {minus.benchmark}/{minus.split}"
    return text + (" (points)" if scale(m.metric) == 100.0 else "")


@dataclass(frozen=True)
class SeedRow:
    seed: int
    control: float
    treated: float

    @property
    def effect(self) -> float:
        return self.treated - self.control


@dataclass(frozen=True)
class CauseResult:
    cause: str  # full taxonomy id
    node: TaxonomyNode
    experiment: CauseExperiment
    rows: list[SeedRow]
    mean: Optional[float]
    low: Optional[float]
    high: Optional[float]
    verdict: str
    stale: bool
    records: list[ResultRecord]
    interval: str = "t over seeds"  # how the interval was made: "bootstrap over images and seeds" or "t over seeds"
    p: Optional[float] = None  # the bootstrap's two-sided p-value (None for the t fallback)

    @property
    def measure_text(self) -> str:
        return describe(self.experiment.measure, self.experiment.minus)

    anchor: str = ""  # HTML id of its section, unique on the page (set by cause_results)


def _value(index: dict, label: str, m: Measure, seed: int) -> Optional[float]:
    r = index.get((label, m.benchmark, m.split, seed))
    return None if r is None or m.metric not in r.metrics else r.metrics[m.metric] * scale(m.metric)


BOOTSTRAP = "bootstrap over images and seeds"
T_OVER_SEEDS = "t over seeds"


def _bootstrap(exp: CauseExperiment, used: dict[tuple[str, str], list[ResultRecord]], results_dir: Path
               ) -> Optional[tuple[float, float, float, float]]:
    """(effect, low, high, p) in display units from the arms' predictions, or None when they cannot be read."""
    from plugins.api import result_path
    from plugins.compare import ComparisonError, gap_effect, read_items, stable_seed  # stable_seed: one seed rule for every bootstrap

    def tables(arm: str, which: str) -> Optional[list]:
        out = []
        for r in used[(arm, which)]:
            try:
                t = read_items(result_path(results_dir, r), r)
            except (ComparisonError, OSError, ValueError):
                return None
            if t is None:
                return None
            out.append(t)
        return out

    m = exp.measure
    parts = {(arm, which): tables(arm, which) for arm, which in used}
    if any(v is None for v in parts.values()):
        return None
    what = f"{exp.experiment}: {exp.treated} vs {exp.control}"
    minus = ({"method_minus": parts[(exp.treated, "minus")], "reference_minus": parts[(exp.control, "minus")],
              "minus_metric": exp.minus.metric} if exp.minus is not None else {})
    try:
        e = gap_effect(parts[(exp.treated, "measure")], parts[(exp.control, "measure")], m.metric, what=what,
                       seed=stable_seed(exp.experiment, exp.treated, exp.control, m.benchmark, m.split, m.metric),
                       **minus)
    except (ComparisonError, ValueError):
        return None
    k = scale(m.metric)
    return e.effect * k, e.low * k, e.high * k, e.p


def cause_results(kb: KnowledgeBase, records: list[ResultRecord], stale_cells: frozenset[str] = frozenset(),
                  results_dir: Optional[Path] = None) -> list[CauseResult]:
    """Every cause experiment of the knowledge base with what the records say about it (empty rows if not run).

    With ``results_dir`` (where the records' predictions are) the intervals are bootstrapped over
    images and seeds; without, or where predictions cannot be read, Student's t over the seeds.
    """
    index = {(r.method, r.benchmark, r.split, r.seed): r for r in records}
    out = []
    anchors: set[str] = set()
    for full, node in sorted(kb.taxonomy.items()):
        for exp in node.experiments:
            seeds = sorted({s for (label, b, sp, s) in index if label in (exp.control, exp.treated)})
            rows, used = [], []
            arms_used: dict[tuple[str, str], list[ResultRecord]] = {}
            for seed in seeds:
                values = {}
                for arm in (exp.control, exp.treated):
                    v = _value(index, arm, exp.measure, seed)
                    if v is not None and exp.minus is not None:
                        w = _value(index, arm, exp.minus, seed)
                        v = None if w is None else v - w
                    values[arm] = v
                if None in values.values():
                    continue
                rows.append(SeedRow(seed, values[exp.control], values[exp.treated]))
                for arm in (exp.control, exp.treated):
                    for which, m in (("measure", exp.measure), ("minus", exp.minus)):
                        if m is not None:
                            used.append(index[(arm, m.benchmark, m.split, seed)])
                            arms_used.setdefault((arm, which), []).append(used[-1])
            interval, p = T_OVER_SEEDS, None
            mean = low = high = None
            if rows:
                boot = _bootstrap(exp, arms_used, results_dir) if results_dir is not None else None
                if boot is not None:
                    (mean, low, high, p), interval = boot, BOOTSTRAP
                else:  # the named fallback: Student's t over the seeds' differences
                    mean, low, high = effect_interval([r.effect for r in rows])
            out.append(CauseResult(full, node, exp, rows, mean, low, high,
                                   verdict(exp.expect, low, high) if rows else "not run yet",
                                   any(r.cell in stale_cells for r in used), sorted({r.cell: r for r in used}.values(), key=lambda r: r.cell),
                                   anchor=_unique_anchor(full, exp, anchors), interval=interval, p=p))
    return out


def _unique_anchor(cause: str, exp: CauseExperiment, taken: set[str]) -> str:
    """``cause--experiment--benchmark-split-metric``, numbered when two experiments of a cause measure the same."""
    m = exp.measure
    base = re.sub(r"[^a-z0-9-]+", "-", f"{cause.replace('/', '-')}--{exp.experiment}--{m.benchmark}-{m.split}-{m.metric}".lower())
    anchor, n = base, 1
    while anchor in taken:
        n += 1
        anchor = f"{base}-{n}"
    taken.add(anchor)
    return anchor


def cause_arms(kb: KnowledgeBase) -> frozenset[str]:
    """Method labels that are arms of cause experiments: their records belong on the causes page, not beside methods."""
    return frozenset(label for node in kb.taxonomy.values() for e in node.experiments for label in (e.control, e.treated))


# ---------------------------------------------------------------- diagnostics

DIAGNOSTIC_COLUMNS = (("accuracy", "accuracy %"), ("vd_blank", "VD blank"), ("vd_blank_correct", "VD blank, correct"),
                      ("vd_blank_hallucinated", "VD blank, halluc."), ("vd_noise", "VD noise"), ("vd_none", "VD no image"),
                      ("image_attention_mean", "image attention"))
"""Columns of the diagnostics tables: (metric, header). VD = visual dependence in nats."""


@dataclass(frozen=True)
class DiagnosticsTable:
    model: str
    split: str
    rows: list[tuple[str, dict[str, float], bool]]  # (method, metric -> mean over seeds, stale)
    records: list[ResultRecord]


def diagnostics_tables(records: list[ResultRecord], arms: frozenset[str] = frozenset(),
                       stale_cells: frozenset[str] = frozenset()) -> list[DiagnosticsTable]:
    """One table per model x split of ``world-diagnostics``: a row per method (baseline first; cause arms left out)."""
    from plugins.api import BASELINE

    groups: dict[tuple[str, str], dict[str, list[ResultRecord]]] = {}
    for r in records:
        if r.benchmark == DIAGNOSTICS_BENCHMARK and r.method not in arms:
            groups.setdefault((r.model, r.split), {}).setdefault(r.method, []).append(r)
    order = ("pope-random", "pope-popular", "pope-adversarial", "attribute-random", "attribute-adversarial", "relation")
    tables = []
    for (model, split), by_method in sorted(groups.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]) if kv[0][1] in order else 99)):
        rows = []
        for method in sorted(by_method, key=lambda m: (m != BASELINE, m)):
            recs = by_method[method]
            means = {k: fmean(r.metrics[k] for r in recs) for k in recs[0].metrics if all(k in r.metrics for r in recs)}
            rows.append((method, means, any(r.cell in stale_cells for r in recs)))
        tables.append(DiagnosticsTable(model, split, rows, sorted((r for rs in by_method.values() for r in rs), key=lambda r: r.cell)))
    return tables


def layer_series(table: DiagnosticsTable, prefix: str) -> dict[str, list[float]]:
    """Per method, the per-layer values of ``<prefix>_l<k>`` in layer order."""
    out = {}
    for method, means, _ in table.rows:
        keys = sorted((k for k in means if k.startswith(prefix + "_l") and k[len(prefix) + 2:].isdigit()),
                      key=lambda k: int(k[len(prefix) + 2:]))
        if keys:
            out[method] = [means[k] for k in keys]
    return out


def method_diagnostics(tables: list[DiagnosticsTable], method: str) -> list[tuple[str, str, dict[str, float], dict[str, float]]]:
    """Per diagnostics table holding both: (model, split, baseline's means, the method's means)."""
    from plugins.api import BASELINE

    out = []
    for t in tables:
        rows = {name: means for name, means, _ in t.rows}
        if method != BASELINE and method in rows and BASELINE in rows:
            out.append((t.model, t.split, rows[BASELINE], rows[method]))
    return out
