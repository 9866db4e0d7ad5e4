"""The committed default checkpoint and the committed results: loadable by plain transformers, and
the stored predictions are what this checkpoint answers today (no number in results/ that the code
and checkpoint in this commit would not produce)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gzip  # noqa: E402
import json  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("torch")

from plugins import runner  # noqa: E402
from plugins.api import load_results  # noqa: E402
from plugins.models.lookup import TINY_LLAVA_CHECKPOINT  # noqa: E402

RESULTS = runner.DEFAULT_RESULTS


def test_the_default_checkpoint_loads_with_plain_transformers():
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(TINY_LLAVA_CHECKPOINT, local_files_only=True)
    model = LlavaForConditionalGeneration.from_pretrained(TINY_LLAVA_CHECKPOINT, local_files_only=True)
    assert 1_000_000 < sum(p.numel() for p in model.parameters()) < 3_000_000
    assert processor.image_processor.size == {"height": 64, "width": 64}
    card = (TINY_LLAVA_CHECKPOINT / "README.md").read_text(encoding="utf-8")
    assert "## Training" in card and "## Results" in card


def test_committed_results_are_current():
    """Every committed record's fingerprint matches the code, checkpoint and data of this commit."""
    records, problems = load_results(RESULTS)
    assert not problems
    assert records, "results/ is empty: run make reproduce"
    assert runner.stale_cells(RESULTS, runner.DEFAULT_MATRIX) == frozenset()


def test_stored_predictions_are_what_the_checkpoint_answers():
    from plugins.methods.baseline import Baseline
    from plugins.models.adapter import LlavaAdapter
    from plugins.registry import get_benchmark

    record = next(r for r in load_results(RESULTS)[0]
                  if r.cell == "alignscope-tiny-llava/world-pope/adversarial/baseline/seed0")
    path = RESULTS / record.cell
    rows = [json.loads(line) for line in gzip.decompress(path.with_name(record.predictions).read_bytes()).splitlines()]
    bench = get_benchmark("world-pope")({"limit": 48})
    items = bench.items("adversarial")
    adapter = LlavaAdapter.load(TINY_LLAVA_CHECKPOINT, device="cpu")
    _, again = bench.evaluate(adapter, Baseline(), "adversarial", items, batch_size=16, seed=0)
    assert [r["answer"] for r in again] == [r["answer"] for r in rows[:48]]
    assert [r["question_id"] for r in again] == [r["question_id"] for r in rows[:48]]
