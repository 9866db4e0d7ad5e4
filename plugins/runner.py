"""The runner: the experiment matrix of ``reproduce.yaml``, cell by cell, cached by fingerprint.

``plugins/reproduce.yaml`` lists named experiments; each is a cross product
``models × benchmarks (× splits) × methods × seeds``. Every combination is a **cell**, named
``model/benchmark/split/method/seed<k>`` — also its path under ``results/``::

    experiments:
      - name: default
        models: [alignscope-tiny-llava]
        benchmarks:
          world-pope: [random, popular, adversarial]   # splits (omit for all)
        methods:
          baseline: {}                                 # label: hyper-parameters
          vcd-a0.5: {use: vcd, alpha: 0.5}              # another label for the same plugin
        seeds: [0]

**Seeds.** A cell's seed is passed to the benchmark (per-item random draws). A method with a
``seed`` hyper-parameter of its own (a tuned method's training seed) gets the cell's seed there too
unless the matrix sets it, so ``seeds: [0, 1, 2]`` means three independent training runs.
**Shared cells.** Two experiments may list the same cell (a control arm common to several cause
experiments) when everything about it is equal; it runs once. The same name with other settings
is an error.

**Fingerprint.** A cell's fingerprint is the SHA-256 of everything that determines its numbers:
the method (registered name, resolved config, source of its module and bases), the model
checkpoint's files, the benchmark split's data files, its answer parser and scorer source, the
decoding settings, the adapter's source, the seed and dtype (not the batch size: batched answers
equal unbatched ones, a tested property of the adapter). A cell whose record in ``results/`` has
the same fingerprint is skipped; a record whose fingerprint differs is *stale* (the site greys it
out until the next run).

**Nothing lost.** Each finished cell is written at once: first its per-sample predictions
(``<cell>.predictions.jsonl.gz``), then its record (``<cell>.json``), each through a temporary file
and a rename. Killing the run loses at most the cell in progress and never leaves a partial file;
the next run starts from the first unfinished cell.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import fnmatch
import gzip
import hashlib
import json
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import yaml
from pydantic import Field, ValidationError, field_validator

from plugins.api import Provenance, ResultRecord, git, result_path, save_record, write_atomic
from plugins.config import StrictConfig, unknown
from plugins.methods.base import decoding_of, modules_sha256

__all__ = ["RunnerError", "Matrix", "Experiment", "Cell", "load_matrix", "expand", "CellPlan", "plan",
           "run", "stale_cells", "DEFAULT_MATRIX", "DEFAULT_RESULTS"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MATRIX = REPO_ROOT / "plugins" / "reproduce.yaml"
DEFAULT_RESULTS = REPO_ROOT / "results"
FINGERPRINT_VERSION = 1  # bump when the fingerprint's recipe changes
EXECUTORS = ("local", "ray")


class RunnerError(ValueError):
    """A matrix that cannot run: bad YAML, an unknown plugin, a duplicate cell, a missing checkpoint."""


# ---------------------------------------------------------------- the matrix file

class Defaults(StrictConfig):
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    dtype: str = "auto"  # auto (float32 on CPU), float32, float16, bfloat16
    batch_size: int = Field(default=64, ge=1)  # items per generate() call


class ModelSpec(StrictConfig):
    name: str  # registered model, or any label when ``path`` is given
    path: Optional[str] = None  # local checkpoint directory or HF cache id (default: the model's own)


class BenchmarkSpec(StrictConfig):
    splits: Optional[list[str]] = None  # default: every split of the benchmark
    options: dict[str, Any] = Field(default_factory=dict)  # the benchmark's own options (data folders, limit)


class Experiment(StrictConfig):
    name: str
    models: list[Union[str, ModelSpec]]
    benchmarks: dict[str, Union[None, list[str], BenchmarkSpec]]
    methods: dict[str, Optional[dict[str, Any]]]  # label -> hyper-parameters (``use:`` names another plugin)
    seeds: list[int] = Field(default_factory=lambda: [0])

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds or any(s < 0 for s in seeds):
            raise ValueError(f"seeds are {seeds}, expected a non-empty list of non-negative integers")
        return seeds


class Matrix(StrictConfig):
    version: int = 1
    defaults: Defaults = Field(default_factory=Defaults)
    experiments: list[Experiment] = Field(min_length=1)


def load_matrix(path: Union[str, Path] = DEFAULT_MATRIX) -> Matrix:
    """Read and validate a matrix file; every problem is reported as ``file:line: key: message``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RunnerError(f"{path}: cannot read the matrix ({exc.strerror or exc})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise RunnerError(f"{path}:{mark.line + 1 if mark else 1}: YAML syntax error: {exc.problem}") from None
    if not isinstance(data, dict):
        raise RunnerError(f"{path}:1: expected a mapping with 'experiments' at the top level")
    try:
        return Matrix.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            loc = [p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in ("str", "ModelSpec", "BenchmarkSpec", "list[str]", "none", "dict[str,any]")))]
            key = ".".join(str(p) for p in loc)
            msg = err["msg"].removeprefix("Value error, ")
            named = re.search(r"unknown keys? '([^']+)'", msg)  # StrictConfig reports unknown keys on their parent
            where = _line_of(node, loc + [named.group(1)] if named else loc)
            lines.append(f"{path}:{where}: {key}: {msg}")
        raise RunnerError("\n".join(dict.fromkeys(lines))) from None


