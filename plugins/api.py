"""The contract between the experiment side and the knowledge side: the result record.

A reproduced number exists only as a :class:`ResultRecord` written by the runner
under ``results/``; ``site_gen`` reads these files and never imports anything
else from ``plugins``. Metrics are fractions in [0, 1] for rates (accuracy,
precision, recall, f1, yes_ratio, chair_s, chair_i); the site shows percentages.

>>> r = ResultRecord.model_validate({
...     "method": "vcd", "benchmark": "pope-synth", "split": "adversarial",
...     "model": "alignscope-tiny-llava", "seed": 0, "n_samples": 6,
...     "metrics": {"accuracy": 0.5, "f1": 0.4}, "seconds_per_input": 0.01,
...     "fingerprint": "ab" * 32,
...     "provenance": {"git_commit": "0" * 40, "dirty": False, "package_versions": {},
...                    "device": "cpu", "dtype": "float32", "decoding": {"strategy": "greedy"},
...                    "parser": "pope-official-v1", "date": "2026-11-22"}})
>>> r.cell
'alignscope-tiny-llava/pope-synth/adversarial/vcd/seed0'
"""
from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any, Annotated, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from plugins.files import file_sha256, write_atomic

RESULT_SCHEMA_VERSION = 3
"""3: ``protocol`` names the decoding protocol (``follows`` the knowledge-base benchmark, which 2 called
``protocol``); 2: a record names the hash and row count of its predictions file (1: the file name only)."""
COMMON_PROTOCOL = "common"
"""The protocol every method runs under (greedy, no suffix): :data:`plugins.models.decoding.COMMON_NAME`."""
BASELINE = "baseline"
"""Method name of the unmitigated model (greedy decoding, no intervention)."""

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.+_-]*$", max_length=80)]
RATE_METRICS = frozenset({"accuracy", "precision", "recall", "f1", "yes_ratio", "unclear_ratio", "chair_s", "chair_i",
                          "attr_chair_s", "attr_chair_i", "color_chair_i", "size_chair_i", "rel_chair_s", "rel_chair_i",
                          "mutual_knn_last", "mutual_knn_mean", "linear_cka_last", "linear_cka_mean"})
