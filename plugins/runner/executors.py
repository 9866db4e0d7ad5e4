"""Running cells: one cell computed and written, and three ways to run many (here, in worker processes, on Ray).

**Nothing lost.** Each finished cell is written at once: first its per-sample predictions
(``<cell>.predictions.jsonl.gz``), then its record (``<cell>.json``), each through a temporary file
and a rename. Killing the run loses at most the cells in progress and never leaves a partial
file; the next run starts from the first unfinished cell.

**A failing cell fails alone**, whatever it raises: its error and traceback are saved where its
record would be (``<cell>.error.json``, removed when the cell later succeeds), the run summary
lists it, and the other cells run. Only an interrupt (Ctrl-C) stops the run.
"""
from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import json
import platform
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from plugins.api import Provenance, ResultRecord, git, record_name, result_path, save_record
from plugins.files import write_atomic
from plugins.runner.fingerprint import Context
from plugins.runner.plan import CellPlan, error_path

__all__ = ["RunSummary", "Models", "compute_cell", "write_cell", "run_cell", "record_failure", "provenance_base",
           "run_local", "run_in_processes", "run_on_ray", "input_counts"]


@dataclass
class RunSummary:
    ran: list[ResultRecord] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (cell, "ErrorType: message")
    problems: list[str] = field(default_factory=list)  # "file:line: ..." of what the matrix gets wrong (not run)
    seconds: float = 0.0
    comparisons: int = 0  # comparison records written (plugins.compare)
    comparison_problems: list[str] = field(default_factory=list)  # pairs that could not be compared, and why


class Models:
    """Loaded adapters, one at a time (the matrix is ordered by model, so each loads once)."""

    def __init__(self, device: str, dtype: str):
        self.device, self.dtype = device, dtype
        self.key: Optional[Path] = None
        self.adapter: Any = None

    def get(self, directory: Path) -> Any:
        from plugins.models.adapter import LlavaAdapter

        if self.key != directory:
            self.adapter = None
            self.adapter = LlavaAdapter.load(directory, self.device, self.dtype)
            self.key = directory
        return self.adapter


def provenance_base() -> dict[str, Any]:
    """Provenance shared by every cell of a run: commit, dirty tree, package versions."""
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


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def compute_cell(p: CellPlan, ctx: Context, models: Models, batch_size: int,
                 progress: Optional[Callable[[int], None]] = None,
                 base: Optional[dict[str, Any]] = None) -> tuple[ResultRecord, list[dict[str, Any]]]:
    """Run one cell: ``(record, per-sample rows)``; nothing is written.

    ``seconds_per_input`` is the wall time of the benchmark's evaluation (model and method, not
    loading or a method's once-per-model preparation) divided by the number of inputs.
    """

    cell = p.cell
    directory, _ = ctx.checkpoint(cell.model)
    adapter = models.get(directory)
    bench = ctx.benchmark(cell)
    method = ctx.method(cell)
    items = bench.items(cell.split)
    method.prepare(adapter)  # a tuned method trains or loads here: not part of seconds_per_input
    t0 = time.perf_counter()
    metrics, rows = bench.evaluate(adapter, method, cell.split, items, batch_size=batch_size, seed=cell.seed,
                                   progress=progress, protocol=cell.protocol_settings)
    seconds = time.perf_counter() - t0
    base = base or provenance_base()
    record = ResultRecord(
        method=cell.method, benchmark=cell.benchmark, split=cell.split, model=record_name(cell.model.name),
        protocol=cell.protocol, follows=bench.protocol, seed=cell.seed, n_samples=len(items), metrics=metrics,
        seconds_per_input=seconds / len(items), fingerprint=p.fingerprint,
        provenance=Provenance(
            **base, device=str(adapter.device), dtype=str(adapter.dtype).removeprefix("torch."),
            decoding={**bench.decoding(cell.protocol_settings), "batch_size": batch_size},
            parser=bench.parser, date=_now(),
            method_config={"plugin": cell.plugin, **method.config.model_dump(mode="json")},
            train_seconds=method.train_seconds, identity=p.identity or None,
        ),
        predictions=Path(cell.name).name + ".predictions.jsonl.gz",
    )
    return record, rows


def _predictions_bytes(rows: list[dict[str, Any]]) -> bytes:
    """Gzipped JSON Lines, byte-stable (no timestamp in the gzip header)."""
    raw = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    return gzip.compress(raw, compresslevel=9, mtime=0)


def write_cell(results_dir: Path, record: ResultRecord, rows: list[dict[str, Any]]) -> ResultRecord:
    """Predictions first, then the record (the commit point of the cell), which carries the predictions'
    hash and row count; each written atomically. Clears an old failure; returns the record as written."""
    data = _predictions_bytes(rows)
    record = record.model_copy(update={"predictions_sha256": hashlib.sha256(data).hexdigest(),
                                       "predictions_rows": len(rows)})
    write_atomic(result_path(results_dir, record).with_name(record.predictions), data)
    save_record(results_dir, record)
    error_path(results_dir, record.cell).unlink(missing_ok=True)
    return record


