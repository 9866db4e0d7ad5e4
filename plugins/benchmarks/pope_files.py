"""POPE's question-file format: one loader and one writer for the official files and ours.

POPE (:mod:`plugins.benchmarks.pope` says what it asks) ships one question file per split.
A question file is JSON Lines, one object per line with exactly the keys ``question_id``,
``image`` (a file name relative to an image folder), ``text`` and ``label`` (``yes``/``no``). The
official files are named ``coco_pope_<split>.json`` although they are JSONL; the project's own
(synthetic) benchmarks write ``<split>.jsonl`` in the same format, so one loader serves both,
and the world's caption prompts use it too (their label is unused). :func:`write_pope_questions`
writes the keys in the official order with ``json.dumps`` defaults and LF line ends, which
reproduces the official files byte for byte (the official popular and adversarial files end
lines with CRLF, which the loader accepts).

How answers are parsed and scored is :mod:`plugins.benchmarks.pope`, apart from this module, so
that a parser change re-runs exactly the cells it scores.

>>> PopeQuestion(1, "a.png", "Is there a cat in the image?", "yes").to_json()
'{"question_id": 1, "image": "a.png", "text": "Is there a cat in the image?", "label": "yes"}'
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Optional, Sequence

from plugins.files import write_atomic

__all__ = ["POPE_SPLITS", "LABELS", "QUESTION_KEYS", "PopeFormatError", "PopeQuestion", "load_pope_questions",
           "write_pope_questions", "split_file_names", "find_pope_split_files", "missing_image_problems", "PopeSplit",
           "load_pope_splits", "load_pope_split"]

POPE_SPLITS = ("random", "popular", "adversarial")
LABELS = ("yes", "no")

QUESTION_KEYS = ("question_id", "image", "text", "label")
"""The keys of one question, in the official files' order (also the order we write)."""

_MAX_SHOWN = 50  # errors listed in an exception message; all of them stay in ``.errors``
_MAX_MISSING_SHOWN = 5  # missing image files named in the message before "... and N more"


class PopeFormatError(ValueError):
    """Bad POPE input. ``errors`` holds every problem found, each as ``where: what, expected``."""

    def __init__(self, errors: Sequence[str]):
        self.errors = list(errors)
        shown = "\n".join(f"  {e}" for e in self.errors[:_MAX_SHOWN])
        more = len(self.errors) - _MAX_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.errors)} problem(s) in POPE input:\n{shown}{tail}")


def _question_problems(data: dict[str, Any]) -> list[str]:
    """What is wrong with one question object, one message per problem (empty if valid)."""
    problems = []
    for key in QUESTION_KEYS:
        if key not in data:
            problems.append(f"missing key {key!r}, expected keys {', '.join(QUESTION_KEYS)}")
    for key in sorted(set(data) - set(QUESTION_KEYS)):
        close = difflib.get_close_matches(key, QUESTION_KEYS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"unknown key {key!r}{hint}, expected only {', '.join(QUESTION_KEYS)}")
    qid = data.get("question_id")
    if "question_id" in data and (not isinstance(qid, int) or isinstance(qid, bool)):
        problems.append(f"question_id is {qid!r}, expected an integer")
    image = data.get("image")
    if "image" in data:
        parts = PurePosixPath(image).parts if isinstance(image, str) else ()
        # Image names come from untrusted files: they must stay inside the image folder.
        if not isinstance(image, str) or not image.strip() or "\\" in image or PurePosixPath(image).is_absolute() or ".." in parts:
            problems.append(f"image is {image!r}, expected a file name relative to the image folder")
    text = data.get("text")
    if "text" in data and (not isinstance(text, str) or not text.strip()):
        problems.append(f"text is {text!r}, expected the question as a non-empty string")
    label = data.get("label")
    if "label" in data and label not in LABELS:
        problems.append(f"label is {label!r}, expected \"yes\" or \"no\"")
    return problems


