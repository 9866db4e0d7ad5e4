"""The benchmark interface: items to answer, a data hash, and a scorer.

A benchmark is a :class:`Benchmark` subclass registered by name (``@register_benchmark("pope")``).
The runner (:mod:`plugins.runner`) asks it for the items of one split, has the model (and a
method) answer them, and hands the answers back to :meth:`Benchmark.score`. Everything the runner
caches on is explicit:

* :meth:`Benchmark.data_hash` — SHA-256 over the split's question file and every image it uses,
  so a changed question or image re-runs the cell;
* ``parser`` — the answer parser's pinned name and version (in every result's provenance);
* the code: the runner hashes the normalised syntax trees of the benchmark module's import
  closure (:mod:`plugins.runner.fingerprint`), so editing the parser or scorer re-runs the cells
  it scores.

Benchmarks never download: data is read from a local folder, or generated locally (the
synthetic world's test sets, :mod:`plugins.benchmarks.world`).

>>> from plugins.registry import get_benchmark
>>> get_benchmark("world-pope").splits
('random', 'popular', 'adversarial')
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence

import numpy as np

from plugins.files import files_sha256
from plugins.config import StrictConfig, unknown
from plugins.models.decoding import COMMON, Protocol

__all__ = ["Item", "Benchmark", "BenchmarkConfig", "BenchmarkError", "default_data_dir", "load_image"]

REPO_ROOT = Path(__file__).resolve().parents[2]


class BenchmarkError(ValueError):
    """A benchmark cannot run: missing data, a bad option, an unknown split."""


def default_data_dir() -> Path:
    """Where generated and local benchmark data live: ``$ALIGNSCOPE_DATA`` or ``<repo>/build/data``."""
    return Path(os.environ.get("ALIGNSCOPE_DATA") or REPO_ROOT / "build" / "data")


@dataclass(frozen=True)
class Item:
    """One input to answer: an image file (or none), the bare question, and what scoring needs."""

    id: str  # question id, unique within the split
    image: Optional[Path]  # the image file, or None for a text-only item
    prompt: str  # the user's question, without chat template
    label: Optional[str] = None  # the expected answer for yes/no benchmarks ("yes" / "no")
    meta: Mapping[str, Any] = field(default_factory=dict)  # anything else scoring or auditing needs (JSON-ready)


class BenchmarkConfig(StrictConfig):
    """Options common to every benchmark; subclasses add their own (e.g. a data folder)."""

    limit: Optional[int] = None  # score only the first ``limit`` items of each split (smoke runs)


class Benchmark:
    """Base class: subclasses set the class attributes and implement :meth:`items` and :meth:`score`."""

    name: ClassVar[str] = ""  # registered name; result records carry it
    protocol: ClassVar[Optional[str]] = None  # knowledge-base benchmark id whose protocol this follows
    splits: ClassVar[tuple[str, ...]] = ()
    parser: ClassVar[str] = ""  # answer parser name-version, e.g. pope-official-v1
    max_new_tokens: ClassVar[int] = 8  # generation length the answers need (a protocol may set another)
    common_protocol_only: ClassVar[bool] = False  # True for a benchmark that reads internals, not decoded answers
    suffixed: ClassVar[bool] = True  # a protocol's suffix follows this benchmark's prompts (short answers; not captions)
    Config: ClassVar[type[BenchmarkConfig]] = BenchmarkConfig

    def answer_budget(self, protocol: Optional[Protocol] = None) -> int:
        """New tokens per answer under ``protocol``: its own budget, else this benchmark's."""
        return (protocol or COMMON).budget(self.max_new_tokens)

    def prompt(self, question: str, protocol: Optional[Protocol] = None) -> str:
        """``question`` as asked under ``protocol``: its suffix appended where this benchmark takes one."""
        return (protocol or COMMON).prompt(question) if self.suffixed else question

    def decoding(self, protocol: Optional[Protocol] = None) -> dict[str, Any]:
        """``protocol`` as this benchmark applies it, for provenance and fingerprints.

        >>> Benchmark().decoding()
        {'strategy': 'greedy', 'num_beams': 1, 'suffix': '', 'max_new_tokens': 8}
        """
        protocol = protocol or COMMON
        return {**protocol.describe(), "suffix": protocol.suffix if self.suffixed else "",
                "max_new_tokens": self.answer_budget(protocol)}

    def __init__(self, options: Optional[Mapping[str, Any]] = None, data_dir: Optional[Path] = None):
        self.options = self.Config.model_validate(dict(options or {}))
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self._hashes: dict[str, str] = {}

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise BenchmarkError(f"benchmark {self.name!r}: {unknown('split', split, self.splits)}")

    # ------------------------------------------------------------ to implement

    def prepare(self) -> None:
        """Make sure the data exist (generate them, or check the local folder); raise :class:`BenchmarkError`."""

    def load_items(self, split: str) -> list[Item]:
        """Every item of ``split``, in a fixed order."""
        raise NotImplementedError

    def data_files(self, split: str) -> list[Path]:
        """The files that determine ``split``'s questions and images (hashed by :meth:`data_hash`)."""
        raise NotImplementedError

    def score(self, split: str, items: Sequence[Item], answers: Sequence[str]) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """``(metrics, per-item records)`` for the answers, one per item in order."""
        raise NotImplementedError

    def evaluate(self, adapter: Any, method: Any, split: str, items: Sequence[Item], *, batch_size: int, seed: int,
                 progress: Optional[Callable[[int], None]] = None,
                 protocol: Optional[Protocol] = None) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Run the model (with ``method``) on ``items`` and score it: ``(metrics, per-item records)``.

        The default answers every item through the adapter (the method's extension points applied)
        as ``protocol`` says — its search, its suffix after each question, its answer budget
        (default: the common protocol, greedy) — and hands the answers to :meth:`score`. A benchmark
        that reads the model's internals instead of its answers overrides this and sets
        ``common_protocol_only = True``.
        """
        from plugins.models.batch import Batch

        protocol = protocol or COMMON
        images: dict[Path, Any] = {}
        for item in items:
            if item.image is not None and item.image not in images:
                images[item.image] = load_image(item.image)
        answers: list[str] = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            batch = Batch(images=[images[i.image] if i.image is not None else None for i in chunk],
                          prompts=[self.prompt(i.prompt, protocol) for i in chunk], ids=[i.id for i in chunk], seed=seed)
            answers += adapter.generate(batch, max_new_tokens=self.answer_budget(protocol), method=method,
                                        batch_size=batch_size, protocol=protocol)
            if progress is not None:
                progress(len(chunk))
        return self.score(split, items, answers)

    # ------------------------------------------------------------ provided

    def items(self, split: str) -> list[Item]:
        """The items of ``split``, cut to ``options.limit``."""
        self.check_split(split)
        items = self.load_items(split)
        return items[: self.options.limit] if self.options.limit else items

    def data_hash(self, split: str) -> str:
        """SHA-256 over the split's files (names and contents) and the item limit; cached per instance."""
        self.check_split(split)
        if split not in self._hashes:
            digest = hashlib.sha256(files_sha256(self.data_files(split)).encode())
            digest.update(f"\nlimit={self.options.limit}".encode())
            self._hashes[split] = digest.hexdigest()
        return self._hashes[split]

    def fingerprint_payload(self, split: str) -> dict[str, Any]:
        """What identifies this benchmark split in a cell's fingerprint besides its code (the runner hashes that)."""
        return {"benchmark": self.name, "split": split, "data_sha256": self.data_hash(split), "parser": self.parser,
                "max_new_tokens": self.max_new_tokens, "options": self.options.model_dump(mode="json")}


def load_image(path: Path) -> np.ndarray:
    """An image file as an ``(H, W, 3)`` uint8 array."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
