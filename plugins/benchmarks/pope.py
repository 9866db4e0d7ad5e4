"""POPE: the question-file format, the one pinned answer parser, and the metrics.

POPE (Yifan Li et al., "Evaluating Object Hallucination in Large Vision-Language Models",
EMNLP 2023, arXiv:2305.10355) polls a model with yes/no questions of the form "Is there a
<object> in the image?": per image, three about objects that are in it (label ``yes``) and three
about objects that are not (label ``no``). The negatives are sampled three ways, one split each:
``random``, ``popular`` (the most frequent objects of the data set) and ``adversarial`` (the
objects that co-occur most often with those in the image).

**Format.** A question file is JSON Lines, one object per line with exactly the keys
``question_id``, ``image`` (a file name relative to an image folder), ``text`` and ``label``
(``yes``/``no``). The official files are named ``coco_pope_<split>.json`` although they are JSONL;
the project's own (synthetic) benchmarks write ``<split>.jsonl`` in the same format, so one
loader serves both. :func:`write_pope_questions` writes the keys in the official order with
``json.dumps`` defaults and LF line ends, which reproduces the official files byte for byte
(the official popular and adversarial files end lines with CRLF, which the loader accepts).

**Parser** (:data:`PARSER_NAME` ``pope-official-v1``), the rule of the official ``evaluate.py``
(RUCAIBox/POPE, same in LLaVA's ``llava/eval/eval_pope.py``): keep the text before the first
period, delete commas, split on single spaces; the answer is ``no`` if ``No``, ``not`` or ``no``
is one of the words, otherwise ``yes``. Its quirks are kept on purpose so that numbers compare
with published ones: matching is case-sensitive (``"NO"`` and ``"Not really"`` parse as yes),
an empty answer, ``"I don't know."`` or ``"Nope"`` parse as yes, and only single spaces separate
words (``"no\\n"`` is not the word ``no``). How often that matters is measured separately by
:func:`answer_clarity` (``pope-clarity-v1``), which calls an answer a clear yes, a clear no or
unclear; :func:`pope_metrics` reports the share of unclear answers and the number of clear
answers the official rule reads the other way (``misparsed``).

**Metrics.** Positive class = yes, as in the official code. ``yes_ratio`` is the share of
*predictions* that are yes. Where the official code divides by zero (no yes predictions, no yes
labels) we return 0, as lmms-eval and scikit-learn's ``zero_division=0`` do.

Differences from lmms-eval's POPE task (``lmms_eval/tasks/pope/utils.py``, read at commit
2c03baf): it lower-cases and strips the answer and then requires it to *equal* the label, so
``"Yes."`` or ``"No, there is not."`` score as wrong and count as neither yes nor no in precision
and recall; and its ``pope_yes_ratio`` counts ground-truth labels, not predictions, so it reports
the label balance (0.5 on the official files) whatever the model answers.

>>> parse_pope_answer("No, there is not."), parse_pope_answer("NO"), answer_clarity("NO")
('no', 'yes', 'no')
>>> m = pope_metrics(["Yes.", "No", "I don't know.", "There is no cat."], ["yes", "no", "no", "yes"])
>>> m["accuracy"], m["precision"], m["recall"], m["yes_ratio"], m["unclear_ratio"], m["fp"]
(0.5, 0.5, 0.5, 0.5, 0.25, 1)
"""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Optional, Sequence

from plugins.api import write_atomic

POPE_SPLITS = ("random", "popular", "adversarial")
LABELS = ("yes", "no")
PARSER_NAME = "pope-official-v1"
"""Recorded as ``provenance.parser`` in every POPE result; bump it if the rule ever changes."""
CLARITY_NAME = "pope-clarity-v1"
"""Version of :func:`answer_clarity`, which defines ``unclear_ratio`` and ``misparsed``."""

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


# ---------------------------------------------------------------- the answer parser

_OFFICIAL_NO_WORDS = frozenset({"No", "not", "no"})  # case-sensitive, as in the official code


def parse_pope_answer(answer: str) -> str:
    """``"yes"`` or ``"no"`` by the official POPE rule (``pope-official-v1``), quirks included.

    The text before the first period, without commas, split on single spaces; ``no`` if one of
    the words is ``No``, ``not`` or ``no``, else ``yes`` — so anything without those exact words
    (``"NO"``, ``""``, ``"I don't know."``) counts as yes.
    """
    if not isinstance(answer, str):
        raise TypeError(f"answer is a {type(answer).__name__}, expected the model's answer as a string")
    first_sentence = answer.split(".", 1)[0]  # the whole text when there is no period
    words = first_sentence.replace(",", "").split(" ")  # split(" "), not split(): tabs and newlines stay inside words
    return "no" if _OFFICIAL_NO_WORDS.intersection(words) else "yes"