@dataclass(frozen=True)
class PopeQuestion:
    """One POPE question; constructing it checks the fields like the loader does."""

    question_id: int  # unique within a file; the official files count 1..3000
    image: str  # relative to the image folder, e.g. "COCO_val2014_000000310196.jpg"
    text: str  # the question as asked, e.g. "Is there a snowboard in the image?"
    label: str  # "yes" if the object is in the image, else "no"

    def __post_init__(self) -> None:
        problems = _question_problems({k: getattr(self, k) for k in QUESTION_KEYS})
        if problems:
            raise ValueError("; ".join(problems))

    def to_json(self) -> str:
        """One line of a question file: official key order, ``json.dumps`` defaults."""
        return json.dumps({k: getattr(self, k) for k in QUESTION_KEYS})


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


class _DuplicateKey(Exception):
    pass


def load_pope_questions(path: str | Path) -> list[PopeQuestion]:
    """Every question of a POPE question file, in file order.

    Raises :class:`PopeFormatError` listing every problem as ``path:line: what is wrong, what was
    expected`` (bad JSON, a missing or unknown key, a label other than yes/no, a repeated
    question_id). Blank lines are skipped; a UTF-8 byte-order mark and CRLF line ends are accepted.
    """
    path = Path(path)
    try:
        content = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise PopeFormatError([f"{path}: cannot read ({exc.strerror or exc}), expected a POPE question file"]) from None
    except UnicodeDecodeError as exc:
        raise PopeFormatError([f"{path}: byte {exc.start} is not UTF-8, expected UTF-8 JSON Lines"]) from None
    questions: list[PopeQuestion] = []
    errors: list[str] = []
    first_line_of: dict[int, int] = {}
    # split("\n"), not splitlines(): a JSON string may legally hold U+2028 and friends.
    for lineno, line in enumerate(content.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            data = json.loads(line, object_pairs_hook=_reject_duplicate_keys)
        except _DuplicateKey as exc:
            errors.append(f"{where}: key {exc.args[0]!r} appears twice, expected each key once")
            continue
        except json.JSONDecodeError as exc:
            errors.append(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}), expected one JSON object per line")
            continue
        if not isinstance(data, dict):
            errors.append(f"{where}: a JSON {type(data).__name__}, expected one JSON object per line")
            continue
        problems = _question_problems(data)
        if problems:
            errors.extend(f"{where}: {p}" for p in problems)
            continue
        qid = data["question_id"]
        if qid in first_line_of:
            errors.append(f"{where}: question_id {qid} already used on line {first_line_of[qid]}, expected unique ids")
            continue
        first_line_of[qid] = lineno
        questions.append(PopeQuestion(**data))
    if not questions and not errors:
        errors.append(f"{path}: no questions, expected one JSON object per line")
    if errors:
        raise PopeFormatError(errors)
    return questions


def write_pope_questions(path: str | Path, questions: Iterable[PopeQuestion]) -> Path:
    """Write questions in the official format: one JSON object per line, in the order given.

    Keys are in the official order (:data:`QUESTION_KEYS`) with ``json.dumps`` defaults and LF
    line ends, so loading an official file and writing it back gives the same bytes (up to the
    CRLF line ends of the official popular and adversarial files). The write is atomic.
    """
    questions = list(questions)
    if not questions:
        raise ValueError("no questions to write, expected at least one (the loader rejects empty files)")
    seen: set[int] = set()
    for i, q in enumerate(questions):
        if not isinstance(q, PopeQuestion):
            raise TypeError(f"questions[{i}] is a {type(q).__name__}, expected a PopeQuestion")
        if q.question_id in seen:
            raise ValueError(f"questions[{i}] repeats question_id {q.question_id}, expected unique ids")
        seen.add(q.question_id)
    path = Path(path)
    write_atomic(path, "".join(q.to_json() + "\n" for q in questions))
    return path


# ---------------------------------------------------------------- split files and image folders

def split_file_names(split: str) -> tuple[str, str]:
    """The two accepted names of a split's question file: official first, then the project's."""
    return f"coco_pope_{split}.json", f"{split}.jsonl"