def run_cell(p: CellPlan, ctx: Context, models: Models, batch_size: int, results_dir: Path,
             progress: Optional[Callable[[int], None]] = None, base: Optional[dict[str, Any]] = None) -> ResultRecord:
    """Run one cell and write its predictions and record; returns the record."""
    record, rows = compute_cell(p, ctx, models, batch_size, progress, base)
    return write_cell(results_dir, record, rows)


def record_failure(results_dir: Path, p: CellPlan, error: str, trace: str, summary: RunSummary) -> None:
    """Save a failed cell's error and traceback where its record would be, and list it in the summary."""
    summary.failed.append((p.cell.name, error))
    payload = {"cell": p.cell.name, "fingerprint": p.fingerprint, "error": error, "traceback": trace, "date": _now()}
    try:
        write_atomic(error_path(results_dir, p.cell.name), json.dumps(payload, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # the summary still lists it


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- in this process

def run_local(todo: list[CellPlan], ctx: Context, device: str, dtype: str, batch_size: int, results_dir: Path,
              base: dict[str, Any], summary: RunSummary, progress: bool, n_items: dict[str, int]) -> None:
    """Cells one after another in this process, in the order given (the caller groups them by model)."""
    from tqdm.auto import tqdm

    models = Models(device, dtype)
    bar_cells = tqdm(total=len(todo), desc="cells", unit="cell", disable=not progress, position=0)
    bar_items = tqdm(total=sum(n_items.values()), desc="inputs", unit="input", disable=not progress, position=1)
    try:
        for p in todo:
            bar_cells.set_postfix_str(p.cell.name)
            done = {"n": 0}

            def advance(n: int) -> None:
                done["n"] += n
                bar_items.update(n)

            try:
                summary.ran.append(run_cell(p, ctx, models, batch_size, results_dir, advance, base))
            except Exception as exc:  # noqa: BLE001 - a failing cell fails alone, whatever it raises
                record_failure(results_dir, p, _describe(exc), traceback.format_exc(), summary)
                bar_items.update(max(0, n_items.get(p.cell.name, 0) - done["n"]))
            bar_cells.update(1)
    finally:
        bar_items.close()
        bar_cells.close()


# ---------------------------------------------------------------- in worker processes or Ray tasks

def _remote_cell(p: CellPlan, data_dir: Optional[Path], device: str, dtype: str, batch_size: int,
                 base: dict[str, Any]) -> dict[str, Any]:
    """A worker task: one cell computed; the driver writes what it returns. Never raises for the cell's own errors."""
    try:
        ctx = Context(data_dir, dtype)
        record, rows = compute_cell(p, ctx, Models(device, dtype), batch_size, None, base)
        return {"record": record.model_dump_json(), "rows": rows}
    except Exception as exc:  # noqa: BLE001 - reported by the driver, the cell fails alone
        return {"error": _describe(exc), "traceback": traceback.format_exc()}


def _remote_prepare(p: CellPlan, data_dir: Optional[Path], device: str, dtype: str) -> dict[str, Any]:
    """A worker task: train (or load) the cell's method for its model; the result lands in the artifact cache."""
    try:
        ctx = Context(data_dir, dtype)
        ctx.method(p.cell).prepare(Models(device, dtype).get(ctx.checkpoint(p.cell.model)[0]))
        return {}
    except Exception as exc:  # noqa: BLE001
        return {"error": _describe(exc), "traceback": traceback.format_exc()}


def _take(p: CellPlan, result: Callable[[], dict[str, Any]], results_dir: Path, summary: RunSummary) -> None:
    """Write what a worker computed for ``p`` (driver side); any failure, the worker's or the pool's, fails that cell only."""
    try:
        out = result()
        if "error" in out:
            record_failure(results_dir, p, out["error"], out.get("traceback", ""), summary)
            return
        record = ResultRecord.model_validate_json(out["record"])
        summary.ran.append(write_cell(results_dir, record, out["rows"]))
    except Exception as exc:  # noqa: BLE001 - a dead worker (BrokenProcessPool), a bad record, a full disk
        record_failure(results_dir, p, _describe(exc), traceback.format_exc(), summary)


def _preparation_key(p: CellPlan, ctx: Context) -> Optional[tuple[Any, ...]]:
    """(checkpoint, plugin, config) when the cell's method prepares something (trains), else None."""
    from plugins.methods.base import Method

    if type(ctx.method(p.cell)).prepare is Method.prepare:
        return None
    return (str(ctx.checkpoint(p.cell.model)[0]), p.cell.plugin, p.cell.config)


def _worker_init(threads: int) -> None:
    """Set up a worker process: its torch threads, and a watch that ends it when the driver dies.

    A worker blocks on its task queue and would otherwise outlive a driver killed with ``kill -9``
    (re-parented to PID 1, holding its memory for good). The watch waits on the parent's
    sentinel, which becomes ready the moment the driver exits however it exits.
    """
    import multiprocessing
    import os
    import threading

    import torch

    torch.set_num_threads(threads)
    parent = multiprocessing.parent_process()
    if parent is not None:
        def end_with_parent() -> None:
            parent.join()
            os._exit(1)

        threading.Thread(target=end_with_parent, name="end-with-driver", daemon=True).start()


def worker_pool(jobs: int, threads: int) -> "concurrent.futures.ProcessPoolExecutor":
    """``jobs`` spawned worker processes with ``threads`` torch threads each, which end when this process does."""
    import concurrent.futures
    import multiprocessing

    return concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=_worker_init, initargs=(threads,))


def run_in_processes(todo: list[CellPlan], ctx: Context, device: str, dtype: str, batch_size: int,
                     results_dir: Path, base: dict[str, Any], summary: RunSummary, jobs: int,
                     on_done: Callable[[], None], n_items: dict[str, int]) -> None:
    """Cells in ``jobs`` worker processes with ``cores // jobs`` torch threads each; the driver writes records.

    On a CPU a tiny model keeps two threads only partly busy (thread hand-offs dominate its
    small matrix products), so two one-thread processes answer more inputs per second than one
    two-thread process (``bench/bench_methods.py --threads 1`` against the default).
    """
    import concurrent.futures
    import os

    threads = max(1, (os.cpu_count() or 1) // jobs)
    todo = sorted(todo, key=lambda p: -n_items[p.cell.name])  # longest first: no worker ends alone with a big cell
    waiting: dict[tuple[Any, ...], list[CellPlan]] = {}  # cells whose method must train first, by what it trains
    ready = []
    for p in todo:
        key = _preparation_key(p, ctx)
        (waiting.setdefault(key, []) if key is not None else ready).append(p)
    with worker_pool(jobs, threads) as pool:
        def submit(p: CellPlan) -> concurrent.futures.Future:
            return pool.submit(_remote_cell, p, ctx.data_dir, device, dtype, batch_size, base)

        # Training first (once per method and model, not once per cell), the other cells meanwhile.
        preparing = {pool.submit(_remote_prepare, cells[0], ctx.data_dir, device, dtype): key
                     for key, cells in waiting.items()}
        pending = {submit(p): p for p in ready}
        while preparing or pending:
            done, _ = concurrent.futures.wait([*preparing, *pending], return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                if future in preparing:
                    cells = waiting[preparing.pop(future)]
                    try:
                        out = future.result()
                    except Exception as exc:  # noqa: BLE001 - the worker died
                        out = {"error": _describe(exc), "traceback": traceback.format_exc()}
                    if "error" in out:
                        for p in cells:
                            record_failure(results_dir, p, f"preparing {p.cell.plugin} failed: {out['error']}",
                                           out.get("traceback", ""), summary)
                            on_done()
                        continue
                    pending.update({submit(p): p for p in cells})
                else:
                    _take(pending.pop(future), future.result, results_dir, summary)
                    on_done()


def run_on_ray(todo: list[CellPlan], ctx: Context, device: str, dtype: str, batch_size: int, results_dir: Path,
               base: dict[str, Any], summary: RunSummary, gpus_per_cell: float, on_done: Callable[[], None]) -> None:
    """Each cell as one Ray task (``gpus_per_cell`` GPUs each); records are written by the driver as tasks finish.

    Connects to ``$RAY_ADDRESS`` when set, else starts a local Ray instance.
    """
    from plugins.runner.matrix import RunnerError

    try:
        import ray
    except ImportError:
        raise RunnerError("executor 'ray' needs Ray: pip install -e '.[ray]' (Ray stays an optional extra)") from None
    import os

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    task = ray.remote(num_gpus=gpus_per_cell, max_retries=0)(_remote_cell)
    pending = {task.remote(p, ctx.data_dir, device, dtype, batch_size, base): p for p in todo}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        _take(pending.pop(done[0]), lambda: ray.get(done[0]), results_dir, summary)
        on_done()


def input_counts(todo: list[CellPlan], ctx: Context) -> dict[str, int]:
    """Inputs of each cell, by name; every benchmark split is read once (methods share its items). 0 if unreadable."""
    sizes: dict[tuple[Any, ...], int] = {}
    for p in todo:
        key = (p.cell.benchmark, p.cell.benchmark_options, p.cell.split)
        if key not in sizes:
            try:
                sizes[key] = len(ctx.benchmark(p.cell).items(p.cell.split))
            except Exception:  # noqa: BLE001 - the cell will fail and say why when it runs
                sizes[key] = 0
    return {p.cell.name: sizes[(p.cell.benchmark, p.cell.benchmark_options, p.cell.split)] for p in todo}

