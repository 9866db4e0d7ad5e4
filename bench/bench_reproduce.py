"""How long an unchanged ``make reproduce`` takes: validation, the runner's plan, the site.

    python bench/bench_reproduce.py              # 3 timed runs of make reproduce's three commands
    python bench/bench_reproduce.py --repeats 5

``make reproduce`` runs three commands: ``alignscope validate``, ``alignscope reproduce --jobs 2``
and ``alignscope site``. When nothing changed, the runner answers from its memoised plan and
every cell is current, and the site regenerates nothing; this prints the wall time of each
command and of the three together, as separate processes (what a maintainer waits for), with
the minimum, median and maximum over ``--repeats`` runs after one untimed warm-up run.
The goal of issue 21 is 10 s on 2 cores.

The warm-up run is a real ``make reproduce``: if cells are stale it runs them first (it says
how many it found with ``alignscope reproduce --dry-run`` before starting).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMMANDS = {
    "validate": [str(BIN / "alignscope"), "validate"],
    "reproduce": [str(BIN / "alignscope"), "reproduce", "--device", "auto", "--jobs", "2", "--no-progress"],
    "site": [str(BIN / "alignscope"), "site"],
}


def timed(command: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up (default 3)")
    args = parser.parse_args(argv)
    dry = subprocess.run([str(BIN / "alignscope"), "reproduce", "--dry-run"], cwd=ROOT, capture_output=True, text=True)
    print(f"before the warm-up: {(dry.stdout.strip().splitlines() or ['(no output)'])[-1]}")
    for command in COMMANDS.values():  # warm-up: brings results, memo, caches and site up to date
        subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    times: dict[str, list[float]] = {name: [] for name in [*COMMANDS, "total"]}
    for _ in range(args.repeats):
        total = 0.0
        for name, command in COMMANDS.items():
            seconds = timed(command)
            times[name].append(seconds)
            total += seconds
        times["total"].append(total)
    print(f"unchanged make reproduce, {args.repeats} runs, wall seconds per command (separate processes):")
    print(f"  {'command':<12}{'min':>8}{'median':>8}{'max':>8}")
    for name, values in times.items():
        print(f"  {name:<12}{min(values):>8.2f}{statistics.median(values):>8.2f}{max(values):>8.2f}")
    goal = 10.0
    median = statistics.median(times["total"])
    print(f"goal: <= {goal:.0f} s in all: {'met' if median <= goal else 'NOT met'} (median {median:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
