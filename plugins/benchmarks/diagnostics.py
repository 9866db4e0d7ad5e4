"""The diagnostics of :mod:`plugins.diagnostics` on the world's yes/no probes, as runner cells.

``world-diagnostics`` does not score answers: for each question it reads the first answer
token's distribution (with the cell's method applied) and records visual dependence, attention
to image tokens per layer and the logit lens (one row per question in the predictions file),
and their means overall and over correct and hallucinated answers (the record's metrics). Its
splits are the world's probes of the three misalignment levels; each keeps the first
:data:`DEFAULT_LIMIT` questions (50 scenes of POPE), which is plenty for means and keeps a cell
to seconds.

>>> from plugins.benchmarks.diagnostics import LEVELS
>>> LEVELS["pope-adversarial"], LEVELS["attribute-adversarial"], LEVELS["relation"]
('object', 'attribute', 'relation')
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from plugins.benchmarks.base import Item
from plugins.benchmarks.world import WorldAttribute, WorldPope, WorldRelation
from plugins.benchmarks.world_data import WorldBenchmark, WorldConfigOption
from plugins.registry import register_benchmark

__all__ = ["WorldDiagnostics", "LEVELS", "SOURCES", "DEFAULT_LIMIT"]

DEFAULT_LIMIT = 300
"""Questions per split unless the ``limit`` option says otherwise."""

SOURCES: dict[str, tuple[type, str]] = {
    "pope-random": (WorldPope, "random"),
    "pope-popular": (WorldPope, "popular"),
    "pope-adversarial": (WorldPope, "adversarial"),
    "attribute-random": (WorldAttribute, "random"),
    "attribute-adversarial": (WorldAttribute, "adversarial"),
    "relation": (WorldRelation, "opposite"),
}
"""Split -> (the world benchmark whose questions it reads, that benchmark's split)."""

LEVELS = {"pope-random": "object", "pope-popular": "object", "pope-adversarial": "object",
          "attribute-random": "attribute", "attribute-adversarial": "attribute", "relation": "relation"}
"""The survey's misalignment level each split probes."""


class DiagnosticsOptions(WorldConfigOption):
    """Options of ``world-diagnostics``."""

    limit: Optional[int] = DEFAULT_LIMIT  # first questions of each split (None: all)


@register_benchmark("world-diagnostics")
class WorldDiagnostics(WorldBenchmark):
    """Why answers go wrong: visual dependence, image attention per layer and logit lens on the world's yes/no probes."""

    name = "world-diagnostics"
    splits = tuple(SOURCES)
    parser = "diagnostics-v1"  # plugins.diagnostics: the top first token, parsed by the official POPE rule
    max_new_tokens = 1  # only the first answer token is read
    common_protocol_only = True  # reads the greedy first-token distribution, under no suffix
    Config = DiagnosticsOptions

    def _source(self, split: str) -> tuple[Any, str]:
        self.check_split(split)
        cls, source_split = SOURCES[split]
        options = {"world": self.options.world} if self.options.world is not None else {}
        return cls(options, data_dir=self.data_dir), source_split

    def load_items(self, split: str) -> list[Item]:
        bench, source_split = self._source(split)
        return bench.load_items(source_split)

    def data_files(self, split: str) -> list[Path]:
        bench, source_split = self._source(split)
        return bench.data_files(source_split)

    def evaluate(self, adapter: Any, method: Any, split: str, items: Sequence[Item], *, batch_size: int, seed: int,
                 progress: Any = None, protocol: Any = None) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """:func:`plugins.diagnostics.diagnose` with the cell's method; metrics are :func:`~plugins.diagnostics.summarize`."""
        from plugins.benchmarks.base import load_image
        from plugins.diagnostics import diagnose, summarize
        from plugins.models.batch import Batch

        images: dict[Path, Any] = {}
        for item in items:
            if item.image is not None and item.image not in images:
                images[item.image] = load_image(item.image)
        batch = Batch([images[i.image] if i.image is not None else None for i in items], [i.prompt for i in items],
                      [i.id for i in items], seed)
        rows = diagnose(adapter, batch, [i.label for i in items], method, batch_size=batch_size, progress=progress)
        level = LEVELS[split]
        for item, row in zip(items, rows):
            row.update(level=level, image=item.meta.get("image"), text=item.prompt)
        return summarize(rows), rows
