"""What each experiment of the matrix costs, from the committed records, against the cold-run budget.

    python bench/bench_matrix_cost.py            # reads results/ and plugins/reproduce.yaml
    python bench/bench_matrix_cost.py --budget-minutes 45

Prints, per experiment of ``plugins/reproduce.yaml``: cells, cells with a record, inputs, answering
seconds (Σ seconds per input × inputs over its records: one worker's time spent answering), its
one-off trainings and their seconds (``provenance.train_seconds``); then the whole matrix (shared
cells and trainings counted once) and the serial estimate of a cold run (answering + training)
beside the budget. The measured wall time of a cold run is ``bench/bench_runner.py``'s; this
script needs no model and runs in a second, so it can be read each time methods are added.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout to read (default: this one)")
    parser.add_argument("--budget-minutes", type=float, default=45.0, help="cold full-matrix budget on 2 cores")
    args = parser.parse_args()

    from plugins.api import load_results
    from site_gen.guide import experiment_costs, read_matrix

    experiments, problem = read_matrix(args.root)
    if problem:
        print(f"cannot read the matrix: {problem}", file=sys.stderr)
        return 2
    records, problems = load_results(args.root / "results")
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    rows, total = experiment_costs(experiments, records)
    header = f"{'experiment':<24} {'cells':>6} {'recorded':>8} {'inputs':>9} {'answer s':>9} {'trainings':>9} {'train s':>8}"
    print(header)
    print("-" * len(header))
    for c in rows + ([total] if total else []):
        cells = "" if c.cells is None else str(c.cells)
        print(f"{c.label:<24} {cells:>6} {c.recorded:>8} {c.inputs:>9,} {c.answer_seconds:>9.0f} {c.trainings:>9} "
              f"{c.train_seconds:>8.0f}")
    if total:
        serial = (total.answer_seconds + total.train_seconds) / 60
        missing = (total.cells or 0) - total.recorded
        print(f"\nserial cold estimate: {serial:.1f} min of answering and training on one worker "
              f"(budget {args.budget_minutes:g} min on 2 cores; a cold run also generates test sets and loads models)"
              + (f"; {missing} cells have no record yet and are not counted" if missing > 0 else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
