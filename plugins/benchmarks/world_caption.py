"""Free-form captions of the synthetic world's scenes, scored exactly for hallucinated objects, colours and relations.

The prompts are the caption question file of the world's test set; the scorer is
:mod:`plugins.benchmarks.caption` (CHAIR-style metrics over the world's closed vocabulary,
against the exact scenes in ``scenes.jsonl``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from plugins.benchmarks.base import Item
from plugins.benchmarks.world_data import CAPTION_SPLITS, WorldBenchmark
from plugins.registry import register_benchmark

__all__ = ["WorldCaption"]


@register_benchmark("world-caption")
class WorldCaption(WorldBenchmark):
    """Free-form captions of synthetic scenes, scored exactly for object, attribute and relation hallucination (CHAIR-style)."""

    name = "world-caption"
    protocol = "chair"
    splits = CAPTION_SPLITS
    folder = "caption"
    parser = "chair-world-v1"  # plugins.benchmarks.caption.SCORER_NAME: parse_caption over the closed vocabulary
    max_new_tokens = 40  # the longest exact caption is 30 words
    suffixed = False  # "describe the image ." is an instruction already: a protocol's short-answer suffix would contradict it

    def load_items(self, split: str) -> list[Item]:
        return [Item(item.id, item.image, item.prompt, None, item.meta) for item in super().load_items(split)]

    def data_files(self, split: str) -> list[Path]:
        return super().data_files(split) + [self.test_set.root / "scenes.jsonl"]

    def score(self, split: str, items: Sequence[Item], answers: Sequence[str]) -> tuple[dict[str, float], list[dict[str, Any]]]:
        from plugins.benchmarks.caption import caption_audit, chair_metrics

        scenes = self.test_set.scenes()
        truth = [scenes[item.meta["image"]] for item in items]
        metrics = chair_metrics(list(answers), truth, self.world)
        records = [{"question_id": item.id, "image": item.meta["image"], "answer": answer, **detail}
                   for item, answer, detail in zip(items, answers, caption_audit(list(answers), truth, self.world))]
        return {k: float(v) for k, v in metrics.items()}, records
