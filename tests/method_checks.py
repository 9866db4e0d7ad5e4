"""Checks every activation-steering method's tests share: it changes the model's output while its hooks
are active, leaves no hook and no changed weight behind, and computes its directions once per model."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import torch

from plugins.models.adapter import LlavaAdapter
from plugins.models.batch import Batch
from tests.test_llava_adapter import all_hooks


def hooks_while_steering(adapter: LlavaAdapter, batch: Batch, method: Any) -> set[tuple[str, str, int]]:
    """The hooks ``method`` adds while active; asserts it moves the logits and leaves the model as it found it."""
    adapter.generate(batch[:1], max_new_tokens=1)  # transformers installs its own capturing hooks once
    hooks_before = all_hooks(adapter)
    weights_before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    plain = adapter.next_token_logits(batch)
    with method.hooks(adapter, batch):
        added = all_hooks(adapter) - hooks_before
        steered = adapter.next_token_logits(batch)
    assert not torch.allclose(plain, steered, atol=1e-4), "the method's hooks did not change the logits"
    assert len(adapter.generate(batch, max_new_tokens=6, method=method)) == len(batch)
    assert all_hooks(adapter) == hooks_before
    after = adapter.model.state_dict()
    assert all(torch.equal(weights_before[k], after[k]) for k in weights_before)
    assert torch.equal(adapter.next_token_logits(batch), plain)
    return added


def computations_while_caching(adapter: LlavaAdapter, batch: Batch, cls: type, config: dict[str, Any],
                               cache: Path, monkeypatch: Any) -> list[int]:
    """Asserts ``cls(config)`` computes its directions once per checkpoint and config; returns the call log.

    Once for the first instance (kept in memory across chunks and written to ``cache``), not again
    for a second instance (read back from disk, equal), once more for another seed. The returned
    list keeps counting calls of the trainer (``cls.trainer``) for the caller's own checks.
    """
    calls: list[int] = []
    monkeypatch.setattr(cls, "trainer", staticmethod(counting(cls.trainer, calls)))
    first = cls(config)
    first.hooks(adapter, batch)
    first.hooks(adapter, batch[:2])  # the next chunk: from memory
    assert len(calls) == 1 and len(list((cache / cls.artifact_kind).glob("*.pt"))) == 1
    again = cls(config).directions(adapter)  # a new instance: from disk
    assert len(calls) == 1 and _same(again, first.directions(adapter))
    cls({**config, "seed": config.get("seed", 0) + 1}).directions(adapter)  # another config: computed afresh
    assert len(calls) == 2
    return calls


def counting(trainer: Callable[..., Any], calls: list[int]) -> Callable[..., Any]:
    """``trainer``, appending 1 to ``calls`` per call; it keeps the trainer's name, so its artifact key is unchanged."""

    @functools.wraps(trainer)
    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return trainer(*args, **kwargs)

    return counted


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b
