"""Yes/no benchmarks in the POPE question format, and the real POPE benchmark read from a local folder.

:class:`YesNoBenchmark` serves every benchmark whose split is a POPE-format question file (JSON
Lines: ``question_id``, ``image``, ``text``, ``label``) next to an image folder: the official POPE
files with local COCO val2014 images (``pope``), and the synthetic world's object, attribute and
relation probes (:mod:`plugins.benchmarks.world`), which are written in the same format. One
loader (:class:`plugins.benchmarks.questions.QuestionFileBenchmark`), one parser (``pope-official-v1``) and
one set of metrics (:func:`plugins.benchmarks.pope.pope_metrics`) for all of them.

Nothing downloads. The real POPE needs its question files and images on disk::

    alignscope reproduce --only 'llava-1.5-7b/pope/*'   # with, in reproduce.yaml:
    # benchmarks: {pope: {splits: [random, popular, adversarial],
    #                     options: {questions: /data/pope/output/coco, images: /data/coco/val2014}}}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from plugins.benchmarks.base import BenchmarkConfig, BenchmarkError, Item
from plugins.benchmarks.pope import PARSER_NAME, answer_clarity, parse_pope_answer, pope_metrics
from plugins.benchmarks.pope_files import POPE_SPLITS
from plugins.benchmarks.questions import QuestionFileBenchmark
from plugins.registry import register_benchmark

__all__ = ["YesNoBenchmark", "Pope", "PopeConfig"]


class YesNoBenchmark(QuestionFileBenchmark):
    """Yes/no questions in POPE-format files, scored by POPE's pinned parser and metrics."""

    parser = PARSER_NAME
    max_new_tokens = 8  # "Yes, there is a dog in the image." needs more, but the parser reads the first words only

    def score(self, split: str, items: Sequence[Item], answers: Sequence[str]) -> tuple[dict[str, float], list[dict[str, Any]]]:
        metrics = pope_metrics(answers, [item.label for item in items])
        records = [{"question_id": item.id, "image": item.meta.get("image"), "text": item.prompt, "label": item.label,
                    "answer": answer, "parsed": parse_pope_answer(answer), "clarity": answer_clarity(answer)}
                   for item, answer in zip(items, answers)]
        return {k: float(v) for k, v in metrics.items()}, records


class PopeConfig(BenchmarkConfig):
    """Where the official POPE files are on this machine."""

    questions: Optional[Path] = None  # folder with coco_pope_{random,popular,adversarial}.json
    images: Optional[Path] = None  # folder with the COCO val2014 images they name


@register_benchmark("pope")
class Pope(YesNoBenchmark):
    """POPE (Li et al., EMNLP 2023) on COCO val2014: the official question files and images, from local folders."""

    name = "pope"
    protocol = "pope"
    splits = POPE_SPLITS
    Config = PopeConfig

    def _folder(self, key: str, what: str) -> Path:
        value = getattr(self.options, key)
        if value is None:
            raise BenchmarkError(f"benchmark 'pope' needs options.{key}: the folder with {what}; nothing is "
                                 "downloaded (get POPE from github.com/RUCAIBox/POPE, COCO val2014 from cocodataset.org)")
        return Path(value).expanduser()

    def question_dir(self) -> Path:
        return self._folder("questions", "coco_pope_<split>.json")

    def image_dir(self) -> Path:
        return self._folder("images", "the COCO val2014 images")

    def prepare(self) -> None:
        for split in self.splits:
            self._split(split)
