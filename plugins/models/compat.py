"""Differences between transformers releases that the adapter and the methods must bridge.

transformers 5.24 renamed the key/value cache keyword of a forward call from ``past_key_values``
to ``cache``, and model outputs carry it under the new name. Code that passes a cache, reads one
from a hook's keyword arguments or takes one from an output goes through these three functions.

>>> cache_keyword() in ("cache", "past_key_values")
True
>>> cache_argument({"past_key_values": "kv"}), cache_argument({"use_cache": True})
('kv', None)
"""
from __future__ import annotations

import functools
import inspect
from typing import Any

__all__ = ["cache_keyword", "cache_argument", "output_cache"]


@functools.cache
def cache_keyword() -> str:
    """The keyword under which this transformers release passes the key/value cache to a forward.

    transformers 5.24 renamed ``past_key_values`` to ``cache``: calls still accept the old name
    (with a deprecation warning), but forward hooks see only the name ``generate`` uses.
    """
    from transformers import LlamaModel

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def cache_argument(kwargs: dict) -> Any:
    """The key/value cache among a forward call's keyword arguments (None if absent), under either name."""
    return kwargs.get("cache", kwargs.get("past_key_values"))


def output_cache(output: Any) -> Any:
    """The key/value cache a model output returns, under either name (see :func:`cache_keyword`)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