def find_pope_split_files(question_dir: str | Path, splits: Sequence[str] = POPE_SPLITS) -> dict[str, Path]:
    """Split name → question file in ``question_dir``, for each of ``splits``.

    A split's file is ``coco_pope_<split>.json`` (the official name) or ``<split>.jsonl`` (the
    name the project writes). Both present for one split is an error rather than a silent choice.
    """
    folder = Path(question_dir)
    if not folder.is_dir():
        raise PopeFormatError([f"{folder}: not a folder, expected the folder holding the POPE question files"])
    found: dict[str, Path] = {}
    errors = []
    for split in splits:
        candidates = [folder / name for name in split_file_names(split) if (folder / name).is_file()]
        if not candidates:
            names = " or ".join(split_file_names(split))
            errors.append(f"{folder}: no question file for split {split!r}, expected {names}")
        elif len(candidates) > 1:
            errors.append(f"{folder}: split {split!r} has two question files ({candidates[0].name}, {candidates[1].name}), expected one")
        else:
            found[split] = candidates[0]
    if errors:
        raise PopeFormatError(errors)
    return found


def missing_image_problems(questions: Sequence[PopeQuestion], image_dir: str | Path, source: str | Path) -> list[str]:
    """One message naming the images of ``questions`` absent from ``image_dir`` (empty if none)."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        return [f"{image_dir}: not a folder, expected the image folder of {source}"]
    first_qid: dict[str, int] = {}
    for q in questions:
        first_qid.setdefault(q.image, q.question_id)
    missing = [name for name in sorted(first_qid) if not (image_dir / name).is_file()]
    if not missing:
        return []
    shown = ", ".join(f"{name} (question_id {first_qid[name]})" for name in missing[:_MAX_MISSING_SHOWN])
    more = len(missing) - _MAX_MISSING_SHOWN
    tail = f" and {more} more" if more > 0 else ""
    return [f"{source}: {len(missing)} of {len(first_qid)} images missing from {image_dir}: {shown}{tail}; "
            "expected every referenced image file in the image folder"]


@dataclass(frozen=True)
class PopeSplit:
    """One split's questions, with where they came from."""

    name: str  # random, popular, adversarial (or a synthetic benchmark's own split)
    question_file: Path
    image_dir: Optional[Path]  # None: images were not checked (e.g. counting questions only)
    questions: tuple[PopeQuestion, ...]

    @property
    def images(self) -> tuple[str, ...]:
        """The distinct image names, sorted."""
        return tuple(sorted({q.image for q in self.questions}))

    def image_path(self, question: PopeQuestion) -> Path:
        if self.image_dir is None:
            raise ValueError(f"split {self.name!r} was loaded without an image folder, expected image_dir")
        return self.image_dir / question.image


def load_pope_splits(question_dir: str | Path, image_dir: str | Path | None = None,
                     splits: Sequence[str] = POPE_SPLITS) -> dict[str, PopeSplit]:
    """Load ``splits`` from ``question_dir``; if ``image_dir`` is given, check every image exists.

    Problems of all splits are collected and raised together as one :class:`PopeFormatError`.
    """
    files = find_pope_split_files(question_dir, splits)
    loaded: dict[str, PopeSplit] = {}
    errors: list[str] = []
    for split, path in files.items():
        try:
            questions = load_pope_questions(path)
        except PopeFormatError as exc:
            errors.extend(exc.errors)
            continue
        if image_dir is not None:
            errors.extend(missing_image_problems(questions, image_dir, path))
        loaded[split] = PopeSplit(split, path, Path(image_dir) if image_dir is not None else None, tuple(questions))
    if errors:
        raise PopeFormatError(errors)
    return loaded


def load_pope_split(question_dir: str | Path, split: str, image_dir: str | Path | None = None) -> PopeSplit:
    """One split; see :func:`load_pope_splits`."""
    return load_pope_splits(question_dir, image_dir, (split,))[split]