"""Metrics that are fractions and must lie in [0, 1]."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Provenance(_Frozen):
    """Where a number came from; a number without it is not shown (house rule 5)."""

    git_commit: str = Field(pattern=r"^[0-9a-f]{7,40}$|^unknown$")
    dirty: bool  # uncommitted changes in the working tree when the cell ran
    package_versions: dict[str, str]  # torch, transformers, alignscope ...
    device: str  # cpu, cuda, cuda:0 ...
    dtype: str  # float32, bfloat16 ...
    decoding: dict[str, Any]  # strategy, max_new_tokens, batch size ...
    parser: str  # answer-parser name and version, e.g. pope-official-v1
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}")  # ISO date (or date-time) of the run
    method_config: dict[str, Any] = Field(default_factory=dict)  # resolved hyper-parameters
    train_seconds: Optional[float] = None  # for parameter-tuning methods: time spent training
    # What the fingerprint was computed from, to say later why a record went stale:
    # {"code": {module: normalised-tree hash}, "checkpoint_sha256": ..., "data_sha256": ...}
    identity: Optional[dict[str, Any]] = None


class ResultRecord(_Frozen):
    """One cell of the reproduction matrix: method × benchmark × split × model × seed."""

    schema_version: int = RESULT_SCHEMA_VERSION
    method: Name  # registered method name; ``baseline`` for the unmitigated model
    benchmark: Name
    split: Name
    model: Name
    protocol: Name = COMMON_PROTOCOL  # the decoding protocol of the matrix (search, prompt suffix, answer budget)
    follows: Optional[Name] = None  # knowledge-base benchmark whose protocol this follows (``pope``), so reported numbers sit beside it
    seed: int = Field(ge=0)
    n_samples: int = Field(ge=1)
    metrics: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], float] = Field(min_length=1)
    seconds_per_input: float = Field(ge=0)
    fingerprint: str = Field(pattern=r"^[0-9a-f]{16,64}$")
    provenance: Provenance
    predictions: Optional[str] = None  # file name of the per-sample JSONL beside this record
    predictions_sha256: Optional[str] = Field(default=None, pattern=r"^[0-9a-f]{64}$")  # of the file's bytes
    predictions_rows: Optional[int] = Field(default=None, ge=0)  # lines in the (uncompressed) file

    @model_validator(mode="before")
    @classmethod
    def _from_older_schemas(cls, data: Any) -> Any:
        """Schema 2 and older called the knowledge-base benchmark ``protocol``; every such run was greedy."""
        if isinstance(data, dict) and isinstance(data.get("schema_version"), int) and data["schema_version"] < 3 \
                and "follows" not in data:
            data = dict(data)
            data["follows"] = data.pop("protocol", None)
        return data

    @field_validator("metrics")
    @classmethod
    def _finite_rates(cls, metrics: dict[str, float]) -> dict[str, float]:
        for name, value in metrics.items():
            if not math.isfinite(value):
                raise ValueError(f"metric {name!r} is {value}, expected a finite number")
            if name in RATE_METRICS and not 0.0 <= value <= 1.0:
                raise ValueError(f"metric {name!r} is {value}: rates are fractions in [0, 1], not percentages")
        return metrics

    @property
    def cell(self) -> str:
        """The matrix cell this record answers, also its path under ``results/``."""
        return cell_path(self.model, self.benchmark, self.split, self.method, self.protocol, self.seed)


def cell_path(model: str, benchmark: str, split: str, method: str, protocol: str, seed: int) -> str:
    """``model/benchmark/split/method/seed<k>`` under the common protocol, ``.../method/<protocol>/seed<k>`` otherwise.

    >>> cell_path("m", "world-pope", "random", "vcd", "sampling", 3)
    'm/world-pope/random/vcd/sampling/seed3'
    """
    middle = "" if protocol == COMMON_PROTOCOL else f"{protocol}/"
    return f"{model}/{benchmark}/{split}/{method}/{middle}seed{seed}"


COMPARISONS_NAME = "comparisons.json"
"""The comparison records of a results folder, ``results/comparisons.json`` (:mod:`plugins.compare` writes it)."""
COMPARISONS_VERSION = 1


class ComparisonRecord(_Frozen):
    """One paired comparison: a method against a reference on the same items, one metric; the only source of a verdict.

    ``effect`` = method − reference in the metric's units (fractions for rates), with its
    ``level`` interval ``[low, high]``, the two-sided ``p`` of its ``test`` and ``p_holm``, Holm's
    adjustment over the ``family_size`` comparisons of one table (same model, benchmark, split,
    protocol and metric). ``inputs`` names every result cell used and its predictions file's
    SHA-256, so a reader can tell when a comparison no longer matches its records.
    """

    method: Name  # the method label (a result's method)
    reference: Name  # the label it is set against
    relation: str  # why this reference: "same-protocol baseline", or a method-specific reason
    model: Name
    benchmark: Name
    split: Name
    protocol: Name  # the decoding protocol both arms ran under (or "method-vs-reference" across protocols)
    metric: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    higher_is_better: bool
    method_value: float  # the metric of each arm, mean over seeds
    reference_value: float
    effect: float
    low: float
    high: float
    level: float = 0.95
    p: float = Field(ge=0, le=1)
    p_holm: float = Field(ge=0, le=1)
    family_size: int = Field(ge=1)
    test: str  # mcnemar-exact, cluster-bootstrap
    n_items: int = Field(ge=1)  # paired questions or captions (per seed)
    n_clusters: int = Field(ge=1)  # images
    n_seeds: int = Field(default=1, ge=1)
    discordant: Optional[tuple[int, int]] = None  # yes/no: items only the method / only the reference got right
    replicates: int = Field(default=0, ge=0)  # bootstrap replicates
    verdict: str = Field(pattern=r"^(better|worse|no detectable change)$")
    oracle: Optional[str] = None  # why the method's stand-in sees the world's ground truth: ranked apart
    inputs: dict[str, str]  # result cell -> predictions_sha256 of every record used
    input_key: str = Field(pattern=r"^[0-9a-f]{64}$")  # hash of inputs, settings and code: unchanged -> reused as is

    @property
    def key(self) -> tuple[str, ...]:
        return (self.model, self.benchmark, self.split, self.protocol, self.metric, self.method, self.reference)


def read_comparisons(results_dir: Path) -> tuple[list[ComparisonRecord], list[str]]:
    """The comparison records of a results folder (none without a file), and what could not be read."""
    path = Path(results_dir) / COMPARISONS_NAME
    if not path.exists():
        return [], []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [], [f"{path}: not readable JSON ({exc}); make reproduce rewrites it"]
    if not isinstance(data, dict) or data.get("version") != COMPARISONS_VERSION:
        found = data.get("version") if isinstance(data, dict) else None
        return [], [f"{path}: version {found!r}, expected {COMPARISONS_VERSION}; make reproduce rewrites it"]
    out, problems = [], []
    for i, entry in enumerate(data.get("comparisons") or []):
        try:
            out.append(ComparisonRecord.model_validate(entry))
        except ValidationError as exc:
            problems.append(f"{path} comparisons[{i}]: " + "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)))
    return out, problems


def record_name(model: str) -> str:
    """A model label usable in a record and a path: ``llava-hf/llava-1.5-7b-hf`` -> ``llava-hf--llava-1.5-7b-hf``."""
    return model.lower().replace("/", "--")


def result_path(results_dir: Path, record: ResultRecord) -> Path:
    return Path(results_dir) / f"{record.cell}.json"


def dump_record(record: ResultRecord) -> str:
    """Stable JSON: sorted keys, fixed float rounding, trailing newline."""
    data = record.model_dump(mode="json")
    return json.dumps(_round(data), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def _round(value: Any, digits: int = 6) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v, digits) for v in value]
    return value


def git(*args: str) -> Optional[str]:
    """Output of ``git <args>`` run in this checkout, or None when git or the repository is unavailable."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def save_record(results_dir: Path, record: ResultRecord) -> Path:
    path = result_path(results_dir, record)
    write_atomic(path, dump_record(record))
    return path


