"""Quick evaluation of a tiny-LLaVA checkpoint on the world's held-out "test" stream.

    python bench/eval_tiny_llava.py                                   # the committed default checkpoint
    python bench/eval_tiny_llava.py --checkpoint /tmp/tiny --limit 600 --json out.json

Loads the checkpoint with plain ``AutoProcessor`` / ``LlavaForConditionalGeneration``, answers the
world's question benchmarks (POPE protocol with random / popular / adversarial negatives, colour
questions, relation questions: :mod:`plugins.embedded.quick_eval`) greedily, scores with the official
POPE parser, and prints accuracy, F1 and yes-ratio next to the misalignment-profile targets
(POPE random >= 85 %, adversarial >= 5 points below it; LLaVA-1.5-7B: 88.4 / 84.8 / 77.9 %), then
the caption-hallucination figures (CHAIR_s, CHAIR_i and their attribute and relation analogues,
object recall) and the representation-alignment figures (cosine margin, mutual k-NN, linear CKA).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # evaluate this checkout, not an installed copy
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoProcessor, LlavaForConditionalGeneration  # noqa: E402

from plugins.embedded.quick_eval import evaluate, format_table, pope_gap  # noqa: E402
from plugins.embedded.train import DEFAULT_CHECKPOINT  # noqa: E402
from plugins.world import WorldConfig  # noqa: E402


def world_of(checkpoint: Path) -> WorldConfig:
    """The world the checkpoint was trained in (from its training_log.json), else the default world."""
    log = checkpoint / "training_log.json"
    if log.is_file():
        return WorldConfig(**json.loads(log.read_text(encoding="utf-8"))["config"]["world"])
    return WorldConfig()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--limit", type=int, default=None, help="questions per split (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the metrics here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    processor = AutoProcessor.from_pretrained(args.checkpoint)
    model = LlavaForConditionalGeneration.from_pretrained(args.checkpoint).eval()
    world = world_of(args.checkpoint)
    t0 = time.perf_counter()
    results = evaluate(model, processor, world, limit=args.limit, batch_size=args.batch_size, extras=True)
    print(f"{args.checkpoint} on the world test set {results['test_set']} ({results['n_questions']} questions, "
          f"{time.perf_counter() - t0:.0f} s, {args.threads} threads)")
    print(format_table(results))
    acc = {s: 100 * results["pope"][s]["accuracy"] for s in ("random", "popular", "adversarial")}
    gap = 100 * pope_gap(results)
    print(f"\nPOPE random/popular/adversarial: {acc['random']:.1f} / {acc['popular']:.1f} / {acc['adversarial']:.1f} % "
          f"(LLaVA-1.5-7B: 88.4 / 84.8 / 77.9 %)")
    print(f"target: random >= 85 % [{'ok' if acc['random'] >= 85 else 'MISSED'}], "
          f"adversarial >= 5 points below random [{'ok' if gap >= 5 else 'MISSED'}: {gap:.1f}]")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
