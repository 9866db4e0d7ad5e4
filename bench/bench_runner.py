"""Speed of the experiment side on this machine: answering throughput and cold/warm reproduce times.

    python bench/bench_runner.py                 # default model, threads = all cores
    python bench/bench_runner.py --threads 2 --items 512 --skip-reproduce
    python bench/bench_runner.py --skip-throughput --experiments default,parameter-frozen,paper-beam

1. Inputs per second of greedy POPE answering (world-pope/random, baseline) on the default
   checkpoint, for batch sizes 1-64 (median of ``--repeats`` runs, each over the same items).
2. ``alignscope reproduce`` on the default matrix into a fresh results folder (cold: every cell
   runs), then again (warm: every cell is cached), each timed as a separate process, wall clock.
   ``--experiments`` keeps only the named experiments of ``plugins/reproduce.yaml``; caches
   (tuned weights, steering directions, detectors) and test sets then start empty too, so the cold
   time includes everything a fresh clone pays. ``--jobs`` is passed on (``make reproduce``: 2).
   The issue-6 target (the default model's baseline and parameter-frozen cells within 10 minutes
   on 2 cores) is the third command above.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def throughput(threads: int, n_items: int, repeats: int, sizes: list[int]) -> None:
    import torch

    from plugins.benchmarks.base import load_image
    from plugins.models.adapter import LlavaAdapter
    from plugins.models.batch import Batch
    from plugins.models.lookup import TINY_LLAVA_CHECKPOINT
    from plugins.registry import get_benchmark

    torch.set_num_threads(threads)
    adapter = LlavaAdapter.load(TINY_LLAVA_CHECKPOINT, device="cpu")
    bench = get_benchmark("world-pope")()
    items = bench.items("random")[:n_items]
    batch = Batch([load_image(i.image) for i in items], [i.prompt for i in items], [i.id for i in items])
    adapter.generate(batch[:8], max_new_tokens=bench.max_new_tokens, batch_size=8)  # warm-up
    print(f"throughput: {adapter!r}, {len(items)} POPE questions, greedy, max_new_tokens={bench.max_new_tokens}, "
          f"{threads} threads, median of {repeats}")
    print(f"{'batch':>6} {'inputs/s':>10} {'ms/input':>9}")
    base = None
    for size in sizes:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            adapter.generate(batch, max_new_tokens=bench.max_new_tokens, batch_size=size)
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        rate = len(items) / t
        base = base or rate
        print(f"{size:>6} {rate:>10.1f} {1000 * t / len(items):>9.2f}   ({rate / base:.1f}x batch 1)")


def reproduce_times(experiments: list[str], jobs: int) -> None:
    import json

    import yaml

    cli = [sys.executable, "-m", "alignscope.cli", "reproduce", "--no-progress", "--jobs", str(jobs)]
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        if experiments:
            matrix = yaml.safe_load((ROOT / "plugins" / "reproduce.yaml").read_text(encoding="utf-8"))
            known = [e["name"] for e in matrix["experiments"]]
            unknown = sorted(set(experiments) - set(known))
            if unknown:
                raise SystemExit(f"unknown experiment(s) {unknown}; the matrix has {known}")
            matrix["experiments"] = [e for e in matrix["experiments"] if e["name"] in experiments]
            (Path(tmp) / "matrix.yaml").write_text(yaml.safe_dump(matrix, sort_keys=False), encoding="utf-8")
            cli += ["--matrix", str(Path(tmp) / "matrix.yaml")]
            env.update(ALIGNSCOPE_CACHE=str(Path(tmp) / "cache"), ALIGNSCOPE_DATA=str(Path(tmp) / "data"))
        print(f"reproduce: {', '.join(experiments) or 'the whole matrix'}, {jobs} job(s)")
        for label in ("cold", "warm"):
            t0 = time.perf_counter()
            out = subprocess.run(cli + ["--results", str(results)], cwd=ROOT, capture_output=True, text=True, env=env)
            seconds = time.perf_counter() - t0
            last = (out.stdout.strip().splitlines() or ["(no output)"])[-1]
            if out.returncode:
                print(out.stdout, out.stderr, file=sys.stderr)
                raise SystemExit(f"alignscope reproduce failed ({label})")
            print(f"reproduce {label}: {seconds:.1f} s wall  [{last}]", flush=True)
            if label == "cold":  # where the time went: the cells' own seconds, summed per method
                per_method: dict[str, float] = {}
                for path in results.rglob("*.json"):
                    record = json.loads(path.read_text(encoding="utf-8"))
                    per_method[record["method"]] = per_method.get(record["method"], 0.0) + \
                        record["seconds_per_input"] * record["n_samples"]
                print("  cell seconds by method: " + ", ".join(f"{m} {t:.0f}" for m, t in
                                                              sorted(per_method.items(), key=lambda kv: -kv[1]))
                      + f"; sum {sum(per_method.values()):.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--items", type=int, default=256, help="POPE questions answered per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="1,2,4,8,16,32,64")
    parser.add_argument("--skip-reproduce", action="store_true", help="measure throughput only")
    parser.add_argument("--skip-throughput", action="store_true", help="time reproduce only")
    parser.add_argument("--experiments", default="", help="comma-separated experiment names (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes for reproduce (default 2, as make reproduce)")
    args = parser.parse_args()
    if not args.skip_throughput:
        throughput(args.threads, args.items, args.repeats, [int(s) for s in args.sizes.split(",")])
    if not args.skip_reproduce:
        reproduce_times([e for e in args.experiments.split(",") if e], args.jobs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
