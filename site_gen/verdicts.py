"""Verdict tables: the comparison records (``results/comparisons.json``) grouped as the site shows them.

Each table is one Holm family — a model, benchmark, split, protocol and metric — with a row per
method against its reference: both values, the paired effect and its 95 % interval, the p-value
before and after Holm's adjustment, and the verdict. Rows are ordered best effect first; oracle
stand-ins (a method whose stand-in sees the world's ground truth) come after the others, in a
block of their own, so they never top a ranking. A comparison is *stale* when a record it used has
changed or is stale itself.

>>> effect_text(-0.0312, -0.05, -0.012, rate=True)
'−3.1 [−5.0, −1.2]'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from plugins.api import ComparisonRecord, ResultRecord

__all__ = ["VerdictRow", "VerdictTable", "verdict_tables", "comparison_stale", "effect_text", "verdict_summary",
           "MirageRow", "mirage_rows", "mirage_summary", "METRIC_NAMES"]

METRIC_NAMES = {"accuracy": "accuracy", "chair_s": "CHAIR_s", "chair_i": "CHAIR_i", "attr_chair_i": "attribute CHAIR_i",
                "rel_chair_i": "relation CHAIR_i", "recall": "object recall"}
"""How a compared metric is named in the tables."""


def _signed(x: float) -> str:
    text = f"{x:+.1f}".replace("-", "−")
    return "±0.0" if text in ("+0.0", "−0.0") else text


def effect_text(effect: float, low: float, high: float, rate: bool = True) -> str:
    """An effect and its interval, in points for rates."""
    k = 100.0 if rate else 1.0
    return f"{_signed(k * effect)} [{_signed(k * low)}, {_signed(k * high)}]"


@dataclass(frozen=True)
class VerdictRow:
    c: ComparisonRecord
    stale: bool

    @property
    def effect_text(self) -> str:
        return effect_text(self.c.effect, self.c.low, self.c.high)


@dataclass
class VerdictTable:
    model: str
    benchmark: str
    split: str
    protocol: str
    metric: str
    higher_is_better: bool
    rows: list[VerdictRow] = field(default_factory=list)
    oracles: list[VerdictRow] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "-".join((self.model, self.benchmark, self.split, self.protocol, self.metric)).replace(".", "-")

    @property
    def title(self) -> str:
        return f"{self.benchmark} {self.split}, {METRIC_NAMES.get(self.metric, self.metric)}"

    @property
    def counts(self) -> dict[str, int]:
        out = {"better": 0, "worse": 0, "no detectable change": 0}
        for row in self.rows:
            out[row.c.verdict] += 1
        return out


def comparison_stale(c: ComparisonRecord, records: dict[str, ResultRecord], stale_cells: frozenset[str]) -> bool:
    """Has a record this comparison used changed, gone, or gone stale?"""
    for cell, sha in c.inputs.items():
        r = records.get(cell)
        if r is None or r.predictions_sha256 != sha or cell in stale_cells:
            return True
    return False


def verdict_tables(comparisons: Sequence[ComparisonRecord], records: Sequence[ResultRecord],
                   stale_cells: frozenset[str] = frozenset(), method: Optional[str] = None) -> list[VerdictTable]:
    """The families of ``comparisons`` as tables (only rows of ``method`` when given), in a stable order."""
    by_cell = {r.cell: r for r in records}
    tables: dict[tuple, VerdictTable] = {}
    for c in comparisons:
        if method is not None and c.method != method:
            continue
        key = (c.model, c.benchmark, c.split, c.protocol, c.metric)
        t = tables.setdefault(key, VerdictTable(*key, c.higher_is_better))
        row = VerdictRow(c, comparison_stale(c, by_cell, stale_cells))
        (t.oracles if c.oracle else t.rows).append(row)
    sign = {True: -1.0, False: 1.0}
    for t in tables.values():
        for rows in (t.rows, t.oracles):
            rows.sort(key=lambda r: (sign[t.higher_is_better] * r.c.effect, r.c.method, r.c.reference))
    order = {"accuracy": 0, "chair_s": 1, "chair_i": 2, "attr_chair_i": 3, "rel_chair_i": 4, "recall": 5}
    return sorted(tables.values(), key=lambda t: (t.model, t.benchmark, t.split, t.protocol, order.get(t.metric, 9),
                                                  t.metric))


def verdict_summary(tables: Sequence[VerdictTable]) -> str:
    """One sentence counting the verdicts of a method's comparisons (oracle rows included, said so).

    >>> from plugins.api import ComparisonRecord
    >>> def c(v):
    ...     return ComparisonRecord(method="m", reference="baseline", relation="r", model="x", benchmark="b",
    ...         split="s", protocol="greedy", metric="accuracy", higher_is_better=True, method_value=0.5,
    ...         reference_value=0.5, effect=0.0, low=0.0, high=0.0, p=1.0, p_holm=1.0, family_size=1,
    ...         test="mcnemar-exact", n_items=1, n_clusters=1, verdict=v, inputs={}, input_key="0" * 64)
    >>> t = VerdictTable("x", "b", "s", "greedy", "accuracy", True, [VerdictRow(c("better"), False),
    ...                  VerdictRow(c("no detectable change"), False)])
    >>> verdict_summary([t])
    'Of 2 comparisons, 1 better, 0 worse and 1 with no detectable change (95 % intervals; Holm-adjusted p below 0.05).'
    """
    rows = [row for t in tables for row in (*t.rows, *t.oracles)]
    if not rows:
        return ""
    n = {v: sum(row.c.verdict == v for row in rows) for v in ("better", "worse", "no detectable change")}
    return (f"Of {len(rows)} comparisons, {n['better']} better, {n['worse']} worse and {n['no detectable change']} "
            "with no detectable change (95 % intervals; Holm-adjusted p below 0.05).")


@dataclass(frozen=True)
class MirageRow:
    """One method on one benchmark split and metric: against the baseline sampling as it does, and against greedy."""

    method: str
    benchmark: str
    split: str
    metric: str
    protocol: str  # the method's (sampling) protocol
    vs_same: VerdictRow  # against the baseline under the same sampling protocol: the paper's comparison
    vs_greedy: VerdictRow  # against the greedy baseline: the Mirage paper's question


def mirage_rows(comparisons: Sequence[ComparisonRecord], records: Sequence[ResultRecord],
                stale_cells: frozenset[str] = frozenset()) -> list[MirageRow]:
    """Methods compared under a sampling protocol both with the baseline sampling and with the common
    (greedy) baseline, paired up (arXiv 2504.10020's question: does the gain survive the greedy baseline?)."""
    by_cell = {r.cell: r for r in records}
    same: dict[tuple, ComparisonRecord] = {}
    cross: dict[tuple, ComparisonRecord] = {}
    for c in comparisons:
        if c.reference != "baseline" or c.method == "baseline":
            continue
        if c.protocol.endswith("-vs-common"):
            cross[(c.model, c.method, c.benchmark, c.split, c.metric, c.protocol[:-len("-vs-common")])] = c
        elif c.protocol != "common" and c.n_seeds > 1:
            same[(c.model, c.method, c.benchmark, c.split, c.metric, c.protocol)] = c
    rows = []
    for key in sorted(set(same) & set(cross)):
        _, method, bench, split, metric, protocol = key
        rows.append(MirageRow(method, bench, split, metric, protocol,
                              VerdictRow(same[key], comparison_stale(same[key], by_cell, stale_cells)),
                              VerdictRow(cross[key], comparison_stale(cross[key], by_cell, stale_cells))))
    return rows


def mirage_summary(rows: Sequence[MirageRow]) -> str:
    """The answer in one sentence, counted from the rows.

    >>> mirage_summary([])
    ''
    """
    if not rows:
        return ""
    n = len(rows)
    beat_same = sum(r.vs_same.c.verdict == "better" for r in rows)
    beat_greedy = sum(r.vs_greedy.c.verdict == "better" for r in rows)
    worse_greedy = sum(r.vs_greedy.c.verdict == "worse" for r in rows)
    return (f"Of {n} method × benchmark comparisons, the method beats the baseline sampling the same way in {beat_same} "
            f"(the comparison its paper makes) and beats greedy decoding in {beat_greedy}; it is worse than greedy "
            f"in {worse_greedy}.")
