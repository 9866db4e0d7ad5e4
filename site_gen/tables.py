"""The survey's three tables, rebuilt from the records (never typed in by hand).

Each function returns plain data (lists of rows) so tests can check the facts and
templates can lay them out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .load import KnowledgeBase

SURVEY_ID = "shu2025-alignment-misalignment-survey"
TABLE1_SPLITS = ("random", "adversarial", "popular")  # the survey's column order
TABLE1_METRICS = ("accuracy", "precision", "recall", "f1")


@dataclass(frozen=True)
class Table1Row:
    method: Optional[str]  # None: the unmitigated baseline
    label: str
    cells: dict  # (split, metric) -> value as printed, or None for an empty cell
    seconds_per_input: Optional[float]


def survey_table1(kb: KnowledgeBase, model: str = "llava-1.5-7b", benchmark: str = "pope") -> list[Table1Row]:
    """Survey Table 1: POPE accuracy/precision/recall/F1 per split and seconds per input, per method."""
    survey = kb.papers.get(SURVEY_ID)
    if survey is None:
        return []
    rows: dict[Optional[str], dict] = {}
    for r in survey.reported:
        if r.model != model or r.benchmark != benchmark:
            continue
        row = rows.setdefault(r.method, {"cells": {}, "cost": None})
        for metric in TABLE1_METRICS:
            row["cells"][(r.split, metric)] = r.metrics.get(metric)
        if r.cost and r.cost.seconds_per_input is not None:
            row["cost"] = r.cost.seconds_per_input
    out = []
    for method, row in rows.items():  # insertion order = order printed in the survey record
        if method is None:
            label = f"Baseline {kb.models[model].name}" if model in kb.models else "Baseline"
        else:
            label = kb.methods[method].name if method in kb.methods else method
        out.append(Table1Row(method, label, row["cells"], row["cost"]))
    return out


def survey_table2(kb: KnowledgeBase) -> list:
    """Survey Table 2: vision encoder, adapter and LLM of the models whose components come from it."""
    return sorted((m for m in kb.models.values() if m.components_source == "survey Table 2"), key=lambda m: m.name.lower())


def survey_table3(kb: KnowledgeBase) -> list:
    """Survey Table 3: the five evaluation dimensions and evaluator type of each benchmark in it."""
    return sorted((b for b in kb.benchmarks.values() if b.dimensions_source == "survey Table 3"), key=lambda b: b.name.lower())


# ---------------------------------------------------------------- coverage matrices (not in the survey; built from the records)


@dataclass(frozen=True)
class CoverageRow:
    key: str  # method id or family taxonomy id
    counts: tuple  # one entry per column


def coverage_methods_levels(kb: KnowledgeBase) -> tuple[tuple[str, ...], list[CoverageRow]]:
    """Methods × the three misalignment levels: 1 where the method targets that level; rows ordered by family."""
    levels = ("object", "attribute", "relation")
    rows = [CoverageRow(mid, tuple(int(lvl in m.targets.levels) for lvl in levels))
            for mid, m in sorted(kb.methods.items(), key=lambda kv: (kv[1].family, kv[1].name.lower()))]
    return levels, rows


def coverage_families_causes(kb: KnowledgeBase) -> tuple[tuple[str, ...], list[CoverageRow]]:
    """Mitigation families × causes of misalignment: how many methods of the family address the cause."""
    causes = tuple(sorted(k for k, n in kb.taxonomy.items() if n.kind == "cause"))
    families = sorted(k for k, n in kb.taxonomy.items() if n.kind == "family")
    rows = []
    for fam in families:
        members = [m for m in kb.methods.values() if m.family == fam]
        rows.append(CoverageRow(fam, tuple(sum(1 for m in members if c.split("/", 1)[1] in m.targets.causes) for c in causes)))
    return causes, rows
