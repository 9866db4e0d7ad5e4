"""Cost of each mitigation method against the unmitigated baseline, on the default model.

    python bench/bench_methods.py                       # all registered methods, batch 1 and 64
    python bench/bench_methods.py --methods vcd,sid --sizes 1,4,8,16,64 --paths

For every method: seconds per input answering ``--items`` world-pope/adversarial questions
(median of ``--repeats`` runs over the same items), at each batch size, and its ratio to the
baseline at the same batch size (the median over runs of method / a baseline run just before
it). ``--paths`` also times the two ways a contrastive method can run its contrast stream (joint: in the main forward pass; separate: its own pass with its own
cache), which is how ``plugins.methods.contrastive.JOINT_PASS_MAX_BATCH`` was chosen.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="", help="comma-separated names (default: every registered method)")
    parser.add_argument("--sizes", default="1,64", help="batch sizes (default 1,64; 64 is the matrix default)")
    parser.add_argument("--items", type=int, default=128, help="questions per run (default 128)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is shown (default 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--paths", action="store_true", help="also time joint vs separate contrast passes")
    args = parser.parse_args()

    import torch

    from plugins.benchmarks.base import load_image
    from plugins.methods.contrastive import ContrastiveMethod
    from plugins.models.adapter import LlavaAdapter
    from plugins.models.batch import Batch
    from plugins.models.lookup import TINY_LLAVA_CHECKPOINT
    from plugins.registry import create_method, get_benchmark, list_methods

    torch.set_num_threads(args.threads)
    adapter = LlavaAdapter.load(TINY_LLAVA_CHECKPOINT, device="cpu")
    bench = get_benchmark("world-pope")()
    items = bench.items("adversarial")[:args.items]
    batch = Batch([load_image(i.image) for i in items], [i.prompt for i in items], [i.id for i in items])
    sizes = [int(s) for s in args.sizes.split(",")]
    names = [n for n in args.methods.split(",") if n] or list_methods()
    names = ["baseline"] + [n for n in names if n != "baseline"]

    baseline = create_method("baseline")

    def one_run(method, size: int) -> float:
        start = time.perf_counter()
        adapter.generate(batch, max_new_tokens=bench.max_new_tokens, method=method, batch_size=size)
        return (time.perf_counter() - start) / len(batch)

    def timed(method, size: int) -> tuple[float, float]:
        """(median seconds per input, median ratio to the baseline): each run of the method is paired
        with a baseline run just before it, so a drift in the machine's speed cancels in the ratio."""
        for m in (baseline, method):  # warm-up
            adapter.generate(batch[:size], max_new_tokens=bench.max_new_tokens, method=m, batch_size=size)
        runs, ratios = [], []
        for _ in range(args.repeats):
            b = one_run(baseline, size)
            runs.append(one_run(method, size))
            ratios.append(runs[-1] / b)
        return statistics.median(runs), statistics.median(ratios)

    print(f"# {len(batch)} world-pope/adversarial questions, {args.threads} threads, median of {args.repeats}")
    print(f"{'method':12s}" + "".join(f"  {'ms/input b' + str(s):>14s}  {'x base':>7s}" for s in sizes))
    for name in names:
        method = baseline if name == "baseline" else create_method(name)
        row = f"{name:12s}"
        for size in sizes:
            t, ratio = timed(method, size)
            row += f"  {1000 * t:14.2f}  {ratio:7.2f}"
        print(row, flush=True)
        if args.paths and isinstance(method, ContrastiveMethod):
            for joint in (True, False):
                method.joint_pass = joint
                row = f"  {'joint' if joint else 'separate':10s}"
                for size in sizes:
                    t, ratio = timed(method, size)
                    row += f"  {1000 * t:14.2f}  {ratio:7.2f}"
                print(row, flush=True)
            method.joint_pass = None


if __name__ == "__main__":
    main()
