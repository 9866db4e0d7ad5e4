"""LogicCheckGPT's stand-in: the closure rule and the revisions on a scripted model, then runs through the
adapter (world items checked by the committed model's own answers, other items passed through)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from plugins.methods.base import MethodConfigError  # noqa: E402
from plugins.methods.logiccheck import closure_ratio, described_as, forward_question, named_inverse_question  # noqa: E402
from plugins.models.batch import Batch  # noqa: E402
from plugins.registry import create_method  # noqa: E402
from plugins.world import CAPTION_PROMPT, SceneSampler, WorldConfig, render  # noqa: E402

WORLD = WorldConfig()
COLORS = sorted(WORLD.colors)
IMAGE = np.zeros((64, 64, 3), np.uint8)  # a world-sized image; the scripted model never looks at it


class ScriptedModel:
    """Answers follow-up questions from a script (anything unscripted: "no") and records what it was asked."""

    def __init__(self, yes: set[str], description: str = "."):
        self.yes, self.description = yes, description
        self.asked: list[str] = []

    def generate(self, batch, max_new_tokens=32, method=None, batch_size=8):
        assert method is None, "follow-up questions must be asked without the method"
        self.asked += batch.prompts
        return [self.description if q == CAPTION_PROMPT else ("yes" if q in self.yes else "no") for q in batch.prompts]


def colours_of(category, *colors):
    return {forward_question(category, c) for c in colors}


# The model believes the star is yellow and the heart red or blue; it describes a yellow star only.
SCRIPT = colours_of("star", "yellow") | colours_of("heart", "red", "blue")
DESCRIPTION = "a large yellow star ."


def check(questions, answers, model, **config):
    batch = Batch([IMAGE] * len(questions), questions)
    return create_method("logiccheck", config).postprocess(model, batch, list(answers))


def test_closure_ratio_and_the_description_reading():
    assert closure_ratio({"red", "blue"}, {"red": {"heart"}, "blue": {"ring"}}, "heart") == 0.5
    assert closure_ratio(set(), {"red": {"heart"}}, "heart") == 0.0  # no claims: fails, as in the official code
    assert described_as("a small red heart left of a blue ring and a red star .", WORLD) == {
        "red": {"heart", "star"}, "blue": {"ring"}}
    assert named_inverse_question("star", "orange") == "is there an orange star in the image ?"


@pytest.mark.parametrize("question, answer, expected", [
    ("is there a star in the image ?", "yes", "yes"),  # yellow -> the description's yellow star: r = 1
    ("is there a heart in the image ?", "yes", "no"),  # red, blue -> nothing red or blue described: r = 0
    ("is there a ring in the image ?", "yes", "no"),  # no colour claimed at all: r = 0
    ("is the heart red ?", "yes", "no"),  # the object it asks about fails
    ("is the star left of the heart ?", "yes", "no"),  # one of the two fails
    ("is there a heart in the image ?", "no", "no"),  # a no is not checked
    (CAPTION_PROMPT, "a large yellow star left of a red heart above a ring .", "a large yellow star ."),
])
def test_revisions_on_a_scripted_model(question, answer, expected):
    assert check([question], [answer], ScriptedModel(SCRIPT, DESCRIPTION)) == [expected]


def test_follow_up_questions_are_the_templated_ones_asked_once_per_image():
    model = ScriptedModel(SCRIPT, DESCRIPTION)
    check(["is there a star in the image ?", "is the star red ?", "is there a heart in the image ?"],
          ["yes", "yes", "no"], model)
    assert sorted(model.asked) == sorted([forward_question("star", c) for c in COLORS] + [CAPTION_PROMPT])


def test_the_official_threshold_is_inclusive():
    # five claimed colours, two of which the description confirms: r = 0.4
    model = ScriptedModel(colours_of("heart", "black", "blue", "green", "red", "yellow"), "a red heart and a blue heart .")
    question = ["is there a heart in the image ?"]
    assert check(question, ["yes"], model) == ["yes"]
    assert check(question, ["yes"], model, threshold=0.5) == ["no"]


def test_named_inverse_questions():
    model = ScriptedModel(SCRIPT | {named_inverse_question("heart", "red")})
    assert check(["is there a heart in the image ?"], ["yes"], model, inverse="named") == ["yes"]  # r = 1/2
    assert check(["is there a heart in the image ?"], ["yes"], model, inverse="named", threshold=0.6) == ["no"]
    assert named_inverse_question("heart", "blue") in model.asked and CAPTION_PROMPT not in model.asked


def test_threshold_zero_keeps_every_answer_and_asks_nothing():
    model = ScriptedModel(SCRIPT, DESCRIPTION)
    answers = ["yes", "yes", "a large yellow star left of a red heart ."]
    questions = ["is there a ring in the image ?", "is the heart red ?", CAPTION_PROMPT]
    assert check(questions, answers, model, threshold=0.0) == answers
    assert model.asked == []


def test_config_is_checked():
    with pytest.raises(MethodConfigError, match="did you mean 'threshold'"):
        create_method("logiccheck", {"treshold": 0.5})
    with pytest.raises(MethodConfigError, match="inverse"):
        create_method("logiccheck", {"inverse": "gpt"})


# ---------------------------------------------------------------- through the adapter

@pytest.fixture(scope="module")
def tiny_llava():
    pytest.importorskip("torch")
    from plugins.models.adapter import LlavaAdapter
    from plugins.models.lookup import TINY_LLAVA_CHECKPOINT

    return LlavaAdapter.load(TINY_LLAVA_CHECKPOINT, device="cpu")


def test_runs_on_the_committed_checkpoint(tiny_llava):
    scenes = [SceneSampler(WORLD).sample_split("test", i) for i in range(2)]
    images, prompts = [], []
    for scene in scenes:
        absent = next(c for c in WORLD.categories if c not in scene.categories)
        for prompt in (CAPTION_PROMPT, f"is there a {absent} in the image ?", f"is there a {scene.categories[0]} in the image ?"):
            images.append(render(scene, WORLD))
            prompts.append(prompt)
    batch = Batch(images, prompts)
    plain = tiny_llava.generate(batch, max_new_tokens=12)
    method = create_method("logiccheck")
    checked = tiny_llava.generate(batch, max_new_tokens=12, method=method, batch_size=3)
    assert len(checked) == len(batch) and all(isinstance(t, str) for t in checked)
    assert checked == tiny_llava.generate(batch, max_new_tokens=12, method=method, batch_size=6)  # batch-invariant
    for question, before, after in zip(prompts, plain, checked):
        assert after == before or (after == "no" if question != CAPTION_PROMPT else len(after) < len(before))
    assert tiny_llava.generate(batch, max_new_tokens=12, method=create_method("logiccheck", {"threshold": 0.0})) == plain


def test_items_outside_the_world_pass_through_with_a_warning(adapter):
    from tests.tiny_llava import random_images

    batch = Batch(random_images(2), ["is there a cat ?", "describe the image ."])  # 32 px: not world images
    plain = adapter.generate(batch, max_new_tokens=4)
    with pytest.warns(RuntimeWarning, match="logiccheck: 2 of 2 items are not 64 px images"):
        assert adapter.generate(batch, max_new_tokens=4, method=create_method("logiccheck")) == plain