def predictions_problem(record_path: Path, record: dict[str, Any]) -> Optional[str]:
    """Why the predictions file of the record at ``record_path`` (its JSON data) cannot be trusted, or None.

    A record names its predictions file and that file's SHA-256; the file must exist and hash to
    it (hashes are cached by file status, so a check of an unchanged file costs one ``stat``).
    A record without a predictions file has nothing to check.
    """
    name = record.get("predictions")
    if not name:
        return None
    if not isinstance(name, str) or Path(name).name != name:
        return f"predictions {name!r} is not a file name beside the record"
    expected = record.get("predictions_sha256")
    if not expected:
        return "predictions unverified (the record predates predictions hashes)"
    path = Path(record_path).with_name(name)
    try:
        actual = file_sha256(path)
    except FileNotFoundError:
        return f"predictions file {name} is missing"
    except OSError as exc:
        return f"predictions file {name} cannot be read ({exc.strerror or exc})"
    if actual != expected:
        return f"predictions file {name} changed since the run (sha256 {actual[:12]}, recorded {str(expected)[:12]})"
    return None


RECORD_FILE = re.compile(r"seed\d+\.json")
"""The file name of a record (``results/<model>/<benchmark>/<split>/<method>/seed<k>.json``)."""
ERROR_SUFFIX = ".error.json"
"""A failed cell's error and traceback: ``results/<cell>.error.json``, where its record would be."""
INDEX_NAME = "index.json"
"""The runner's index of the matrix, ``results/index.json``: every cell's state and fingerprint."""
INDEX_VERSION = 1
"""The index's format: what the runner writes and the site reads."""


def load_results(results_dir: Path) -> tuple[list[ResultRecord], list[str]]:
    """Every record (``seed<k>.json``) under ``results_dir``, sorted by cell; unreadable files become messages.

    A corrupt file never stops the site: it is reported (``path: what is wrong``) and left out.
    """
    records: list[ResultRecord] = []
    problems: list[str] = []
    root = Path(results_dir)
    if not root.is_dir():
        return records, problems
    for path in sorted(root.rglob("seed*.json")):
        if not RECORD_FILE.fullmatch(path.name):
            continue  # a failed cell's error file (seed0.error.json); index.json is not a record either
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            records.append(ResultRecord.model_validate(data))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{path}: not readable JSON ({exc})")
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "(record)"
                problems.append(f"{path} {where}: {err['msg']}")
    records.sort(key=lambda r: r.cell)
    return records, problems
