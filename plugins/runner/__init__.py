"""The runner: the experiment matrix of ``reproduce.yaml``, cell by cell, cached by fingerprint.

* :mod:`plugins.runner.matrix` — the matrix file's schema and its expansion into cells;
* :mod:`plugins.runner.fingerprint` — what identifies a cell's numbers;
* :mod:`plugins.runner.plan` — which cells must run and why, the memoised plan, ``results/index.json``;
* :mod:`plugins.runner.executors` — one cell computed and written; in this process, in worker
  processes, or on Ray; failures saved beside the records;
* :mod:`plugins.runner.reproduce` — :func:`run`, what ``alignscope reproduce`` calls.
"""
from plugins.runner.executors import RunSummary, compute_cell, run_cell, write_cell
from plugins.runner.fingerprint import FINGERPRINT_VERSION, Context, cell_identity
from plugins.runner.matrix import DEFAULT_MATRIX, Cell, Experiment, Matrix, RunnerError, expand, expand_all, load_matrix
from plugins.runner.plan import INDEX_NAME, CellPlan, Planned, error_path, plan, plan_matrix, write_index
from plugins.runner.reproduce import DEFAULT_RESULTS, LOCK_NAME, dry_run, run, stale_cells, summary_table

__all__ = ["RunnerError", "Matrix", "Experiment", "Cell", "load_matrix", "expand", "expand_all", "Context", "cell_identity",
           "FINGERPRINT_VERSION", "CellPlan", "Planned", "plan", "plan_matrix", "write_index", "error_path", "INDEX_NAME",
           "run", "dry_run", "stale_cells", "summary_table", "RunSummary", "compute_cell", "write_cell", "run_cell",
           "DEFAULT_MATRIX", "DEFAULT_RESULTS", "LOCK_NAME"]
