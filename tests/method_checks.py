"""Checks every activation-steering method's tests share: it changes the model's output while its hooks
are active, and leaves no hook and no changed weight behind."""
from __future__ import annotations

from typing import Any

import torch

from plugins.models.batch import Batch
from plugins.models.llava import LlavaAdapter
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