def _line_of(node: Any, loc: Sequence[Any]) -> int:
    """1-based line of the YAML value at ``loc`` (nearest existing parent)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if k.value == str(part)]
            if not match:
                break
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


# ---------------------------------------------------------------- cells

@dataclass(frozen=True)
class Cell:
    """One run: a model on one benchmark split, with one method (label + plugin + config), one seed."""

    experiment: str
    model: ModelSpec
    benchmark: str
    split: str
    benchmark_options: tuple[tuple[str, Any], ...]  # frozen dict items
    method: str  # the label: the record's method name
    plugin: str  # the registered method it runs
    config: tuple[tuple[str, Any], ...]  # frozen hyper-parameters
    seed: int

    @property
    def name(self) -> str:
        return f"{_record_name(self.model.name)}/{self.benchmark}/{self.split}/{self.method}/seed{self.seed}"


def _record_name(model: str) -> str:
    """A model label usable in a record and a path: ``llava-hf/llava-1.5-7b-hf`` -> ``llava-hf--llava-1.5-7b-hf``."""
    return model.lower().replace("/", "--")


def _freeze(d: Optional[dict[str, Any]]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in (d or {}).items()))


def _thaw(items: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in items}


def expand(matrix: Matrix, only: Optional[str] = None) -> list[Cell]:
    """Every cell of the matrix (in file order), optionally only those whose name matches the glob ``only``.

    Unknown methods, benchmarks and splits are reported together, with suggestions.
    """
    from plugins.registry import RegistryError, get_benchmark, list_benchmarks, list_methods

    cells: list[Cell] = []
    problems: list[str] = []
    seen: dict[str, Cell] = {}
    for exp in matrix.experiments:
        for label, params in exp.methods.items():
            plugin = (params or {}).get("use", label)
            if plugin not in list_methods():
                problems.append(f"experiment {exp.name!r}: method {label!r}: {unknown('method', plugin, list_methods())}")
        for bench, spec in exp.benchmarks.items():
            if bench not in list_benchmarks():
                problems.append(f"experiment {exp.name!r}: {unknown('benchmark', bench, list_benchmarks())}")
                continue
            spec = spec if isinstance(spec, BenchmarkSpec) else BenchmarkSpec(splits=spec)
            try:
                splits_all = get_benchmark(bench).splits
            except RegistryError as exc:
                problems.append(str(exc))
                continue
            for split in spec.splits or splits_all:
                if split not in splits_all:
                    problems.append(f"experiment {exp.name!r}: benchmark {bench!r}: {unknown('split', split, splits_all)}")
                    continue
                for model in exp.models:
                    model = model if isinstance(model, ModelSpec) else ModelSpec(name=model)
                    for label, params in exp.methods.items():
                        params = dict(params or {})
                        plugin = params.pop("use", label)
                        for seed in exp.seeds:
                            cell_params = params
                            if "seed" not in params and plugin in list_methods() and _has_seed(plugin):
                                cell_params = {**params, "seed": seed}  # a training run per matrix seed
                            cell = Cell(exp.name, model, bench, split, _freeze(spec.options), label, plugin,
                                        _freeze(cell_params), seed)
                            if cell.name in seen:
                                if dataclasses.replace(seen[cell.name], experiment=exp.name) == cell:
                                    continue  # the same cell shared by two experiments (a common control) runs once
                                problems.append(f"cell {cell.name} appears in experiments {seen[cell.name].experiment!r} "
                                                f"and {exp.name!r} with different settings, expected each cell once "
                                                "(give one method another label)")
                                continue
                            seen[cell.name] = cell
                            cells.append(cell)
    if problems:
        raise RunnerError("\n".join(dict.fromkeys(problems)))
    if only:
        cells = [c for c in cells if fnmatch.fnmatchcase(c.name, only) or fnmatch.fnmatchcase(c.name, f"*{only}*")]
    return cells


def _has_seed(plugin: str) -> bool:
    """Does the method have a ``seed`` hyper-parameter (a training seed)?"""
    from plugins.registry import get_method

    return "seed" in get_method(plugin).Config.model_fields


# ---------------------------------------------------------------- fingerprints

class _Context:
    """Per-run caches: benchmark instances, method instances, checkpoint directories and hashes."""

    def __init__(self, data_dir: Optional[Path], dtype: str):
        self.data_dir = data_dir
        self.dtype = dtype
        self._benchmarks: dict[tuple, Any] = {}
        self._checkpoints: dict[tuple, tuple[Path, str]] = {}

    def benchmark(self, cell: Cell) -> Any:
        from plugins.registry import get_benchmark

        key = (cell.benchmark, cell.benchmark_options)
        if key not in self._benchmarks:
            cls = get_benchmark(cell.benchmark)
            try:
                self._benchmarks[key] = cls(_thaw(cell.benchmark_options), data_dir=self.data_dir)
            except ValidationError as exc:
                raise RunnerError(f"benchmark {cell.benchmark!r} options: " + "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))) from None
        return self._benchmarks[key]

    def method(self, cell: Cell) -> Any:
        from plugins.methods.base import MethodConfigError
        from plugins.registry import create_method

        try:
            return create_method(cell.plugin, _thaw(cell.config))
        except MethodConfigError as exc:
            raise RunnerError(f"cell {cell.name}: {exc}") from None

    def checkpoint(self, model: ModelSpec) -> tuple[Path, str]:
        """(checkpoint directory, its hash), without loading the model."""
        from plugins.models.llava import checkpoint_hash, resolve_checkpoint
        from plugins.registry import get_model, list_models

        key = (model.name, model.path)
        if key not in self._checkpoints:
            if model.path is not None:
                where = model.path
            elif model.name in list_models():
                where = getattr(get_model(model.name), "default_checkpoint")
            else:
                raise RunnerError(f"model {model.name!r}: {unknown('model', model.name, list_models())}; "
                                  "or give a path: {name: my-model, path: /dir/of/checkpoint}")
            try:
                directory = resolve_checkpoint(where)
            except FileNotFoundError as exc:  # CheckpointNotFoundError: says where it looked and how to get it
                raise RunnerError(f"model {model.name!r}: {exc}") from None
            self._checkpoints[key] = (directory, checkpoint_hash(directory))
        return self._checkpoints[key]


def fingerprint(cell: Cell, ctx: _Context) -> tuple[str, dict[str, Any]]:
    """The cell's fingerprint and the payload it hashes (see the module docstring)."""
    _, ckpt_hash = ctx.checkpoint(cell.model)
    bench = ctx.benchmark(cell)
    payload = {
        "version": FINGERPRINT_VERSION,
        "method": ctx.method(cell).fingerprint_payload(),
        "benchmark": bench.fingerprint_payload(cell.split),
        "checkpoint_sha256": ckpt_hash,
        "decoding": {**decoding_of(ctx.method(cell)), "max_new_tokens": bench.max_new_tokens},
        "adapter_sha256": modules_sha256(["plugins.models.llava", "plugins.models.batch", "plugins.models.cache"]),
        "seed": cell.seed,
        "dtype": ctx.dtype,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest(), payload


# ---------------------------------------------------------------- plan and run

@dataclass
class CellPlan:
    cell: Cell
    fingerprint: str
    status: str  # "cached" (a record with this fingerprint exists), "stale" (a record with another), "new", "error"
    error: str = ""  # why the cell cannot run (status "error"), e.g. a checkpoint that is not on this machine


def plan(cells: Sequence[Cell], results_dir: Path, ctx: _Context) -> list[CellPlan]:
    """Which cells must run: compares each cell's fingerprint with its record in ``results_dir``.

    A cell that cannot even be fingerprinted (missing checkpoint or data) gets status ``error``
    and does not stop the others.
    """
    out = []
    for cell in cells:
        try:
            fp, _ = fingerprint(cell, ctx)
        except (RunnerError, ValueError, OSError) as exc:
            out.append(CellPlan(cell, "", "error", str(exc)))
            continue
        path = Path(results_dir) / f"{cell.name}.json"
        status = "new"
        if path.is_file():
            try:
                stored = json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
            except (OSError, ValueError, AttributeError):
                stored = None  # a corrupt record is re-run
            status = "cached" if stored == fp else "stale"
        out.append(CellPlan(cell, fp, status))
    return out


def stale_cells(results_dir: Path = DEFAULT_RESULTS, matrix_path: Path = DEFAULT_MATRIX,
                data_dir: Optional[Path] = None) -> frozenset[str]:
    """Cells of the matrix whose stored record no longer matches the code, config, checkpoint or data."""
    matrix = load_matrix(matrix_path)
    ctx = _Context(data_dir, matrix.defaults.dtype)
    stale = set()
    for p in plan(expand(matrix), results_dir, ctx):
        if p.status == "stale":
            stale.add(p.cell.name)
    return frozenset(stale)


def _provenance_base() -> dict[str, Any]:
    import numpy
    import torch
    import transformers

    commit = (git("rev-parse", "HEAD") or "").strip() or "unknown"
    # Results themselves do not make the tree dirty: only code, config and data changes do.
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {
        "git_commit": commit,
        "dirty": bool(status and status.strip()),
        "package_versions": {"python": platform.python_version(), "torch": torch.__version__,
                             "transformers": transformers.__version__, "numpy": numpy.__version__},
    }


def _write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    """Gzipped JSON Lines, byte-stable (no timestamp in the gzip header), written atomically."""
    raw = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    write_atomic(path, gzip.compress(raw, compresslevel=9, mtime=0))


@dataclass
class RunSummary:
    ran: list[ResultRecord] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


class _Models:
    """Loaded adapters, one at a time (the matrix is ordered by model, so each loads once)."""

    def __init__(self, device: str, dtype: str):
        self.device, self.dtype = device, dtype
        self.key: Optional[Path] = None
        self.adapter: Any = None

    def get(self, directory: Path) -> Any:
        from plugins.models.llava import LlavaAdapter

        if self.key != directory:
            self.adapter = None
            self.adapter = LlavaAdapter.load(directory, self.device, self.dtype)
            self.key = directory
        return self.adapter


def compute_cell(cell: Cell, fp: str, ctx: _Context, models: _Models, batch_size: int,
                 progress: Optional[Callable[[int], None]] = None,
                 base: Optional[dict[str, Any]] = None) -> tuple[ResultRecord, list[dict[str, Any]]]:
    """Run one cell: ``(record, per-sample rows)``; nothing is written.

    ``seconds_per_input`` is the wall time of the benchmark's evaluation (model and method, not
    loading) divided by the number of inputs.
    """
    directory, _ = ctx.checkpoint(cell.model)
    adapter = models.get(directory)
    bench = ctx.benchmark(cell)
    method = ctx.method(cell)
    items = bench.items(cell.split)
    method.prepare(adapter)  # a tuned method trains or loads here: not part of seconds_per_input
    t0 = time.perf_counter()
    metrics, rows = bench.evaluate(adapter, method, cell.split, items, batch_size=batch_size, seed=cell.seed,
                                   progress=progress)
    seconds = time.perf_counter() - t0
    base = base or _provenance_base()
    record = ResultRecord(
        method=cell.method, benchmark=cell.benchmark, split=cell.split, model=_record_name(cell.model.name),
        protocol=bench.protocol, seed=cell.seed, n_samples=len(items), metrics=metrics,
        seconds_per_input=seconds / len(items), fingerprint=fp,
        provenance=Provenance(
            **base, device=str(adapter.device), dtype=str(adapter.dtype).removeprefix("torch."),
            decoding={**decoding_of(method), "max_new_tokens": bench.max_new_tokens, "batch_size": batch_size},
            parser=bench.parser, date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            method_config={"plugin": cell.plugin, **method.config.model_dump(mode="json")},
            train_seconds=method.train_seconds,
        ),
        predictions=Path(cell.name).name + ".predictions.jsonl.gz",
    )
    return record, rows


def write_cell(results_dir: Path, record: ResultRecord, rows: list[dict[str, Any]]) -> Path:
    """Predictions first, then the record (the commit point of the cell); each atomically."""
    out = result_path(results_dir, record)
    _write_predictions(out.with_name(record.predictions), rows)
    return save_record(results_dir, record)


def run_cell(cell: Cell, fp: str, ctx: _Context, models: _Models, batch_size: int, results_dir: Path,
             progress: Optional[Callable[[int], None]] = None, base: Optional[dict[str, Any]] = None) -> ResultRecord:
    """Run one cell and write its predictions and record; returns the record."""
    record, rows = compute_cell(cell, fp, ctx, models, batch_size, progress, base)
    write_cell(results_dir, record, rows)
    return record


def _ray_cell(cell: Cell, fp: str, data_dir: Optional[Path], device: str, dtype: str, batch_size: int,
              base: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """A Ray task: one cell computed in a worker; the driver writes what it returns."""
    ctx = _Context(data_dir, dtype)
    record, rows = compute_cell(cell, fp, ctx, _Models(device, dtype), batch_size, None, base)
    return record.model_dump_json(), rows


def _run_on_ray(todo: list[CellPlan], ctx: _Context, device: str, dtype: str, batch_size: int, results_dir: Path,
                base: dict[str, Any], summary: "RunSummary", gpus_per_cell: float, on_done: Callable[[], None]) -> None:
    """Each cell as one Ray task (``gpus_per_cell`` GPUs each); records are written by the driver as tasks finish.

    Connects to ``$RAY_ADDRESS`` when set, else starts a local Ray instance.
    """
    try:
        import ray
    except ImportError:
        raise RunnerError("executor 'ray' needs Ray: pip install -e '.[ray]' (Ray stays an optional extra)") from None
    import os

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    task = ray.remote(num_gpus=gpus_per_cell, max_retries=0)(_ray_cell)
    pending = {task.remote(p.cell, p.fingerprint, ctx.data_dir, device, dtype, batch_size, base): p for p in todo}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        _write_remote(pending.pop(done[0]), lambda: ray.get(done[0]), results_dir, summary)
        on_done()


def _write_remote(p: CellPlan, result: Callable[[], tuple[str, list[dict[str, Any]]]], results_dir: Path,
                  summary: "RunSummary") -> None:
    """Write what a worker computed for ``p`` (driver side); a failed worker fails its cell only."""
    try:
        record_json, rows = result()
        record = ResultRecord.model_validate_json(record_json)
        write_cell(results_dir, record, rows)
        summary.ran.append(record)
    except Exception as exc:
        summary.failed.append((p.cell.name, f"{type(exc).__name__}: {exc}"))


def _worker_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _preparation_key(p: CellPlan, ctx: _Context) -> Optional[tuple[Any, ...]]:
    """(checkpoint, plugin, config) when the cell's method prepares something (trains), else None."""
    from plugins.methods.base import Method

    if type(ctx.method(p.cell)).prepare is Method.prepare:
        return None
    return (str(ctx.checkpoint(p.cell.model)[0]), p.cell.plugin, p.cell.config)


def _prepare_cell_method(cell: Cell, data_dir: Optional[Path], device: str, dtype: str) -> None:
    """A worker task: train (or load) the cell's method for its model; the result lands in the artifact cache."""
    ctx = _Context(data_dir, dtype)
    ctx.method(cell).prepare(_Models(device, dtype).get(ctx.checkpoint(cell.model)[0]))


def _run_in_processes(todo: list[CellPlan], ctx: _Context, device: str, dtype: str, batch_size: int,
                      results_dir: Path, base: dict[str, Any], summary: "RunSummary", jobs: int,
                      on_done: Callable[[], None]) -> None:
    """Cells in ``jobs`` worker processes with ``cores // jobs`` torch threads each; the driver writes records.

    On a CPU a tiny model keeps two threads only partly busy (thread hand-offs dominate its
    small matrix products), so two one-thread processes answer more inputs per second than one
    two-thread process (``bench/bench_methods.py --threads 1`` against the default).
    """
    import concurrent.futures
    import multiprocessing
    import os

    threads = max(1, (os.cpu_count() or 1) // jobs)
    n_items = _input_counts(todo, ctx)
    todo = sorted(todo, key=lambda p: -n_items[p.cell.name])  # longest first: no worker ends alone with a big cell
    waiting: dict[tuple[Any, ...], list[CellPlan]] = {}  # cells whose method must train first, by what it trains
    ready = []
    for p in todo:
        key = _preparation_key(p, ctx)
        (waiting.setdefault(key, []) if key is not None else ready).append(p)
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_worker_threads, initargs=(threads,)) as pool:
        # Training first (once per method and model, not once per cell), the other cells meanwhile.
        preparing = {pool.submit(_prepare_cell_method, cells[0].cell, ctx.data_dir, device, dtype): key
                     for key, cells in waiting.items()}
        pending = {pool.submit(_ray_cell, p.cell, p.fingerprint, ctx.data_dir, device, dtype, batch_size, base): p
                   for p in ready}
        while preparing or pending:
            done, _ = concurrent.futures.wait([*preparing, *pending], return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                if future in preparing:
                    cells = waiting[preparing.pop(future)]
                    try:
                        future.result()
                    except Exception as exc:
                        for p in cells:
                            summary.failed.append((p.cell.name, f"{type(exc).__name__}: {exc}"))
                            on_done()
                        continue
                    pending.update({pool.submit(_ray_cell, p.cell, p.fingerprint, ctx.data_dir, device, dtype,
                                                batch_size, base): p for p in cells})
                else:
                    _write_remote(pending.pop(future), future.result, results_dir, summary)
                    on_done()


def run(matrix_path: Union[str, Path] = DEFAULT_MATRIX, *, only: Optional[str] = None,
        results_dir: Union[str, Path] = DEFAULT_RESULTS, device: Optional[str] = None, dtype: Optional[str] = None,
        batch_size: Optional[int] = None, data_dir: Optional[Path] = None, force: bool = False,
        progress: bool = True, executor: str = "local", gpus_per_cell: float = 0, jobs: int = 1,
        echo: Callable[[str], None] = print) -> RunSummary:
    """Run every cell of the matrix that is not cached; see the module docstring.

    ``executor``: ``local`` (this machine: in this process, model by model, or with ``jobs`` > 1
    in that many worker processes) or ``ray`` (one Ray task per cell, ``gpus_per_cell`` GPUs
    each). Only the in-process run shows per-input progress; the others count cells.
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise RunnerError(f"jobs is {jobs!r}, expected a positive number of worker processes")
    from tqdm.auto import tqdm

    if executor not in EXECUTORS:
        raise RunnerError(unknown("executor", executor, EXECUTORS))
    t_start = time.perf_counter()
    matrix = load_matrix(matrix_path)
    results_dir = Path(results_dir)
    if results_dir.is_dir():  # temporary files of a run killed mid-write (never a finished cell: those are renamed)
        for leftover in results_dir.rglob(".*.tmp"):
            leftover.unlink(missing_ok=True)
    device = device or matrix.defaults.device
    dtype = dtype or matrix.defaults.dtype
    batch_size = batch_size or matrix.defaults.batch_size
    try:
        cells = expand(matrix, only)
    except RunnerError as exc:
        raise RunnerError("\n".join(f"{matrix_path}: {line}" for line in str(exc).splitlines())) from None
    if not cells:
        raise RunnerError(f"no cell of {matrix_path} matches --only {only!r}" if only else f"{matrix_path} has no cells")
    ctx = _Context(data_dir, dtype)
    for bench in {(c.benchmark, c.benchmark_options): c for c in cells}.values():
        try:
            ctx.benchmark(bench).prepare()
        except (ValueError, OSError):
            pass  # reported per cell by plan()
    plans = plan(cells, results_dir, ctx)
    todo = [p for p in plans if p.status != "error" and (force or p.status != "cached")]
    summary = RunSummary(cached=[p.cell.name for p in plans if p.status == "cached" and not force],
                         failed=[(p.cell.name, p.error) for p in plans if p.status == "error"])
    if summary.cached:
        echo(f"{len(summary.cached)} of {len(plans)} cells unchanged (fingerprints match): skipped")
    if todo:
        # Run model by model so that each checkpoint loads once.
        todo.sort(key=lambda p: (str(ctx.checkpoint(p.cell.model)[0]), cells.index(p.cell)))
        base = _provenance_base()
        if executor == "ray" or jobs > 1:
            bar = tqdm(total=len(todo), desc="cells", unit="cell", disable=not progress)
            try:
                if executor == "ray":
                    _run_on_ray(todo, ctx, device, dtype, batch_size, results_dir, base, summary, gpus_per_cell,
                                lambda: bar.update(1))
                else:
                    _run_in_processes(todo, ctx, device, dtype, batch_size, results_dir, base, summary, jobs,
                                      lambda: bar.update(1))
            finally:
                bar.close()
        else:
            _run_local(todo, ctx, device, dtype, batch_size, results_dir, base, summary, progress)
    summary.seconds = time.perf_counter() - t_start
    return summary


def _input_counts(todo: list[CellPlan], ctx: _Context) -> dict[str, int]:
    """Inputs of each cell, by name; every benchmark split is read once (methods share its items)."""
    sizes: dict[tuple[Any, ...], int] = {}
    for p in todo:
        key = (p.cell.benchmark, p.cell.benchmark_options, p.cell.split)
        if key not in sizes:
            sizes[key] = len(ctx.benchmark(p.cell).items(p.cell.split))
    return {p.cell.name: sizes[(p.cell.benchmark, p.cell.benchmark_options, p.cell.split)] for p in todo}


def _run_local(todo: list[CellPlan], ctx: _Context, device: str, dtype: str, batch_size: int, results_dir: Path,
               base: dict[str, Any], summary: RunSummary, progress: bool) -> None:
    """Cells one after another in this process, model by model so that each checkpoint loads once."""
    from tqdm.auto import tqdm

    todo = sorted(todo, key=lambda p: str(ctx.checkpoint(p.cell.model)[0]))  # stable: matrix order within a model
    models = _Models(device, dtype)
    n_items = _input_counts(todo, ctx)
    bar_cells = tqdm(total=len(todo), desc="cells", unit="cell", disable=not progress, position=0)
    bar_items = tqdm(total=sum(n_items.values()), desc="inputs", unit="input", disable=not progress, position=1)
    try:
        for p in todo:
            bar_cells.set_postfix_str(p.cell.name)
            try:
                summary.ran.append(run_cell(p.cell, p.fingerprint, ctx, models, batch_size, results_dir,
                                            bar_items.update, base))
            except (RunnerError, ValueError, OSError) as exc:
                summary.failed.append((p.cell.name, str(exc)))
                bar_items.update(n_items[p.cell.name])
            bar_cells.update(1)
    finally:
        bar_items.close()
        bar_cells.close()


def summary_table(summary: RunSummary) -> str:
    """A plain-text table of the cells run: cell, n, accuracy or CHAIR_i, F1, yes-ratio, seconds per input."""
    rows = [("cell", "n", "acc %", "F1 %", "yes", "CHAIR_i %", "s/input")]
    for r in summary.ran:
        m = r.metrics

        def pct(key: str) -> str:
            return f"{100 * m[key]:.1f}" if key in m else "-"

        rows.append((r.cell, str(r.n_samples), pct("accuracy"), pct("f1"),
                     f"{m['yes_ratio']:.2f}" if "yes_ratio" in m else "-", pct("chair_i"), f"{r.seconds_per_input:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
