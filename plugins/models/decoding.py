"""How ``generate`` searches for a method: the settings a method may choose, checked, for the adapter and provenance.

Greedy decoding is the default; a method may ask for beam search (OPERA, and its beam-search
reference) through ``generation_settings()``, and nothing else: sampling never, so every result
stays deterministic. The adapter decodes with :func:`decoding_of`'s ``num_beams``; the runner
records the same dictionary as a result's decoding settings.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from plugins.models.intervention import Intervention

__all__ = ["GENERATION_SETTINGS", "decoding_of"]

GENERATION_SETTINGS = frozenset({"num_beams"})
"""The ``generate`` settings a method may choose (``Method.generation_settings``)."""


def decoding_of(method: Optional["Intervention"]) -> dict[str, Any]:
    """The checked search settings of ``method`` (greedy for None), with ``strategy`` named for provenance.

    >>> decoding_of(None)
    {'strategy': 'greedy', 'num_beams': 1}
    """
    settings = {"num_beams": 1} if method is None else dict(method.generation_settings())
    unknown = set(settings) - GENERATION_SETTINGS
    if unknown:
        raise ValueError(f"{type(method).__qualname__}.generation_settings() sets {sorted(unknown)}; a method may "
                         f"only choose {sorted(GENERATION_SETTINGS)}")
    beams = settings.get("num_beams", 1)
    if not isinstance(beams, int) or isinstance(beams, bool) or beams < 1:
        raise ValueError(f"{type(method).__qualname__}.generation_settings() num_beams is {beams!r}, expected an "
                         "integer >= 1")
    return {"strategy": "greedy" if beams == 1 else "beam", "num_beams": beams}
