"""How fast the synthetic world makes data: scenes per second on one CPU core.

    python bench/bench_world.py            # 5,000 scenes at 64 px
    python bench/bench_world.py --n 20000 --image-size 96

Reports sample-only, sample + render, and sample + render + text (caption, noisy caption,
6 adversarial existence, 2 attribute and 2 relation questions). The target is >= 1,000 scenes
per second for sample + render at 64 px, so data for a training run can be generated on the fly.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout, not an installed copy

import numpy as np  # noqa: E402

from plugins.world import (  # noqa: E402
    SceneSampler, WorldConfig, WorldStats, attribute_questions, caption, existence_questions,
    noisy_caption, relation_questions, render,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="scenes per measurement")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs is reported")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        # One core, as the target says; a busy neighbour core then cannot flatter the number.
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cfg = WorldConfig(image_size=args.image_size)
    sampler = SceneSampler(cfg)
    stats = WorldStats.estimate(cfg, n=2000)
    for scene in sampler.scenes("bench", 200):  # warm-up: fills the shape-mask cache
        render(scene, cfg)

    def sample_only(i: int) -> None:
        sampler.sample_split("bench", i)

    def sample_render(i: int) -> None:
        render(sampler.sample_split("bench", i), cfg)

    def sample_render_text(i: int) -> None:
        scene = sampler.sample_split("bench", i)
        render(scene, cfg)
        caption(scene, cfg)
        noisy_caption(scene, cfg, sampler=sampler)
        existence_questions(scene, cfg, strategy="adversarial", stats=stats)
        attribute_questions(scene, cfg)
        relation_questions(scene, cfg)

    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.processor() or platform.machine()}, "
          f"cpus used: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else 'all'}")
    print(f"{args.n} scenes at {cfg.image_size} px, best of {args.repeats}")
    for name, fn in (("sample", sample_only), ("sample+render", sample_render), ("sample+render+text", sample_render_text)):
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            for i in range(args.n):
                fn(i)
            best = min(best, time.perf_counter() - start)
        print(f"{name:>20}: {args.n / best:9,.0f} scenes/s  ({best / args.n * 1e6:6.1f} us/scene)")


if __name__ == "__main__":
    main()
