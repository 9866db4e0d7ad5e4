"""Representation-level image–text alignment inside the model, on the synthetic world's scenes and exact captions.

Not a score of answers: the images and their exact captions go through the model, and the
metrics of :mod:`plugins.benchmarks.representation` (cosine margin, mutual k-NN, linear CKA)
compare their embeddings layer by layer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from plugins.benchmarks.base import Item
from plugins.benchmarks.questions import QuestionFileBenchmark
from plugins.benchmarks.world_data import WorldBenchmark
from plugins.registry import register_benchmark
from plugins.world import CAPTION_PROMPT

__all__ = ["WorldRepresentation"]


@register_benchmark("world-representation")
class WorldRepresentation(WorldBenchmark):
    """Representation-level image-text alignment inside the model (cosine margin, mutual kNN, CKA) on synthetic scenes."""

    name = "world-representation"
    splits = ("captions",)
    folder = "caption"
    parser = "representation-v1"  # plugins.benchmarks.representation: no answers are parsed
    common_protocol_only = True  # embeds images and captions; nothing is decoded
    max_new_tokens = 1  # nothing is generated
    k = 10  # nearest neighbours for mutual kNN (Huh et al. 2024 use 10)

    def load_items(self, split: str) -> list[Item]:
        from plugins.world import caption

        self.check_split(split)
        scenes = self.test_set.scenes()
        return [Item(item.id, item.image, caption(scenes[item.meta["image"]], self.world), None, item.meta)
                for item in QuestionFileBenchmark.load_items(self, "all")]

    def data_files(self, split: str) -> list[Path]:
        return QuestionFileBenchmark.data_files(self, "all") + [self.test_set.root / "scenes.jsonl"]

    def evaluate(self, adapter: Any, method: Any, split: str, items: Sequence[Item], *, batch_size: int, seed: int,
                 progress: Any = None, protocol: Any = None) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Image vs exact-caption embeddings per LM layer; the method's forward hooks are active."""
        from plugins.benchmarks.base import load_image
        from plugins.benchmarks.representation import METRICS, alignment_profile
        from plugins.models.batch import Batch

        images = [load_image(item.image) for item in items]
        captions = [item.prompt for item in items]
        batch = Batch(images, [CAPTION_PROMPT] * len(items), [i.id for i in items], seed)
        with method.hooks(adapter, batch):
            profile = alignment_profile(adapter, images, captions, k=self.k, batch_size=batch_size)
        if progress is not None:
            progress(len(items))
        metrics = {f"{m}_{which}": float(profile[f"{m}_{which}"]) for m in METRICS for which in ("last", "mean")}
        rows = [{"layer": layer, **{m: profile[m][i] for m in METRICS}} for i, layer in enumerate(profile["layers"])]
        return metrics, rows
