"""Configuration base shared by the experiment side: frozen pydantic models whose unknown keys
fail with a "did you mean" suggestion (house rule 2), and the one wording for a bad name.

>>> class Demo(StrictConfig):
...     alpha: float = 1.0
>>> try:
...     Demo.model_validate({"alpah": 2})
... except ValueError as exc:
...     print(exc.errors()[0]["msg"])
Value error, unknown key 'alpah'; did you mean 'alpha'? allowed: alpha
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, model_validator


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A "; did you mean 'x'?" suffix when ``word`` is a near miss of one of ``choices``."""
    close = difflib.get_close_matches(str(word), sorted(set(choices)), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown(what: str, value: object, allowed: Iterable[str], *, keep_order: bool = False) -> str:
    """The one wording for a bad name: the value, a near miss if any, and every allowed value.

    >>> unknown("colour", "yelow", ["red", "yellow"])
    "unknown colour 'yelow'; did you mean 'yellow'? allowed: red, yellow"
    >>> unknown("key", "alpha", [])
    "unknown key 'alpha'; allowed: none"
    """
    names = list(allowed) if keep_order else sorted(set(allowed))
    hint = did_you_mean(str(value), names)
    # "...; did you mean 'x'? allowed: ..." reads as two sentences; without a hint, "; allowed: ...".
    return f"unknown {what} {value!r}{hint}{' ' if hint else '; '}allowed: {', '.join(names) or 'none'}"


class StrictConfig(BaseModel):
    """Immutable; every unknown key is reported at once, each with its nearest known key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        # pydantic's own extra="forbid" message does not suggest the intended key, so check first.
        if isinstance(data, Mapping):
            known = set(cls.model_fields)
            bad = [k for k in data if k not in known]
            if bad:
                raise ValueError("; ".join(unknown("key", k, known) for k in bad))
        return data
