"""The tuning trainer (plugins/tuning/trainer.py) on the tiny random LLaVA: a few steps lower each objective,
the reference is never touched, only changed tensors come back, and a run is reproducible."""
from __future__ import annotations

import math

import pytest
import torch

from plugins.models.loop import StageConfig
from plugins.tuning.instructions import hallucinated_captions, instruction_set
from plugins.tuning.preferences import build_preferences, with_retrieval
from plugins.tuning.trainer import TEMPERATURE_RANGE, train_contrastive, train_instructions, train_preference
from plugins.world import WorldConfig

WORLD = WorldConfig()
FEW = StageConfig(steps=6, batch_size=8, lr=1e-3, warmup=0)  # a few large steps: enough to move a random model


@pytest.fixture(scope="module")
def prefs(adapter):
    return with_retrieval(build_preferences(adapter, WORLD, 4, seed=0, counts=(2, 1, 1)), adapter)


@pytest.fixture
def untouched(adapter):
    """Asserts after the test that the adapter's (reference) model kept every weight."""
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    yield before
    after = adapter.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the reference model was modified"


def check_run(run, before, steps):
    assert len(run.stats["losses"]) == steps
    assert run.stats["eval_loss_after"] < run.stats["eval_loss_before"]
    assert run.state and set(run.state) <= set(before)
    assert all(not torch.equal(v, before[k]) for k, v in run.state.items())  # only tensors that changed
    assert all(v.device.type == "cpu" and not v.requires_grad for v in run.state.values())
    assert run.stats["changed_parameters"] == sum(v.numel() for v in run.state.values())


def test_dpo_lowers_its_loss_and_leaves_the_reference_alone(adapter, prefs, untouched):
    run = train_preference(adapter, prefs, FEW, beta=0.1, progress=False)
    assert run.stats["eval_loss_before"] == pytest.approx(math.log(2), abs=1e-6)  # the policy starts as the reference
    check_run(run, untouched, FEW.steps)
    assert run.stats["eval_preference_accuracy_after"] > 0.5
    assert run.stats["objective"] == "dpo" and run.stats["data"]["pairs"] == len(prefs.pairs)


def test_rdpo_lowers_its_loss_with_either_scoring(adapter, prefs, untouched):
    answer = train_preference(adapter, prefs, FEW, visual_weight=1.0, progress=False)
    assert answer.stats["eval_loss_before"] == pytest.approx(2 * math.log(2), abs=1e-6)  # two terms at log 2 each
    check_run(answer, untouched, FEW.steps)
    official = train_preference(adapter, prefs, FEW, visual_weight=1.0, scoring="official", sft_weight=0.5,
                                progress=False)
    check_run(official, untouched, FEW.steps)
    assert official.stats["eval_loss_before"] > 2 * math.log(2)  # the SFT term adds a positive cross-entropy
    without = build_preferences(adapter, WORLD, 2, counts=(1, 0, 0))
    with pytest.raises(ValueError, match="needs retrieved images"):
        train_preference(adapter, without, FEW, visual_weight=1.0, progress=False)


def test_a_run_is_reproducible_and_keeps_the_global_random_state(adapter, prefs):
    rng = torch.random.get_rng_state()
    first = train_preference(adapter, prefs, FEW, progress=False)
    assert torch.equal(torch.random.get_rng_state(), rng)
    again = train_preference(adapter, prefs, FEW, progress=False)
    assert first.state.keys() == again.state.keys()
    assert all(torch.equal(first.state[k], again.state[k]) for k in first.state)
    assert first.stats["losses"] == again.stats["losses"]
    other = train_preference(adapter, prefs, FEW, seed=1, progress=False)  # another batch order
    assert other.stats["losses"] != first.stats["losses"]


def test_contrastive_tuning_lowers_its_loss_and_keeps_the_temperature_in_range(adapter, prefs, untouched):
    data = prefs.data
    examples = instruction_set(data, WORLD, mix="plain", counts=(1, 1, 0))
    run = train_contrastive(adapter, data.images, examples, data.captions, hallucinated_captions(data, WORLD),
                            StageConfig(steps=6, batch_size=4, lr=1e-3, warmup=0), temperature=0.6, progress=False)
    check_run(run, untouched, 6)
    assert run.stats["eval_contrastive_loss_after"] < run.stats["eval_contrastive_loss_before"]
    assert run.stats["trainable_parameters"] > sum(p.numel() for p in adapter.model.parameters())  # + the two heads
    assert run.stats["temperature_after"] <= TEMPERATURE_RANGE[1] < 0.6  # clamped after every step, as officially
    with pytest.raises(ValueError, match="one of each per image"):
        train_contrastive(adapter, data.images, examples, data.captions[:2], data.captions, FEW, progress=False)


def test_instruction_tuning_lowers_its_loss(adapter, prefs, untouched):
    examples = instruction_set(prefs.data, WORLD, mix="negative", counts=(2, 1, 1))
    run = train_instructions(adapter, prefs.data.images, examples, FEW, progress=False)
    check_run(run, untouched, FEW.steps)
    assert run.stats["negative_examples"] == sum(e.negative for e in examples) > 0
