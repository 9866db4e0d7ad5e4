"""The tuned methods (plugins/methods/{tuned,dpo,rdpo,hacl,lrv}.py): registered, official defaults, weights swapped in
only inside the with block, trained once per checkpoint and config, training time on record, rDPO at weight 0 is DPO."""
from __future__ import annotations

import pytest
import torch

from plugins.benchmarks.pope import answer_clarity
from plugins.methods.dpo import DPO
from plugins.methods.hacl import HACL
from plugins.methods.lrv import LRV
from plugins.methods.rdpo import RDPO
from plugins.methods.tuned import SwappedWeights, TunedMethod
from plugins.models.adapter import LlavaAdapter
from plugins.models.lookup import TINY_LLAVA_CHECKPOINT
from plugins.registry import create_method, get_method, list_methods
from tests.method_checks import counting, hooks_while_steering

TINY = {"scenes": 4, "steps": 3, "batch_size": 4, "lr": 1e-3, "questions": [1, 1, 0]}  # seconds, not minutes
METHODS = {"dpo": DPO, "rdpo": RDPO, "hacl": HACL, "lrv": LRV}


def test_the_four_methods_are_registered():
    assert set(METHODS) <= set(list_methods())
    for name, cls in METHODS.items():
        assert get_method(name) is cls and issubclass(cls, TunedMethod) and cls.name == name


def test_defaults_follow_the_official_code_where_they_apply_and_typos_fail():
    assert DPO().config.beta == RDPO().config.beta == 0.1
    assert (RDPO().config.visual_weight, RDPO().config.scoring) == (1.0, "answer")
    assert (HACL().config.temperature, HACL().config.contrastive_weight) == (0.07, 1.0)
    assert LRV().config.weight_decay == 0.05
    with pytest.raises(ValueError, match="did you mean 'visual_weight'"):
        RDPO({"visual_wieght": 0})


def test_the_code_identities_cover_the_tuning_and_world_code():
    """A cell's identity (the method's import closure) and the weights' (the trainer's) both hold the tuning code."""
    from plugins.identity import code_identity

    for cls in METHODS.values():
        answering = code_identity([cls.__module__])
        training = code_identity([cls.trainer.__module__])
        for module in ("plugins.tuning.trainer", "plugins.tuning.losses", "plugins.tuning.preferences",
                       "plugins.tuning.instructions", "plugins.models.loop", "plugins.world.text"):
            assert module in answering and module in training, (cls.name, module)
        assert not any(m.startswith("plugins.methods") for m in training), cls.name  # answering code never trains


# ---------------------------------------------------------------- swapping weights

def test_swapped_weights_are_restored_on_exit_and_on_error():
    layer = torch.nn.Linear(2, 2)
    original = {k: v.clone() for k, v in layer.state_dict().items()}
    tuned = {"weight": torch.ones(2, 2)}
    with SwappedWeights(layer, tuned):
        assert torch.equal(layer.weight, torch.ones(2, 2)) and torch.equal(layer.bias, original["bias"])
    assert all(torch.equal(layer.state_dict()[k], v) for k, v in original.items())
    with pytest.raises(RuntimeError, match="boom"):
        with SwappedWeights(layer, tuned):
            raise RuntimeError("boom")
    assert all(torch.equal(layer.state_dict()[k], v) for k, v in original.items())
    for bad, message in (({"weight": torch.ones(2, 2), "nope": torch.ones(1)}, "nope: not in the model"),
                         ({"weight": torch.ones(3, 2)}, r"weight: tuned \(3, 2\) vs model \(2, 2\)")):
        with pytest.raises(ValueError, match=message):
            with SwappedWeights(layer, bad):
                pass
        assert all(torch.equal(layer.state_dict()[k], v) for k, v in original.items())  # nothing was copied


@pytest.mark.parametrize("name", sorted(METHODS))
def test_tuned_weights_change_the_answers_only_inside_the_with_block(adapter, world_questions, artifact_cache, name):
    method = create_method(name, TINY)
    hooks_while_steering(adapter, world_questions, method)  # logits move inside; no hook, no weight left behind
    state = method.tuned(adapter)["state"]
    with method.hooks(adapter, world_questions):
        current = adapter.model.state_dict()
        assert all(torch.equal(current[k], v) for k, v in state.items())


# ---------------------------------------------------------------- trained once, cached, timed

def test_training_happens_once_per_checkpoint_and_config(adapter, world_questions, artifact_cache, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(LRV, "trainer", staticmethod(counting(LRV.trainer, calls)))
    first = LRV(TINY)
    assert first.train_seconds is None
    first.hooks(adapter, world_questions)
    first.hooks(adapter, world_questions[:2])  # the next chunk: from memory
    assert len(calls) == 1 and len(list((artifact_cache / "tuned-lrv").glob("*.pt"))) == 1
    seconds = first.train_seconds
    assert seconds > 0 and seconds == first.training_report(adapter)["train_seconds"]
    again = LRV(TINY)  # a new instance: from disk, with the time the run took when it was trained
    assert again.prepare(adapter)["train_seconds"] == seconds and again.train_seconds == seconds
    assert len(calls) == 1
    assert all(torch.equal(again.tuned(adapter)["state"][k], v) for k, v in first.tuned(adapter)["state"].items())
    LRV({**TINY, "seed": 1}).prepare(adapter)  # another config: trained afresh
    assert len(calls) == 2
    in_memory = LlavaAdapter(adapter.model, adapter.processor)  # no checkpoint directory: trained, never written
    LRV(TINY).prepare(in_memory)
    assert len(calls) == 3 and len(list((artifact_cache / "tuned-lrv").glob("*.pt"))) == 2


@pytest.mark.parametrize("data", ["ha-dpo", "re-align"])
def test_rdpo_with_visual_weight_zero_trains_exactly_dpo_on_the_same_data(adapter, artifact_cache, data):
    dpo = DPO({**TINY, "data": data}).tuned(adapter)
    rdpo = RDPO({**TINY, "visual_weight": 0, "data": data}).tuned(adapter)
    assert dpo["state"].keys() == rdpo["state"].keys()
    assert all(torch.equal(dpo["state"][k], rdpo["state"][k]) for k in dpo["state"])
    assert dpo["stats"]["losses"] == rdpo["stats"]["losses"]
    full = RDPO({**TINY, "data": data}).tuned(adapter)  # the visual term changes the run
    assert full["stats"]["losses"] != dpo["stats"]["losses"]


def test_rdpo_trains_on_re_align_pairs_by_default_and_they_are_not_dpos(adapter, artifact_cache):
    assert RDPO().config.data == "re-align" and DPO().config.data == "ha-dpo"
    assert RDPO(TINY).tuned(adapter)["stats"]["losses"] != RDPO({**TINY, "data": "ha-dpo"}).tuned(adapter)["stats"]["losses"]


def test_committed_tiny_checkpoint_answers_world_questions_after_tuning(world_questions, artifact_cache):
    model = LlavaAdapter.load(TINY_LLAVA_CHECKPOINT, device="cpu")
    method = DPO({**TINY, "lr": 5e-5})
    answers = model.generate(world_questions, max_new_tokens=6, method=method)
    assert len(answers) == len(world_questions) and all(answer_clarity(a) in ("yes", "no") for a in answers), answers
    report = method.training_report(model)
    assert report["steps"] == 3 and report["threads"] == torch.get_num_threads()
    data = report["data"]
    assert data["caption_pairs"] == 4 and data["relation_pairs"] == 0
    assert data["pairs"] == data["caption_pairs"] + data["object_pairs"] + data["attribute_pairs"]
