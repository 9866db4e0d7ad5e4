"""Woodpecker's stand-in pipeline: the correction rules on hand-set evidence, the detector's seeding and
cache, and runs through the adapter (world items corrected, other items passed through with a warning)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

torch = pytest.importorskip("torch")

from plugins.methods.base import MethodConfigError  # noqa: E402
from plugins.methods.woodpecker import Detection, correct  # noqa: E402
from plugins.models.batch import Batch  # noqa: E402
from plugins.models.detector import detections  # noqa: E402
from plugins.registry import create_method  # noqa: E402
from plugins.trainers import detector as trainer  # noqa: E402
from plugins.world import CAPTION_PROMPT, SceneSampler, WorldConfig, render  # noqa: E402

WORLD = WorldConfig()
TINY = {"detector_width": 2, "detector_scenes": 16, "detector_steps": 3, "detector_batch": 4, "detector_val_scenes": 4}

# Hand-set evidence: a yellow large star on the left, a small blue ring on the right; heart unlikely, circle doubtful.
EVIDENCE = Detection(
    presence={"star": 0.97, "ring": 0.9, "heart": 0.05, "circle": 0.3},
    colors={"star": {"yellow": 0.8, "red": 0.2}, "ring": {"blue": 0.95, "green": 0.05}},
    sizes={"star": {"large": 0.9, "small": 0.1}, "ring": {"small": 0.6, "large": 0.4}},
    centers={"star": (12.0, 30.0), "ring": (50.0, 33.0)})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNSCOPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ---------------------------------------------------------------- the rules, on hand-set evidence

@pytest.mark.parametrize("caption, expected", [
    # absent heart removed; the relation it took part in goes with it
    ("a large yellow star left of a red heart left of a small blue ring .", "a large yellow star and a small blue ring ."),
    # wrong colour and size fixed in place; a stated relation that holds is kept
    ("a small red star left of a large blue ring .", "a large yellow star left of a small blue ring ."),
    # a repeated mention of a detected object is a counting error
    ("a large yellow star left of a small blue ring left of a large yellow star .", "a large yellow star left of a small blue ring ."),
    # a relation the detected centres contradict is replaced by the one that holds
    ("a small blue ring above a large yellow star .", "a small blue ring right of a large yellow star ."),
    # the first mention removed: the caption does not start with a connector
    ("a heart left of a star .", "a star ."),
    # nothing left at all
    ("a red heart .", "."),
    # already right: byte for byte unchanged (case and spacing kept)
    ("A large yellow star left of a small blue ring.", "A large yellow star left of a small blue ring."),
])
def test_caption_corrections_with_hand_set_evidence(caption, expected):
    assert correct(CAPTION_PROMPT, caption, EVIDENCE, WORLD) == expected


@pytest.mark.parametrize("question, answer, expected", [
    ("is there a heart in the image ?", "yes", "no"),  # detector: absent (p = 0.05)
    ("is there a ring in the image ?", "no", "yes"),  # detector: present (p = 0.9)
    ("is there a star in the image ?", "yes", "yes"),  # agrees: unchanged
    ("is there a circle in the image ?", "yes", "no"),  # p = 0.3 < box_threshold 0.35
    ("is the star red ?", "yes", "no"),  # detected colour yellow
    ("is the star yellow ?", "no", "yes"),
    ("is the heart red ?", "yes", "no"),  # no heart, so not a red one
    ("is the ring left of the star ?", "yes", "no"),  # centres: ring right of star by 38 px
    ("is the star left of the ring ?", "no", "yes"),
    ("is the star above the ring ?", "yes", "yes"),  # 3 px apart vertically: too close to call, kept
    ("what is this ?", "yes", "yes"),  # not a world template, and no object in the answer: unchanged
])
def test_yes_no_corrections_with_hand_set_evidence(question, answer, expected):
    assert correct(question, answer, EVIDENCE, WORLD) == expected


def test_box_threshold_decides_presence():
    assert correct("is there a circle in the image ?", "yes", EVIDENCE, WORLD, box_threshold=0.25) == "yes"
    assert correct("is there a circle in the image ?", "no", EVIDENCE, WORLD, box_threshold=0.25) == "yes"
    assert correct("is there a circle in the image ?", "no", EVIDENCE, WORLD, box_threshold=0.25,
                   min_confidence=0.5) == "no"  # "present" with confidence 0.3 only
    assert correct("describe the image .", "a circle .", EVIDENCE, WORLD, box_threshold=0.25) == "a circle ."
    assert correct("describe the image .", "a circle .", EVIDENCE, WORLD) == "."


def test_min_confidence_gates_each_revision():
    # absent heart: confidence 0.95; red star: the verdict "no" has confidence 1 - P(red) = 0.8
    assert correct("is there a heart in the image ?", "yes", EVIDENCE, WORLD, min_confidence=0.9) == "no"
    assert correct("is the star red ?", "yes", EVIDENCE, WORLD, min_confidence=0.85) == "yes"
    assert correct("describe the image .", "a small red star and a heart .", EVIDENCE, WORLD,
                   min_confidence=0.85) == "a large red star ."  # size (0.9) fixed, colour (0.8) kept


@pytest.mark.parametrize("question, answer", [
    (CAPTION_PROMPT, "a small red star left of a red heart above a large blue ring left of a star ."),
    ("is there a heart in the image ?", "yes"), ("is there a ring in the image ?", "no"),
    ("is the star red ?", "yes"), ("is the ring left of the star ?", "yes"),
])
def test_neutral_setting_changes_nothing(question, answer):
    assert correct(question, answer, EVIDENCE, WORLD, min_confidence=1.0) == answer


# ---------------------------------------------------------------- the detector

def test_detector_training_is_seeded():
    def weights(seed):
        net = trainer.train_detector(WORLD, width=2, scenes=8, steps=2, batch=4, lr=3e-3, seed=seed)
        return torch.cat([p.flatten() for p in net.state_dict().values()])

    state = torch.get_rng_state()
    first = weights(0)
    assert torch.equal(torch.get_rng_state(), state), "training must leave the global RNG alone"
    assert torch.equal(first, weights(0))
    assert not torch.equal(first, weights(1))


def test_detector_reads_one_verdict_per_category():
    net = trainer.train_detector(WORLD, width=2, scenes=8, steps=1, batch=4, lr=3e-3, seed=0)
    images = [render(SceneSampler(WORLD).sample_split("test", i), WORLD) for i in range(2)]
    found = detections(net, images, WORLD)
    assert len(found) == 2 and set(found[0].presence) == set(WORLD.categories)
    assert all(0.0 <= p <= 1.0 for p in found[0].presence.values())
    assert sum(found[1].colors["star"].values()) == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= v <= WORLD.image_size for xy in found[0].centers.values() for v in xy)


def test_detector_is_cached_and_only_the_recipe_retrains_it(cache, monkeypatch):
    first = create_method("woodpecker", TINY)
    report = first.detector_report()
    assert report["parameters"] > 0 and 0.0 <= report["presence_accuracy"] <= 1.0 and report["scenes"] == 4

    calls = []
    original = trainer.train_detector
    monkeypatch.setattr(trainer, "train_detector", lambda *a, **k: calls.append(k) or original(*a, **k))
    again = create_method("woodpecker", {**TINY, "min_confidence": 0.5, "box_threshold": 0.5})
    assert again.detector_report() == report and calls == []  # thresholds do not retrain
    weights = [p.clone() for p in again.detector().state_dict().values()]
    assert all(torch.equal(a, b) for a, b in zip(weights, first.detector().state_dict().values()))
    create_method("woodpecker", {**TINY, "detector_seed": 1}).detector()
    assert len(calls) == 1 and calls[0]["seed"] == 1  # a new recipe does
    assert len(list((cache / "woodpecker-detector").glob("*.pt"))) == 2


def test_config_is_checked():
    with pytest.raises(MethodConfigError, match="did you mean 'min_confidence'"):
        create_method("woodpecker", {"min_confidense": 0.5})
    with pytest.raises(MethodConfigError, match="world"):
        create_method("woodpecker", {"world": {"max_objects": 99}})
    with pytest.raises(MethodConfigError, match="box_threshold"):
        create_method("woodpecker", {"box_threshold": 1.5})


# ---------------------------------------------------------------- through the adapter

@pytest.fixture(scope="module")
def tiny_llava():
    """The committed default checkpoint (a ~1.3 M-parameter LLaVA trained on the world)."""
    from plugins.models.adapter import LlavaAdapter
    from plugins.models.lookup import TINY_LLAVA_CHECKPOINT

    return LlavaAdapter.load(TINY_LLAVA_CHECKPOINT, device="cpu")


def world_batch(n_scenes=2):
    scenes = [SceneSampler(WORLD).sample_split("test", i) for i in range(n_scenes)]
    images, prompts = [], []
    for scene in scenes:
        image = render(scene, WORLD)
        absent = next(c for c in WORLD.categories if c not in scene.categories)
        for prompt in (CAPTION_PROMPT, f"is there a {absent} in the image ?",
                       f"is the {scene.objects[0].category} red ?"):
            images.append(image)
            prompts.append(prompt)
    return Batch(images, prompts)


def test_runs_on_the_committed_checkpoint(tiny_llava, cache):
    batch = world_batch()
    plain = tiny_llava.generate(batch, max_new_tokens=12)
    method = create_method("woodpecker", TINY)
    fixed = tiny_llava.generate(batch, max_new_tokens=12, method=method, batch_size=4)
    assert len(fixed) == len(batch) and all(isinstance(t, str) for t in fixed)
    assert fixed == tiny_llava.generate(batch, max_new_tokens=12, method=method, batch_size=6)  # batch-invariant
    # every answer is what the rules make of the plain answer with this detector's evidence
    evidence = detections(method.detector(), batch.images, WORLD)
    assert fixed == [correct(q, a, e, WORLD) for q, a, e in zip(batch.prompts, plain, evidence)]
    neutral = create_method("woodpecker", {**TINY, "min_confidence": 1.0})
    assert tiny_llava.generate(batch, max_new_tokens=12, method=neutral) == plain


def test_items_outside_the_world_pass_through_with_a_warning(adapter, cache):
    from tests.tiny_llava import random_images

    batch = Batch(random_images(2), ["is there a cat ?", "describe the image ."])  # 32 px: not world images
    plain = adapter.generate(batch, max_new_tokens=4)
    with pytest.warns(RuntimeWarning, match="woodpecker: 2 of 2 items are not 64 px images"):
        assert adapter.generate(batch, max_new_tokens=4, method=create_method("woodpecker", TINY)) == plain
    assert not cache.exists(), "no detector may be trained for items it cannot correct"
