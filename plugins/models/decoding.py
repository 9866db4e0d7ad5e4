"""Protocols: how a cell decodes — search, prompt suffix and answer budget — as one validated value.

A :class:`Protocol` names what an evaluation protocol of the field varies besides the method:

* ``decoding``: ``greedy`` (the common protocol), ``sample`` (``temperature``, ``top_p``; the
  official scripts of VCD, ICD, M3ID and RITUAL sample at T = 1) or ``beam`` (``num_beams``;
  OPERA's evaluation uses 5);
* ``suffix``: an instruction appended to every short-answer question after one space (lmms-eval's
  "Answer the question using a single word or phrase.", VCD's "Please answer this question with
  one word."); caption instructions are left as they are (a benchmark's ``suffixed``);
* ``max_new_tokens``: the answer budget (None: the benchmark's own).

The matrix (``plugins/reproduce.yaml``) names protocols and runs each method under the common
protocol and under its paper's; a comparison pairs a method only with a reference run under the
same protocol (:mod:`plugins.compare`). The adapter decodes with the protocol it is given
(:meth:`plugins.models.adapter.LlavaAdapter.generate`); sampling is made reproducible by
:mod:`plugins.models.sampling` (per-item seeds, so answers do not depend on batching).

>>> Protocol().is_common, Protocol(decoding="sample").describe()
(True, {'strategy': 'sample', 'num_beams': 1, 'temperature': 1.0, 'top_p': 1.0})
>>> from pydantic import ValidationError
>>> try:
...     Protocol(decoding="beam", num_beams=1)
... except ValidationError as err:
...     print(err.errors()[0]["msg"])
Value error, beam decoding needs num_beams >= 2 (1 beam is greedy: use decoding: greedy)
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from plugins.config import StrictConfig

__all__ = ["Protocol", "COMMON", "COMMON_NAME"]

COMMON_NAME = "common"
"""The protocol every method runs under, the name the matrix and the records use for it."""


class Protocol(StrictConfig):
    """How answers are decoded and prompted (see the module docstring)."""

    decoding: Literal["greedy", "sample", "beam"] = "greedy"  # the search
    temperature: float = Field(1.0, gt=0.0, le=100.0)  # sample: logits are divided by this
    top_p: float = Field(1.0, gt=0.0, le=1.0)  # sample: keep the smallest set of tokens with this much probability
    num_beams: int = Field(1, ge=1, le=64)  # beam: beams kept per item
    suffix: str = Field("", max_length=200)  # appended to every question after one space ("" for none)
    max_new_tokens: Optional[int] = Field(None, ge=1, le=4096)  # answer budget; None: the benchmark's own

    @model_validator(mode="after")
    def _consistent(self) -> "Protocol":
        problems = []
        if self.decoding == "beam" and self.num_beams < 2:
            problems.append("beam decoding needs num_beams >= 2 (1 beam is greedy: use decoding: greedy)")
        if self.decoding != "beam" and self.num_beams != 1:
            problems.append(f"num_beams={self.num_beams} needs decoding: beam")
        if self.decoding != "sample" and (self.temperature != 1.0 or self.top_p != 1.0):
            problems.append("temperature and top_p apply to decoding: sample only")
        if self.suffix != self.suffix.strip() or "\n" in self.suffix:
            problems.append("suffix: no leading or trailing spaces and no line breaks (one space is put before it)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def is_common(self) -> bool:
        return self == COMMON

    @property
    def stochastic(self) -> bool:
        return self.decoding == "sample"

    def describe(self) -> dict[str, Any]:
        """The search as provenance shows it (suffix and budget are recorded beside it)."""
        out: dict[str, Any] = {"strategy": self.decoding, "num_beams": self.num_beams}
        if self.decoding == "sample":
            out.update(temperature=self.temperature, top_p=self.top_p)
        return out

    def prompt(self, question: str) -> str:
        """``question`` with the suffix appended."""
        return f"{question} {self.suffix}" if self.suffix else question

    def budget(self, default: int) -> int:
        """New tokens per answer: this protocol's budget, else ``default`` (the benchmark's own)."""
        return self.max_new_tokens or default


COMMON = Protocol()
"""Greedy decoding, no suffix, the benchmark's own answer budget."""
