"""world-tune: the arms of the cause experiments (continued tuning on a controlled world)."""
from __future__ import annotations

import torch

from plugins.registry import create_method

TINY = {"scenes": 8, "steps": 3, "batch_size": 4}


def _tower_keys(state):
    return [k for k in state if ".vision_tower." in k]


def test_a_frozen_tower_stays_and_a_reset_one_is_redrawn_by_seed(adapter, artifact_cache):
    frozen = create_method("world-tune", {**TINY, "freeze_vision": True}).tuned(adapter)["state"]
    assert frozen and not _tower_keys(frozen)  # the LM and projector trained, the tower did not move
    weak = create_method("world-tune", {**TINY, "reset_vision": True, "freeze_vision": True, "reset_projector": True})
    state = weak.tuned(adapter)["state"]
    original = adapter.model.state_dict()
    tower = _tower_keys(state)
    assert tower and any(not torch.equal(state[k], original[k]) for k in tower)  # redrawn weights
    again = create_method("world-tune", {**TINY, "reset_vision": True, "freeze_vision": True, "reset_projector": True})
    again._tuned.clear()
    other = again.train(adapter)["state"]  # trained afresh, same seed: the same draw and the same steps
    assert set(other) == set(state) and all(torch.equal(other[k], state[k]) for k in state)
    seed1 = create_method("world-tune", {**TINY, "reset_vision": True, "freeze_vision": True, "seed": 1}).train(adapter)["state"]
    assert any(not torch.equal(seed1[k], state[k]) for k in tower)


def test_the_arm_is_trained_on_its_own_world(adapter, artifact_cache):
    arm = create_method("world-tune", {**TINY, "world": {"yes_ratio": 1.0}, "caption_share": 0.0})
    stats = arm.prepare(adapter)
    assert stats["yes_share"] == 1.0 and stats["captions"] == 0
    assert stats["world_fingerprint"] == arm.world.fingerprint()
    assert create_method("world-tune", TINY).fingerprint_payload() != arm.fingerprint_payload()


def test_with_both_towers_frozen_only_the_projector_trains(adapter, artifact_cache):
    """freeze_vision + freeze_lm is the survey's stage 2 again: the tuned state holds projector tensors only."""
    state = create_method("world-tune", {**TINY, "freeze_vision": True, "freeze_lm": True, "reset_projector": True,
                                         "lr": 5e-3}).tuned(adapter)["state"]
    assert state and all(".multi_modal_projector." in k for k in state), sorted(state)[:5]
    original = adapter.model.state_dict()
    assert any(not torch.equal(state[k], original[k]) for k in state)
