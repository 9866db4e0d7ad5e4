"""Benchmarks whose splits are POPE-format question files next to an image folder.

A split is one JSON Lines file (``question_id``, ``image``, ``text``, ``label``; see
:mod:`plugins.benchmarks.pope_files`) and the images it names. :class:`QuestionFileBenchmark`
turns such a split into items and names the files that identify it; how the answers are scored
is the subclass's business (yes/no by POPE's parser in :mod:`plugins.benchmarks.yesno`, captions
by CHAIR in :mod:`plugins.benchmarks.world_caption`).
"""
from __future__ import annotations

from pathlib import Path

from plugins.benchmarks.base import Benchmark, BenchmarkError, Item
from plugins.benchmarks.pope_files import PopeFormatError, load_pope_splits

__all__ = ["QuestionFileBenchmark"]


class QuestionFileBenchmark(Benchmark):
    """A benchmark whose splits are POPE-format question files; subclasses say where they are."""

    def question_dir(self) -> Path:
        raise NotImplementedError

    def image_dir(self) -> Path:
        raise NotImplementedError

    def _split(self, split: str):
        try:
            return load_pope_splits(self.question_dir(), self.image_dir(), (split,))[split]
        except PopeFormatError as exc:
            raise BenchmarkError(f"benchmark {self.name!r} split {split!r}:\n  " + "\n  ".join(exc.errors)) from None

    def load_items(self, split: str) -> list[Item]:
        loaded = self._split(split)
        return [Item(str(q.question_id), loaded.image_path(q), q.text, q.label, {"image": q.image})
                for q in loaded.questions]

    def data_files(self, split: str) -> list[Path]:
        loaded = self._split(split)
        return [loaded.question_file] + [loaded.image_dir / name for name in loaded.images]