_YES_WORDS = frozenset({"yes", "yeah", "yep", "yup"})
_NEGATIONS = frozenset({"no", "not", "nope", "none", "never", "nothing", "cannot", "neither", "nor",
                        "dont", "doesnt", "isnt", "arent", "cant", "wasnt", "werent", "didnt"})
_HEDGES = frozenset({"maybe", "perhaps", "possibly", "probably", "unsure", "uncertain", "unclear", "unknown", "might"})
# A negation followed within three words by one of these is a refusal, not an answer:
# "don't know", "not sure", "cannot tell", "not possible to tell", "can't say for certain".
_HEDGED_AFTER_NEGATION = frozenset({"know", "sure", "certain", "tell", "determine", "say"})
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def answer_clarity(answer: str) -> str:
    """``"yes"``, ``"no"`` or ``"unclear"``: does the answer state one polarity explicitly?

    Case-insensitive, over the whole answer (``pope-clarity-v1``). Clear yes: a yes-word (yes,
    yeah, yep, yup) and no negation. Clear no: a negation (no, not, nope, none, never, nothing,
    cannot, neither, nor, any ``n't`` word) and no yes-word. Unclear: both, neither, or a hedge
    (maybe, perhaps, possibly, probably, unsure, uncertain, unclear, unknown, might, or a
    negation followed within three words by know / sure / certain / tell / determine / say).
    It does not read the question, so "There is a dog." is unclear: without the question its
    polarity is unknown. This never changes the parsed answer; it only measures the parser.
    """
    if not isinstance(answer, str):
        raise TypeError(f"answer is a {type(answer).__name__}, expected the model's answer as a string")
    words = _WORD.findall(answer.lower().replace("\u2019", "'"))
    negations = [i for i, w in enumerate(words) if w in _NEGATIONS or w.endswith("n't")]
    hedged = any(w in _HEDGES for w in words) or any(
        _HEDGED_AFTER_NEGATION.intersection(words[i + 1:i + 4]) for i in negations)
    says_yes = any(w in _YES_WORDS for w in words)
    if hedged or says_yes == bool(negations):
        return "unclear"
    return "yes" if says_yes else "no"


# ---------------------------------------------------------------- metrics

def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float | int]:
    """POPE metrics of raw model answers against ``yes``/``no`` labels, paired by position.

    Rates are fractions in [0, 1]: ``accuracy``, ``precision``, ``recall``, ``f1`` (positive class
    = yes), ``yes_ratio`` (share of *predictions* parsed as yes) and ``unclear_ratio`` (share of
    answers :func:`answer_clarity` calls unclear). Counts: ``tp``, ``fp``, ``tn``, ``fn``, ``n``,
    ``unclear`` and ``misparsed`` (clear answers the official rule reads the other way, e.g.
    "NO"). Zero division gives 0: precision without yes predictions, recall without yes labels,
    F1 when precision + recall is 0. Already-parsed ``"yes"``/``"no"`` predictions work as well.
    """
    if isinstance(predictions, str) or isinstance(labels, str):
        raise TypeError("predictions and labels are single strings, expected one entry per question")
    predictions, labels = list(predictions), list(labels)
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels, expected one prediction per question")
    if not labels:
        raise ValueError("no predictions, expected at least one")
    bad = [f"labels[{i}] = {label!r}" for i, label in enumerate(labels) if label not in LABELS]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ValueError(f"{', '.join(bad[:5])}{more}: expected \"yes\" or \"no\"")
    parsed = [parse_pope_answer(p) for p in predictions]
    clarity = [answer_clarity(p) for p in predictions]
    pairs = list(zip(parsed, labels))
    tp = pairs.count(("yes", "yes"))
    fp = pairs.count(("yes", "no"))
    tn = pairs.count(("no", "no"))
    fn = pairs.count(("no", "yes"))
    n = len(pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    unclear = clarity.count("unclear")
    misparsed = sum(c != "unclear" and c != p for c, p in zip(clarity, parsed))
    return {
        "accuracy": (tp + tn) / n,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / n,
        "unclear_ratio": unclear / n,
        "tp": tp, "fp": fp, "tn": tn, "fn": fn, "n": n,
        "unclear": unclear,
        "misparsed": misparsed,
    }
