"""Comparison records: each method against its references, paired by item, with intervals and verdicts.

A verdict on the site comes from here and nowhere else. For every pair the matrix declares
(:func:`comparison_pairs`: each method of an experiment with a ``reference``, plus the matrix's
method-specific ``comparisons``, e.g. OPERA against 5-beam search and rDPO against DPO), on every
model / benchmark / split where both arms have records under the same protocol, and for every
metric the benchmark's predictions can score per item (:data:`ITEM_METRICS`):

1. both arms' predictions are read and paired by question id (the questions, labels and images
   must agree, or the pair is refused with the reason);
2. each arm's metric is recomputed from the items and must equal its record's metric — the
   per-item reading can never drift from the benchmark's scorer unnoticed;
3. the paired effect and its 95 % interval come from :mod:`plugins.stats`: the exact McNemar test
   when yes/no items are independent (one per image, one seed), otherwise the paired bootstrap over
   images (and seeds, for sampling protocols);
4. Holm's adjustment runs over each *family* — the comparisons of one table: same model,
   benchmark, split, protocol and metric — and the verdict follows from the adjusted p-value and
   the sign (``better`` / ``worse`` / ``no detectable change``).

A method whose stand-in sees the world's ground truth is an *oracle*: its class body says why in a
string literal, ``oracle = "..."`` (Woodpecker's detector is trained on the world's exact labels).
:func:`oracle_of` reads it from the source without importing the plugin, and its comparison
records carry the reason, for the site to rank them apart.

:func:`write_comparisons` writes ``results/comparisons.json`` (sorted, stable) and recomputes only
the comparisons whose inputs changed: each entry is keyed by the predictions hashes of its cells,
the statistics settings and the code of this module.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Optional, Sequence

import numpy as np

from plugins.api import (
    BASELINE, COMPARISONS_NAME, COMPARISONS_VERSION, ComparisonRecord, ResultRecord, predictions_problem,
    read_comparisons, result_path,
)
from plugins.files import write_atomic
from plugins.stats import ALPHA, LEVEL, N_BOOT, Effect, cluster_bootstrap, holm, mcnemar, verdict

__all__ = ["ITEM_METRICS", "PairSpec", "ItemTable", "read_items", "compare_arms", "comparison_pairs",
           "compute_comparisons", "write_comparisons", "oracle_of", "ComparisonError", "SAME_PROTOCOL"]

SAME_PROTOCOL = "same-protocol baseline"
"""The relation of a method to the baseline decoded the same way."""


class ComparisonError(ValueError):
    """Two arms that cannot be paired (different questions, a record whose items disagree with it)."""


@dataclass(frozen=True)
class ItemMetric:
    """How one metric reads from a predictions row: the metric is Σ num / Σ den over the items."""

    num: Callable[[dict[str, Any]], float]
    den: Callable[[dict[str, Any]], float]
    higher_is_better: Optional[bool]  # None: a descriptive metric, with no better side


def _field(name: str) -> Callable[[dict[str, Any]], float]:
    return lambda row: float(row[name])


def _present(name: str) -> Callable[[dict[str, Any]], float]:
    return lambda row: float(row[name] is not None)


def _or_zero(name: str) -> Callable[[dict[str, Any]], float]:
    return lambda row: 0.0 if row[name] is None else float(row[name])


_ONE: Callable[[dict[str, Any]], float] = lambda row: 1.0  # noqa: E731

YESNO_METRICS = {"accuracy": ItemMetric(lambda row: float(row["parsed"] == row["label"]), _ONE, True)}
CAPTION_METRICS = {
    "chair_s": ItemMetric(_field("chair_s"), _ONE, False),
    "chair_i": ItemMetric(_field("n_hallucinated_mentions"), _field("n_object_mentions"), False),
    "attr_chair_i": ItemMetric(_field("n_attributes_wrong"), _field("n_attributes"), False),
    "rel_chair_i": ItemMetric(_field("n_relations_wrong"), _field("n_relations_checked"), False),
    "recall": ItemMetric(_field("n_covered"), _field("n_scene_objects"), True),
}
ITEM_METRICS: dict[str, dict[str, ItemMetric]] = {"yesno": YESNO_METRICS, "caption": CAPTION_METRICS, "diagnostics": {}}
"""Per kind of predictions (told apart by their rows' fields), the metrics compared item by item."""

DESCRIPTIVE_METRICS: dict[str, dict[str, ItemMetric]] = {
    "yesno": {"yes_ratio": ItemMetric(lambda row: float(row["parsed"] == "yes"), _ONE, None)},
    "diagnostics": {f"vd_{c}": ItemMetric(_or_zero(f"vd_{c}"), _present(f"vd_{c}"), True)
                    for c in ("blank", "noise", "none")},
}
"""Metrics read item by item too, for the causes' effects, but with no verdict of their own in comparisons."""

TOLERANCE = {"diagnostics": 1e-5}
"""How far a metric recomputed from the rows may be from its record (diagnostics rows are rounded to 1e-5)."""


def _kind(row: dict[str, Any]) -> Optional[str]:
    if "image" not in row:
        return None
    if "id" in row and "vd_blank" in row:
        return "diagnostics"  # visual dependence per question (plugins.diagnostics)
    if "question_id" not in row:
        return None  # not answers to a benchmark's questions (representation measurements)
    if "parsed" in row and "label" in row:
        return "yesno"
    if "chair_s" in row and "n_object_mentions" in row:
        return "caption"
    return None


@dataclass(frozen=True)
class ItemTable:
    """One record's predictions, reduced to what a comparison needs."""

    kind: str
    keys: tuple[str, ...]  # question ids, sorted
    images: tuple[str, ...]  # the image of each key
    labels: tuple[str, ...]  # the expected answer of each key ("" for captions)
    num: dict[str, np.ndarray]  # metric -> per-key numerator
    den: dict[str, np.ndarray]  # metric -> per-key denominator

    @property
    def correct(self) -> np.ndarray:
        """Yes/no: per-key correctness (accuracy's numerator)."""
        return self.num["accuracy"] > 0


def read_items(record_path: Path, record: ResultRecord) -> Optional[ItemTable]:
    """The predictions of the record at ``record_path``, checked against the record's hash and metrics;
    None when they are not per-item answers (diagnostics, representation measurements)."""
    problem = predictions_problem(record_path, record.model_dump(mode="json"))
    if problem or not record.predictions:
        raise ComparisonError(f"{record.cell}: {problem or 'the record has no predictions file'}")
    path = Path(record_path).with_name(record.predictions)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise ComparisonError(f"{record.cell}: {path.name} has no rows")
    kind = _kind(rows[0])
    if kind is None:
        return None
    key = "id" if kind == "diagnostics" else "question_id"
    rows.sort(key=lambda r: _sort_key(str(r[key])))
    keys = tuple(str(r[key]) for r in rows)
    if len(set(keys)) != len(keys):
        raise ComparisonError(f"{record.cell}: question ids repeat in {path.name}")
    metrics = {m: spec for m, spec in {**ITEM_METRICS[kind], **DESCRIPTIVE_METRICS.get(kind, {})}.items()
               if m in record.metrics}
    try:
        num = {m: np.array([spec.num(r) for r in rows], dtype=float) for m, spec in metrics.items()}
        den = {m: np.array([spec.den(r) for r in rows], dtype=float) for m, spec in metrics.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ComparisonError(f"{record.cell}: a row of {path.name} lacks what its metrics are read from ({exc!r})")
    for m in metrics:
        if den[m].sum() > 0:
            value = num[m].sum() / den[m].sum()
            if abs(value - record.metrics[m]) > TOLERANCE.get(kind, 2e-6):
                raise ComparisonError(f"{record.cell}: {m} from its {len(rows)} predictions is {value:.6f}, its record "
                                      f"says {record.metrics[m]:.6f}; the per-item reading disagrees with the scorer")
    labels = tuple(str(r.get("label", "")) for r in rows)
    return ItemTable(kind, keys, tuple(str(r["image"]) for r in rows), labels, num, den)


def _sort_key(qid: str) -> tuple[int, Any]:
    return (0, int(qid)) if qid.isdigit() else (1, qid)


def oracle_of(plugin: str) -> Optional[str]:
    """Why the registered method ``plugin`` sees the world's ground truth: its class's ``oracle`` string, or None.

    Read by the registry's scan of the source (:class:`plugins.registry.Entry`), so nothing is imported.
    """
    from plugins.registry import entries

    return next((e.oracle for e in entries("methods") if e.name == plugin), None)


# ---------------------------------------------------------------- which pairs

class PairSpec(NamedTuple):
    """A method label compared with a reference label, and why that reference.

    Both arms run under the same protocol, unless ``protocol`` (the method's) and
    ``reference_protocol`` name others: then the pair crosses protocols on purpose (VCD sampling
    against the greedy baseline). ``protocol`` None: every protocol the method ran under.
    """

    method: str
    reference: str
    relation: str
    protocol: Optional[str] = None
    reference_protocol: Optional[str] = None


def comparison_pairs(matrix: Any) -> list[PairSpec]:
    """Every pair the matrix declares: an experiment's ``reference`` against each of its other methods
    (same protocol), then the matrix's own ``comparisons`` (method-specific references)."""
    pairs: dict[tuple[str, str], PairSpec] = {}
    for exp in matrix.experiments:
        ref = getattr(exp, "reference", None)
        if not ref:
            continue
        relation = SAME_PROTOCOL if ref == BASELINE else f"reference of experiment {exp.name}"
        for label in exp.methods:
            if label != ref:
                pairs.setdefault((label, ref), PairSpec(label, ref, relation))
    specific = {}
    for spec in getattr(matrix, "comparisons", []) or []:
        specific[(spec.method, spec.reference, spec.protocol, spec.reference_protocol)] = PairSpec(
            spec.method, spec.reference, spec.why, spec.protocol, spec.reference_protocol)
    return sorted([*pairs.values(), *specific.values()], key=lambda p: tuple(str(x) for x in p))


# ---------------------------------------------------------------- one comparison

def _pair_tables(method: list[ItemTable], reference: list[ItemTable], what: str) -> None:
    first = method[0]
    for t in method + reference:
        if t.kind != first.kind or t.keys != first.keys or t.images != first.images or t.labels != first.labels:
            raise ComparisonError(f"{what}: the arms did not answer the same questions about the same images "
                                  f"({len(first.keys)} and {len(t.keys)} items); cannot pair them")


def _cluster_sums(table: ItemTable, metric: str, images: list[str]) -> tuple[np.ndarray, np.ndarray]:
    index = {img: i for i, img in enumerate(images)}
    at = np.array([index[img] for img in table.images])
    num = np.bincount(at, weights=table.num[metric], minlength=len(images))
    den = np.bincount(at, weights=table.den[metric], minlength=len(images))
    return num, den


def compare_arms(method: Sequence[ItemTable], reference: Sequence[ItemTable], metric: str, *, what: str = "",
                 n_boot: int = N_BOOT, seed: int = 0) -> Optional[Effect]:
    """The paired effect of ``metric`` (method − reference): one table per seed for each arm.

    None when an arm has nothing to score this metric on (no relations checked, say).
    """
    method, reference = list(method), list(reference)
    _pair_tables(method, reference, what)
    if any(metric not in t.den or t.den[metric].sum() <= 0 for t in method + reference):
        return None
    first = method[0]
    images = sorted(set(first.images))
    single_seed = len(method) == 1 and len(reference) == 1
    if first.kind == "yesno" and single_seed and len(images) == len(first.keys):
        return mcnemar(method[0].correct, reference[0].correct)
    effect = gap_effect(method, reference, metric, what=what, n_boot=n_boot, seed=seed)
    if first.kind == "yesno":
        pairs = list(zip(method, _paired(reference, len(method))))
        b = sum(int((m.correct & ~r.correct).sum()) for m, r in pairs)
        c = sum(int((~m.correct & r.correct).sum()) for m, r in pairs)
        effect = dataclasses.replace(effect, discordant=(b, c))
    return effect


def gap_effect(method: Sequence[ItemTable], reference: Sequence[ItemTable], metric: str, *,
               method_minus: Optional[Sequence[ItemTable]] = None, reference_minus: Optional[Sequence[ItemTable]] = None,
               minus_metric: Optional[str] = None, what: str = "", n_boot: int = N_BOOT, seed: int = 0) -> Effect:
    """The paired effect of two arms on ``metric``, or on a gap (``metric`` minus ``minus_metric`` on other tables).

    The causes' effects (:mod:`site_gen.causes`): one table per seed and arm, paired by position;
    with ``method_minus`` / ``reference_minus`` each arm's figure is its metric on its tables minus
    ``minus_metric`` on its minus tables (accuracy on random minus adversarial questions: POPE asks
    both about the same images). Always the cluster bootstrap over the union of the images, with
    every replicate drawing the same images for all four terms, and the seeds.
    """
    method, reference = list(method), list(reference)
    _pair_tables(method, reference, what)
    terms = [method, reference]
    if method_minus is not None and reference_minus is not None:
        method_minus, reference_minus = list(method_minus), list(reference_minus)
        _pair_tables(method_minus, reference_minus, what)
        terms += [method_minus, reference_minus]
    images = sorted({img for tables in terms for t in tables for img in t.images})
    metrics = [metric, metric, minus_metric or metric, minus_metric or metric]
    for tables, m in zip(terms, metrics):
        if any(m not in t.num for t in tables):
            raise ComparisonError(f"{what}: {m} cannot be read item by item from these predictions")
    sums = [[_cluster_sums(t, m, images) for t in tables] for tables, m in zip(terms, metrics)]

    def grids(k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return [n for n, _ in sums[k]], [d for _, d in sums[k]]

    minus = {"method_minus": grids(2), "reference_minus": grids(3)} if len(terms) == 4 else {}
    return cluster_bootstrap(*grids(0), *grids(1), n_items=len(method[0].keys), n_boot=n_boot, seed=seed, **minus)


def _paired(reference: list[ItemTable], n: int) -> list[ItemTable]:
    return reference * n if len(reference) == 1 else reference


def stable_seed(*parts: str) -> int:
    """A bootstrap seed from names (method, reference, model, benchmark, ...): the same comparison always resamples alike."""
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:4], "big")


# ---------------------------------------------------------------- all of them

class Arms(NamedTuple):
    method: list[tuple[Path, ResultRecord]]
    reference: list[tuple[Path, ResultRecord]]


def _arms(pairs: Sequence[PairSpec], records: Iterable[ResultRecord], results_dir: Path
          ) -> list[tuple[PairSpec, str, Arms]]:
    """For each pair, each model / benchmark / split / protocol both arms have records for, their records by seed.

    The comparison's protocol is the method's, or ``<method's>-vs-<reference's>`` across protocols.
    A reference with the method's seeds is paired seed by seed; a reference with one seed (greedy)
    is set against every seed of the method.
    """
    by: dict[tuple[str, str, str], dict[tuple[str, str], dict[int, ResultRecord]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        by[(r.model, r.benchmark, r.split)][(r.method, r.protocol)][r.seed] = r
    out = []
    for spec in pairs:
        for where, arms in sorted(by.items()):
            for (label, protocol), mine in sorted(arms.items()):
                if label != spec.method or (spec.protocol is not None and protocol != spec.protocol):
                    continue
                ref_protocol = spec.reference_protocol or protocol
                ref = arms.get((spec.reference, ref_protocol))
                if not ref or (spec.reference == spec.method and ref_protocol == protocol):
                    continue
                seeds = sorted(mine)
                if all(s in ref for s in seeds):
                    ref_seeds = seeds
                elif len(ref) == 1:
                    ref_seeds = list(ref)
                else:
                    continue  # seeds that cannot be paired (the reference ran others)
                shown = protocol if ref_protocol == protocol else f"{protocol}-vs-{ref_protocol}"
                out.append((spec, shown, Arms([(result_path(results_dir, mine[s]), mine[s]) for s in seeds],
                                              [(result_path(results_dir, ref[s]), ref[s]) for s in ref_seeds])))
    return out


def _inputs(arms: Arms) -> dict[str, str]:
    return {r.cell: str(r.predictions_sha256) for _, r in arms.method + arms.reference}


def compute_comparisons(pairs: Sequence[PairSpec], records: Sequence[ResultRecord], results_dir: Path, *,
                        oracle: Callable[[ResultRecord], Optional[str]] = lambda r: None,
                        previous: Optional[dict[str, list[dict[str, Any]]]] = None, n_boot: int = N_BOOT,
                        problems: Optional[list[str]] = None, progress: Callable[[int, int], None] = lambda i, n: None,
                        ) -> list[ComparisonRecord]:
    """Comparison records for every pair with records on both sides, Holm-adjusted per family.

    ``previous`` (entries of an earlier ``comparisons.json`` by their input key) are reused when
    their inputs are unchanged; pairs that cannot be compared are described in ``problems``.
    """
    previous = previous or {}
    code = _code()
    tables: dict[Path, Optional[ItemTable]] = {}

    def table(path: Path, record: ResultRecord) -> Optional[ItemTable]:
        if path not in tables:
            tables[path] = read_items(path, record)
        return tables[path]

    raw: list[dict[str, Any]] = []
    work = _arms(pairs, records, results_dir)
    for i, (spec, protocol, arms) in enumerate(work):
        progress(i, len(work))
        m0 = arms.method[0][1]
        what = f"{spec.method} vs {spec.reference} on {m0.model}/{m0.benchmark}/{m0.split} ({protocol})"
        inputs = _inputs(arms)
        key = _input_key(code, spec, protocol, inputs, n_boot)
        if key in previous:
            raw.extend({**e, "oracle": oracle(m0)} for e in previous[key])
            continue
        try:
            m_tables = [table(p, r) for p, r in arms.method]
            r_tables = [table(p, r) for p, r in arms.reference]
            if None in m_tables or None in r_tables:
                continue  # not per-item answers: nothing to pair
            entries = []
            for metric, item in ITEM_METRICS[m_tables[0].kind].items():
                if any(metric not in t.num for t in m_tables + r_tables):
                    continue
                eff = compare_arms(m_tables, r_tables, metric, what=what, n_boot=n_boot,
                                   seed=stable_seed(spec.method, spec.reference, m0.model, m0.benchmark, m0.split,
                                                     protocol, metric))
                if eff is None:
                    continue
                m_val = float(np.mean([r.metrics[metric] for _, r in arms.method]))
                r_val = float(np.mean([r.metrics[metric] for _, r in arms.reference]))
                entries.append({
                    "method": spec.method, "reference": spec.reference, "relation": spec.relation,
                    "model": m0.model, "benchmark": m0.benchmark, "split": m0.split, "protocol": protocol,
                    "metric": metric, "higher_is_better": item.higher_is_better, "method_value": m_val,
                    "reference_value": r_val, "effect": eff.effect, "low": eff.low, "high": eff.high, "level": LEVEL,
                    "p": eff.p, "test": eff.test, "n_items": eff.n_items, "n_clusters": eff.n_clusters,
                    "n_seeds": eff.n_seeds, "discordant": list(eff.discordant) if eff.discordant else None,
                    "replicates": eff.replicates, "oracle": oracle(m0), "inputs": inputs, "input_key": key})
        except (ComparisonError, OSError, ValueError, KeyError) as exc:
            if problems is not None:
                problems.append(f"{what}: {exc}")
            continue
        raw.extend(entries)
    return _with_holm(raw)


def _with_holm(raw: list[dict[str, Any]]) -> list[ComparisonRecord]:
    families: dict[tuple, list[int]] = defaultdict(list)
    for i, e in enumerate(raw):
        families[(e["model"], e["benchmark"], e["split"], e["protocol"], e["metric"])].append(i)
    out: list[Optional[ComparisonRecord]] = [None] * len(raw)
    for members in families.values():
        adjusted = holm([raw[i]["p"] for i in members])
        for i, p_adj in zip(members, adjusted):
            e = raw[i]
            out[i] = ComparisonRecord.model_validate({
                **e, "p_holm": p_adj, "family_size": len(members),
                "verdict": verdict(e["effect"], p_adj, e["higher_is_better"])})
    return sorted((r for r in out if r is not None), key=lambda r: r.key)


def _code() -> str:
    from plugins.identity import code_hash

    return code_hash(["plugins.compare"])


def _input_key(code: str, spec: PairSpec, protocol: str, inputs: dict[str, str], n_boot: int) -> str:
    text = json.dumps({"code": code, "pair": list(spec), "protocol": protocol, "inputs": inputs, "n_boot": n_boot,
                       "level": LEVEL}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- the file

def write_comparisons(results_dir: Path, pairs: Sequence[PairSpec], records: Sequence[ResultRecord], *,
                      oracle: Callable[[ResultRecord], Optional[str]] = lambda r: None, n_boot: int = N_BOOT,
                      progress: Callable[[int, int], None] = lambda i, n: None
                      ) -> tuple[list[ComparisonRecord], list[str]]:
    """Compute (reusing entries whose inputs are unchanged) and write ``results/comparisons.json``.

    Returns the comparisons and the pairs that could not be compared (``what: why``).
    """
    path = Path(results_dir) / COMPARISONS_NAME
    stored, _ = read_comparisons(results_dir)
    previous: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in stored:
        previous[c.input_key].append({k: v for k, v in c.model_dump(mode="json").items() if k not in _ADJUSTED})
    problems: list[str] = []
    comparisons = compute_comparisons(pairs, records, results_dir, oracle=oracle, previous=dict(previous),
                                      n_boot=n_boot, problems=problems, progress=progress)
    data = {"version": COMPARISONS_VERSION, "level": LEVEL, "alpha": ALPHA, "n_boot": n_boot,
            "comparisons": [c.model_dump(mode="json") for c in comparisons]}
    text = json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    try:
        if path.read_text(encoding="utf-8") == text:
            return comparisons, problems
    except OSError:
        pass
    write_atomic(path, text)
    return comparisons, problems


_ADJUSTED = frozenset({"p_holm", "family_size", "verdict"})
"""Fields that depend on the whole family, recomputed on every write."""
