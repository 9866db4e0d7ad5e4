"""Reproduced numbers (result records from ``results/``) arranged for the site.

A reproduced cell is the mean over the seeds run for one model × benchmark × split × method;
it keeps its records so every number on the site can show where it came from.
Reported numbers (from papers) sit beside reproduced ones only when the result's
``protocol`` names the knowledge-base benchmark they were reported on, and the two
are always labelled: they come from different models, images and hardware.

>>> from plugins.api import ResultRecord
>>> rec = lambda split, acc: ResultRecord.model_validate({"method": "baseline", "benchmark": "pope-synth",
...     "split": split, "model": "tiny", "seed": 0, "n_samples": 6, "metrics": {"accuracy": acc},
...     "seconds_per_input": 0.01, "fingerprint": "ab" * 8, "provenance": {"git_commit": "abcdef0",
...     "dirty": False, "package_versions": {}, "device": "cpu", "dtype": "float32",
...     "decoding": {}, "parser": "p", "date": "2026-11-22"}})
>>> [t] = reproduction_tables([rec("random", 0.5), rec("popular", 0.25)])
>>> t.splits, t.rows[0].cells[("popular", "accuracy")].value
(('random', 'popular'), 0.25)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import fmean
from typing import Iterable, Optional

from plugins.api import BASELINE, COMMON_PROTOCOL, RATE_METRICS, ResultRecord

from .load import KnowledgeBase
from .tables import TABLE1_METRICS, TABLE1_SPLITS

SPLIT_ORDER = TABLE1_SPLITS
POPE_METRICS = TABLE1_METRICS + ("yes_ratio",)
CAPTION_METRICS = ("chair_s", "chair_i", "attr_chair_s", "attr_chair_i", "rel_chair_s", "rel_chair_i", "recall")
REPRESENTATION_METRICS = ("cosine_margin_last", "mutual_knn_last", "linear_cka_last",
                          "cosine_margin_mean", "mutual_knn_mean", "linear_cka_mean")
SHOWN_METRICS = tuple(dict.fromkeys(POPE_METRICS + CAPTION_METRICS + REPRESENTATION_METRICS))
"""Metrics shown in the tables; the rest (counts, unclear_ratio, ...) stay in the records and their predictions."""


@dataclass(frozen=True)
class ReproCell:
    records: tuple[ResultRecord, ...]  # one per seed, sorted by seed
    metric: str
    stale: bool

    @property
    def value(self) -> float:
        return fmean(r.metrics[self.metric] for r in self.records)

    @property
    def display(self) -> str:
        """Rates (fractions in [0, 1]) as percent with one decimal; other metrics (e.g. a cosine margin) as they are."""
        return f"{100 * self.value:.1f}" if self.metric in RATE_METRICS else f"{self.value:.3f}"

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.records)

    @property
    def provenance(self) -> str:
        """One line a reader sees on hover: what was run, on how many samples, from which commit, when."""
        r0 = self.records[0]
        commits = sorted({r.provenance.git_commit[:10] + ("+dirty" if r.provenance.dirty else "") for r in self.records})
        dates = sorted({r.provenance.date[:10] for r in self.records})
        n = sum(r.n_samples for r in self.records)
        text = (f"reproduced · {r0.model} · {r0.benchmark}/{r0.split} · seeds {','.join(map(str, self.seeds))} · "
                f"n={n} · commit {','.join(commits)} · {','.join(dates)} · {r0.provenance.device} {r0.provenance.dtype} · parser {r0.provenance.parser}")
        return text + (" · STALE: the code changed since this ran" if self.stale else "")


@dataclass(frozen=True)
class ReproRow:
    method: str
    cells: dict  # (split, metric) -> ReproCell
    seconds_per_input: float  # mean over the row's records
    stale: bool
    train_seconds: Optional[float] = None  # a tuned method's training run (the longest among the row's records)


@dataclass(frozen=True)
class ReproTable:
    model: str
    benchmark: str
    follows: Optional[str]  # the knowledge-base benchmark whose protocol it follows (reported numbers sit beside it)
    splits: tuple[str, ...]
    metrics: tuple[str, ...]
    rows: list[ReproRow]
    records: list[ResultRecord] = field(default_factory=list)
    protocol: str = COMMON_PROTOCOL  # the decoding protocol every record of the table ran under

    @property
    def anchor(self) -> str:
        suffix = "" if self.protocol == COMMON_PROTOCOL else f"--{self.protocol}"
        return f"{self.model}--{self.benchmark}{suffix}"


def protocol_text(decoding: dict) -> str:
    """A record's decoding settings in words.

    >>> protocol_text({"strategy": "sample", "temperature": 1.0, "top_p": 0.9, "suffix": "Answer with one word.",
    ...                "max_new_tokens": 10})
    'sampling at temperature 1, top-p 0.9; suffix “Answer with one word.”; up to 10 new tokens'
    >>> protocol_text({"strategy": "greedy", "num_beams": 1, "max_new_tokens": 8})
    'greedy; up to 8 new tokens'
    """
    strategy = decoding.get("strategy", "greedy")
    if strategy == "sample":
        text = f"sampling at temperature {decoding.get('temperature', 1.0):g}, top-p {decoding.get('top_p', 1.0):g}"
    elif strategy == "beam":
        text = f"{decoding.get('num_beams')}-beam search"
    else:
        text = str(strategy)
    if decoding.get("suffix"):
        text += f"; suffix “{decoding['suffix']}”"
    if decoding.get("max_new_tokens"):
        text += f"; up to {decoding['max_new_tokens']} new tokens"
    return text


def _ordered(values: Iterable[str], order: tuple[str, ...]) -> tuple[str, ...]:
    values = set(values)
    return tuple(v for v in order if v in values) + tuple(sorted(values - set(order)))


def reproduction_tables(records: list[ResultRecord], stale_cells: frozenset[str] = frozenset()) -> list[ReproTable]:
    """One table per model × benchmark × protocol (the common one first): a row per method (baseline first),
    a cell per split × metric."""
    groups: dict[tuple[str, str, str], list[ResultRecord]] = {}
    for r in records:
        groups.setdefault((r.model, r.benchmark, r.protocol), []).append(r)
    tables = []
    for (model, bench, protocol), recs in sorted(groups.items(), key=lambda kv: (kv[0][:2], kv[0][2] != COMMON_PROTOCOL,
                                                                                 kv[0][2])):
        splits = _ordered((r.split for r in recs), SPLIT_ORDER)
        metrics = (tuple(m for m in SHOWN_METRICS if any(m in r.metrics for r in recs))
                   or _ordered((m for r in recs for m in r.metrics), ()))  # a benchmark with only its own metrics
        by_method: dict[str, dict[str, list[ResultRecord]]] = {}
        for r in sorted(recs, key=lambda r: (r.method, r.split, r.seed)):
            by_method.setdefault(r.method, {}).setdefault(r.split, []).append(r)
        rows = []
        for method in sorted(by_method, key=lambda m: (m != BASELINE, m)):
            cells = {}
            for split, srecs in by_method[method].items():
                stale = any(r.cell in stale_cells for r in srecs)
                for metric in metrics:
                    have = tuple(r for r in srecs if metric in r.metrics)
                    if have:
                        cells[(split, metric)] = ReproCell(have, metric, stale)
            mrecs = [r for srecs in by_method[method].values() for r in srecs]
            trained = [r.provenance.train_seconds for r in mrecs if r.provenance.train_seconds is not None]
            rows.append(ReproRow(method, cells, fmean(r.seconds_per_input for r in mrecs),
                                 any(r.cell in stale_cells for r in mrecs), max(trained) if trained else None))
        tables.append(ReproTable(model, bench, recs[0].follows, splits, metrics, rows, sorted(recs, key=lambda r: r.cell),
                                 protocol))
    return tables


@dataclass(frozen=True)
class SideBySide:
    """Reported and reproduced numbers for one method on one split of one protocol."""

    method: str  # KB method id, or BASELINE
    protocol: str
    split: str
    reported: list  # [(paper id, ReportedResult)]
    reproduced: list  # [ReproTable row cells for this split]: (table, ReproRow)


def side_by_side(kb: KnowledgeBase, tables: list[ReproTable]) -> list[SideBySide]:
    """Pair each reproduced method × split (common protocol) with what papers report for it on the same benchmark."""
    out = []
    keys: dict[tuple[str, str, str], list] = {}
    for t in tables:
        if not t.follows or "accuracy" not in t.metrics or t.protocol != COMMON_PROTOCOL:  # Table 1's terms: accuracy, F1 ...
            continue
        for row in t.rows:
            for split in t.splits:
                if any(s == split for s, _ in row.cells):
                    keys.setdefault((row.method, t.follows, split), []).append((t, row))
    for (method, protocol, split), repro in sorted(keys.items(), key=lambda kv: (kv[0][0] != BASELINE, kv[0])):
        kb_method = None if method == BASELINE else method
        reported = [(pid, r) for pid, p in sorted(kb.papers.items()) for r in p.reported
                    if r.method == kb_method and r.benchmark == protocol and r.split == split]
        out.append(SideBySide(method, protocol, split, reported, repro))
    return out


# ---------------------------------------------------------------- a method's effect against the baseline

