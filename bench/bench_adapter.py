"""Speed of LlavaAdapter.generate: seconds per input at batch 1 and batch 16 (not a test).

By default it builds the tiny random-weight LLaVA of ``tests/tiny_llava.py`` in a temporary
folder, so it runs anywhere in seconds; ``--checkpoint`` measures a real one instead (a local
directory or a hub id already in the local Hugging Face cache; nothing is downloaded).

    PYTHONPATH=. python bench/bench_adapter.py
    PYTHONPATH=. python bench/bench_adapter.py --checkpoint llava-hf/llava-1.5-7b-hf --device cuda --n 64

Each setting runs once untimed (warm-up), then ``--repeats`` times; the best run is reported,
with the answers checked to be identical across batch sizes.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from plugins.models.adapter import LlavaAdapter  # noqa: E402
from plugins.models.batch import Batch  # noqa: E402
from tests.tiny_llava import build_tiny_llava, random_images  # noqa: E402

QUESTIONS = ["is there a cat in the image ?", "what color is the big square ?",
             "is there a red circle on the left of the small triangle ?", "how many dogs are there ?"]


def seconds_per_input(adapter: LlavaAdapter, batch: Batch, batch_size: int, max_new_tokens: int,
                      repeats: int) -> tuple[float, list[str]]:
    answers = adapter.generate(batch[:batch_size], max_new_tokens=max_new_tokens, batch_size=batch_size)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if adapter.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        answers = adapter.generate(batch, max_new_tokens=max_new_tokens, batch_size=batch_size)
        if adapter.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best / len(batch), answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="directory or cached hub id (default: a tiny random LLaVA)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16")
    parser.add_argument("--n", type=int, default=32, help="inputs per run")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-sizes", default="1,16", help="comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        source = args.checkpoint or build_tiny_llava(Path(tmp) / "tiny-llava")
        start = time.perf_counter()
        adapter = LlavaAdapter.load(source, device=args.device, dtype=args.dtype)
        load_seconds = time.perf_counter() - start
        size = adapter.processor.image_processor.crop_size["height"]
        batch = Batch(images=random_images(args.n, seed=0, size=max(size, 32)),
                      prompts=[QUESTIONS[i % len(QUESTIONS)] for i in range(args.n)])
        print(f"checkpoint: {args.checkpoint or 'tiny random LLaVA (tests/tiny_llava.py)'}")
        print(f"device {adapter.device}, dtype {adapter.dtype}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} CPU threads, {platform.processor() or platform.machine()}")
        print(f"load {load_seconds:.2f} s; {args.n} inputs, max_new_tokens={args.max_new_tokens}, "
              f"best of {args.repeats}")
        reference = None
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            per_input, answers = seconds_per_input(adapter, batch, batch_size, args.max_new_tokens, args.repeats)
            same = "" if reference is None else ("  (same answers)" if answers == reference else "  (ANSWERS DIFFER)")
            reference = reference or answers
            print(f"batch {batch_size:>3}: {per_input * 1000:8.2f} ms per input{same}")


if __name__ == "__main__":
    main()
