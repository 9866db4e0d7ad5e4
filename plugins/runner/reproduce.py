"""``alignscope reproduce``: plan the matrix, run what is not current, write the index.

:func:`run` plans every cell (:mod:`plugins.runner.plan`; from the memo when nothing changed, so
an unchanged matrix is answered without importing torch), runs the cells whose fingerprint has
no record yet with one of the executors (:mod:`plugins.runner.executors`), and rewrites
``results/index.json`` with every cell's state.

**One run at a time per results folder.** A run holds a lock on ``results/`` (:data:`LOCK_NAME`,
see :func:`plugins.files.exclusive`) from its first write to its last; a second run started
meanwhile says who holds it and waits (``wait=False``: refuses at once). ``--dry-run`` never
waits: while a run holds the lock it plans but leaves the index to that run.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Union

from plugins.config import unknown
from plugins.files import Busy, exclusive
from plugins.runner.executors import (
    RunSummary, input_counts, provenance_base, run_in_processes, run_local, run_on_ray,
)
from plugins.runner.fingerprint import Context
from plugins.runner.matrix import DEFAULT_MATRIX, RunnerError, load_matrix
from plugins.runner.plan import CellPlan, Planned, matching, plan_matrix, write_index

__all__ = ["run", "dry_run", "summary_table", "stale_cells", "DEFAULT_RESULTS", "EXECUTORS"]

DEFAULT_RESULTS = Path(__file__).resolve().parents[2] / "results"
LOCK_NAME = ".reproduce.lock"
"""The lock file of a results folder, held by the run writing into it."""
EXECUTORS = ("local", "ray")


def dry_run(matrix_path: Union[str, Path] = DEFAULT_MATRIX, *, only: Optional[str] = None,
            results_dir: Union[str, Path] = DEFAULT_RESULTS, dtype: Optional[str] = None,
            data_dir: Optional[Path] = None, echo: Callable[[str], None] = print) -> Planned:
    """The plan of every cell (matching ``only``) and the matrix's problems, as ``reproduce --dry-run``
    lists them; refreshes the index unless a run is writing ``results_dir`` (then says so)."""
    results_dir = Path(results_dir)
    planned = plan_matrix(Path(matrix_path), results_dir, dtype=dtype, data_dir=data_dir)
    try:
        with exclusive(results_dir / LOCK_NAME, str(results_dir), wait=False):
            write_index(results_dir, planned.plans, Path(matrix_path))
    except Busy as exc:
        echo(f"note: {exc}; this plan may change as it finishes, and the index is left to it")
    return planned._replace(plans=matching(planned.plans, only))


def stale_cells(results_dir: Path = DEFAULT_RESULTS, matrix_path: Path = DEFAULT_MATRIX,
                data_dir: Optional[Path] = None) -> frozenset[str]:
    """Cells of the matrix whose stored record no longer matches the code, config, checkpoint or data."""
    plans = plan_matrix(Path(matrix_path), Path(results_dir), data_dir=data_dir).plans
    return frozenset(p.cell.name for p in plans if p.status == "stale")


def run(matrix_path: Union[str, Path] = DEFAULT_MATRIX, *, only: Optional[str] = None,
        results_dir: Union[str, Path] = DEFAULT_RESULTS, device: Optional[str] = None, dtype: Optional[str] = None,
        batch_size: Optional[int] = None, data_dir: Optional[Path] = None, force: bool = False,
        progress: bool = True, executor: str = "local", gpus_per_cell: float = 0, jobs: int = 1,
        wait: bool = True, echo: Callable[[str], None] = print) -> RunSummary:
    """Run every cell of the matrix that is not current; see the module docstring.

    ``executor``: ``local`` (this machine: in this process, model by model, or with ``jobs`` > 1
    in that many worker processes) or ``ray`` (one Ray task per cell, ``gpus_per_cell`` GPUs
    each). Only the in-process run shows per-input progress; the others count cells. While another
    run holds ``results_dir``, wait for it (``wait``) or raise :class:`RunnerError`.
    """
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise RunnerError(f"jobs is {jobs!r}, expected a positive number of worker processes")
    if executor not in EXECUTORS:
        raise RunnerError(unknown("executor", executor, EXECUTORS))
    t_start = time.perf_counter()
    matrix_path = Path(matrix_path)
    results_dir = Path(results_dir)
    try:
        with exclusive(results_dir / LOCK_NAME, str(results_dir), wait=wait, on_wait=echo):
            summary = _run_locked(matrix_path, only, results_dir, device, dtype, batch_size, data_dir, force,
                                  progress, executor, gpus_per_cell, jobs, echo)
    except Busy as exc:
        raise RunnerError(f"{exc}; not started (run again when it has finished, or let it wait)") from None
    summary.seconds = time.perf_counter() - t_start
    return summary


def _run_locked(matrix_path: Path, only: Optional[str], results_dir: Path, device: Optional[str],
                dtype: Optional[str], batch_size: Optional[int], data_dir: Optional[Path], force: bool,
                progress: bool, executor: str, gpus_per_cell: float, jobs: int,
                echo: Callable[[str], None]) -> RunSummary:
    """:func:`run`, with ``results_dir`` held by this process."""
    for leftover in results_dir.rglob(".*.tmp"):  # of a run killed mid-write (never a finished cell: those are renamed)
        leftover.unlink(missing_ok=True)
    everything, ctx, problems = plan_matrix(matrix_path, results_dir, dtype=dtype, data_dir=data_dir)
    plans = matching(everything, only)
    if not plans and not problems:
        raise RunnerError(f"no cell of {matrix_path} matches --only {only!r}" if only else f"{matrix_path} has no cells")
    for problem in problems:
        echo(f"not run: {problem}")
    todo = [p for p in plans if p.status != "error" and (force or p.status != "cached")]
    summary = RunSummary(cached=[p.cell.name for p in plans if p.status == "cached" and not force],
                         failed=[(p.cell.name, p.error) for p in plans if p.status == "error"], problems=problems)
    if summary.cached:
        echo(f"{len(summary.cached)} of {len(plans)} cells unchanged (fingerprints match): skipped")
    if todo:
        _run_cells(todo, ctx, matrix_path, results_dir, device, dtype, batch_size, data_dir, progress, executor,
                   gpus_per_cell, jobs, summary)
        everything = plan_matrix(matrix_path, results_dir, dtype=dtype, data_dir=data_dir).plans
    write_index(results_dir, everything, matrix_path)  # every cell of the matrix, whatever --only ran
    summary.comparisons, summary.comparison_problems = _compare(matrix_path, results_dir, everything, progress)
    return summary


def _compare(matrix_path: Path, results_dir: Path, plans: list[CellPlan], progress: bool) -> tuple[int, list[str]]:
    """Rewrite ``results/comparisons.json`` from the current records (unchanged pairs are reused)."""
    from plugins.api import ResultRecord
    from plugins.compare import comparison_pairs, oracle_of, write_comparisons

    records = []
    for p in plans:
        if p.status != "cached" or p.record is None:
            continue  # a stale, failed or missing cell has no current record to compare
        try:
            records.append(ResultRecord.model_validate(p.record))
        except ValueError:
            continue
    bar = None

    def tick(i: int, n: int) -> None:
        nonlocal bar
        if progress and bar is None and n > 20:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="comparisons", unit="pair", leave=False)
        if bar is not None:
            bar.update(1)

    comparisons, problems = write_comparisons(results_dir, comparison_pairs(load_matrix(matrix_path)), records,
                                       oracle=lambda r: oracle_of(str(r.provenance.method_config.get("plugin", r.method))),
                                       progress=tick)
    if bar is not None:
        bar.close()
    return len(comparisons), problems


def _run_cells(todo: list[CellPlan], ctx: Optional[Context], matrix_path: Path, results_dir: Path,
               device: Optional[str], dtype: Optional[str], batch_size: Optional[int], data_dir: Optional[Path],
               progress: bool, executor: str, gpus_per_cell: float, jobs: int, summary: RunSummary) -> None:
    from tqdm.auto import tqdm

    matrix = load_matrix(matrix_path)
    device = device or matrix.defaults.device
    dtype = dtype or matrix.defaults.dtype
    batch_size = batch_size or matrix.defaults.batch_size
    if ctx is None:  # the plan came from the memo: build what running needs (planning prepared the benchmarks otherwise)
        ctx = Context(data_dir, dtype)
        for p in {(p.cell.benchmark, p.cell.benchmark_options): p for p in todo}.values():
            try:
                ctx.benchmark(p.cell).prepare()
            except Exception:  # noqa: BLE001 - the cell fails alone when it runs
                pass
    order = {p.cell.name: i for i, p in enumerate(todo)}

    def model_key(p: CellPlan) -> str:
        try:
            return str(ctx.checkpoint(p.cell.model)[0])
        except Exception:  # noqa: BLE001
            return ""

    todo = sorted(todo, key=lambda p: (model_key(p), order[p.cell.name]))  # each checkpoint loads once
    base = provenance_base()
    n_items = input_counts(todo, ctx)
    if executor == "ray" or jobs > 1:
        bar = tqdm(total=len(todo), desc="cells", unit="cell", disable=not progress)
        try:
            if executor == "ray":
                run_on_ray(todo, ctx, device, dtype, batch_size, results_dir, base, summary, gpus_per_cell,
                           lambda: bar.update(1))
            else:
                run_in_processes(todo, ctx, device, dtype, batch_size, results_dir, base, summary, jobs,
                                 lambda: bar.update(1), n_items)
        finally:
            bar.close()
    else:
        run_local(todo, ctx, device, dtype, batch_size, results_dir, base, summary, progress, n_items)


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
