"""POPE: the one pinned answer parser, and the metrics.

POPE (Yifan Li et al., "Evaluating Object Hallucination in Large Vision-Language Models",
EMNLP 2023, arXiv:2305.10355) polls a model with yes/no questions of the form "Is there a
<object> in the image?": per image, three about objects that are in it (label ``yes``) and three
about objects that are not (label ``no``). The negatives are sampled three ways, one split each:
``random``, ``popular`` (the most frequent objects of the data set) and ``adversarial`` (the
objects that co-occur most often with those in the image).

The question files are read and written by :mod:`plugins.benchmarks.pope_files`.

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

import re
from typing import Sequence

from plugins.benchmarks.pope_files import LABELS, POPE_SPLITS

__all__ = ["PARSER_NAME", "CLARITY_NAME", "POPE_SPLITS", "parse_pope_answer", "answer_clarity", "pope_metrics"]

PARSER_NAME = "pope-official-v1"
"""Recorded as ``provenance.parser`` in every POPE result; bump it if the rule ever changes."""
CLARITY_NAME = "pope-clarity-v1"
"""Version of :func:`answer_clarity`, which defines ``unclear_ratio`` and ``misparsed``."""


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
