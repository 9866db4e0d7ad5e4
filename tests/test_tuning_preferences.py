"""Tuning data (plugins/tuning/preferences.py, instructions.py): corrections against ground truth, injected
hallucinations, pairs from the model's own answers, Re-Align's retrieval of the nearest different image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from plugins.benchmarks.pope import parse_pope_answer
from plugins.tuning.instructions import hallucinated_captions, instruction_set
from plugins.tuning.preferences import (
    PREFERENCE_SPLIT, STATS_SCENES, build_preferences, tuning_questions, caption_errors, faithful_caption, image_embeddings, inject_hallucination,
    nearest_different, scene_rng, with_retrieval,
)
from plugins.world import (
    CAPTION_PROMPT, Scene, SceneObject, SceneSampler, WorldConfig, WorldStats, caption, parse_caption,
)

WORLD = WorldConfig()
SCENE = Scene(seed=7, image_size=64, objects=(
    SceneObject("circle", "red", "small", x=2, y=25, extent=14),
    SceneObject("star", "blue", "large", x=22, y=22, extent=20),
    SceneObject("ring", "green", "small", x=48, y=2, extent=14)))


# ---------------------------------------------------------------- captions checked against the truth

@pytest.mark.parametrize("said, errors", [
    ("a small red circle left of a large blue star .", 0),
    ("a small red circle left of a large blue star left of a small green ring .", 0),
    ("a red circle left of a heart .", 1),  # absent object
    ("a small red circle left of a small red circle .", 1),  # a repeat (its "left of" itself is part of that error)
    ("a large yellow circle .", 2),  # wrong size and colour
    ("a small red circle right of a large blue star .", 1),  # false relation
])
def test_caption_errors_counts_each_false_statement(said, errors):
    assert caption_errors(said, SCENE, WORLD) == errors


def test_faithful_caption_keeps_the_number_of_objects_and_states_only_the_truth():
    said = "a large red heart left of a small red circle left of a small red circle ."  # absent heart, repeat
    fixed = faithful_caption(said, SCENE, WORLD)
    assert caption_errors(fixed, SCENE, WORLD) == 0
    assert len(parse_caption(fixed, WORLD).objects) == len(parse_caption(said, WORLD).objects) == 3
    assert fixed == caption(SCENE, WORLD)  # here the two spare objects complete the scene
    # no spare object left: the false mention goes instead of being renamed
    assert faithful_caption("a red circle left of a blue star left of a green ring and a heart .", SCENE, WORLD) \
        == caption(SCENE, WORLD)
    assert faithful_caption("yes", SCENE, WORLD) == ""


def test_injected_hallucinations_are_false_keep_the_length_and_are_seeded():
    sampler = SceneSampler(WORLD)
    truth = caption(SCENE, WORLD)
    texts = [inject_hallucination(SCENE, WORLD, np.random.default_rng(s), sampler) for s in range(30)]
    assert all(caption_errors(t, SCENE, WORLD) >= 1 for t in texts)
    assert all(len(t.split()) == len(truth.split()) for t in texts)
    kinds = {"object" if {m.category for m in parse_caption(t, WORLD).objects} != set(SCENE.categories) else "colour"
             for t in texts}
    assert kinds == {"object", "colour"}
    assert texts[3] == inject_hallucination(SCENE, WORLD, np.random.default_rng(3), sampler)


# ---------------------------------------------------------------- pairs from the model's own answers

@pytest.fixture(scope="module")
def prefs(adapter):
    return build_preferences(adapter, WORLD, 6, seed=0, counts=(2, 1, 1))


def test_pairs_come_from_the_tuning_stream_and_prefer_the_truth(prefs):
    sampler = SceneSampler(WORLD)
    assert [s.seed for s in prefs.data.scenes] == [sampler.sample_split(PREFERENCE_SPLIT, i).seed for i in range(6)]
    assert not {s.seed for s in prefs.data.scenes} & {sampler.sample_split("test", i).seed for i in range(200)}
    stats = WorldStats.estimate(WORLD, n=STATS_SCENES, split="train")
    asked = [q for i, s in enumerate(prefs.data.scenes) for q in tuning_questions(s, i, WORLD, stats, (2, 1, 1))]
    assert [(p.prompt, p.chosen) for p in prefs.pairs if p.kind != "caption"] == [(q.text, q.answer) for q in asked]
    assert prefs.summary()["caption_pairs"] == 6 and prefs.summary()["object_pairs"] == 12
    for pair in prefs.pairs:
        scene = prefs.data.scenes[pair.image]
        assert pair.chosen != pair.rejected
        if pair.kind == "caption":
            assert pair.prompt == CAPTION_PROMPT
            assert caption_errors(pair.chosen, scene, WORLD) == 0 and caption_errors(pair.rejected, scene, WORLD) > 0
        else:
            assert pair.chosen in ("yes", "no") and parse_pope_answer(pair.rejected) != pair.chosen
    assert {p.source for p in prefs.pairs} <= {"model", "injected"}


def test_wrong_answers_of_the_model_become_rejected_answers(adapter, prefs):
    from plugins.models.batch import Batch

    questions = [p for p in prefs.pairs if p.kind != "caption"]
    said = adapter.generate(Batch([prefs.data.images[p.image] for p in questions], [p.prompt for p in questions]),
                            max_new_tokens=8)
    for pair, answer in zip(questions, said):
        wrong = parse_pope_answer(answer) != pair.chosen
        assert (pair.source == "model") == wrong
        if wrong:
            assert pair.rejected == answer


def test_preferences_are_deterministic(adapter, prefs):
    again = build_preferences(adapter, WORLD, 6, seed=0, counts=(2, 1, 1))
    assert again.pairs == prefs.pairs
    other = build_preferences(adapter, WORLD, 6, seed=1, counts=(2, 1, 1))
    assert [p.rejected for p in other.pairs if p.source == "injected"] != \
        [p.rejected for p in prefs.pairs if p.source == "injected"]  # the seed picks the injected hallucinations


# ---------------------------------------------------------------- Re-Align's retrieval

def test_nearest_different_by_hand():
    e = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
    assert nearest_different(e).tolist() == [1, 3, 3, 1]
    same = [np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8),
            np.full((2, 2, 3), 2, np.uint8)]
    assert nearest_different(e, same).tolist() == [3, 3, 3, 1]  # images 0 and 1 are one image: never each other's
    with pytest.raises(ValueError, match="expected \\(N, D\\) with N >= 2"):
        nearest_different(e[:1])


def test_retrieval_returns_the_nearest_different_image_by_the_models_embedding(adapter, prefs):
    retrieved = with_retrieval(prefs, adapter)
    assert retrieved.pairs == prefs.pairs and len(retrieved.retrieved) == len(prefs.data.scenes)
    embeddings = image_embeddings(adapter, list(prefs.data.images))
    assert embeddings.shape == (6, adapter.config.text_config.hidden_size)
    similarity = F.normalize(embeddings, dim=-1) @ F.normalize(embeddings, dim=-1).t()
    for i, j in enumerate(retrieved.retrieved):
        assert j != i and not np.array_equal(prefs.data.images[i], prefs.data.images[j])
        others = [similarity[i, k] for k in range(6) if k != i]
        assert similarity[i, j] == max(others)


# ---------------------------------------------------------------- instruction data (LRV, HACL)

def test_negative_instructions_are_the_hard_ones_and_balanced():
    from plugins.models.data import build_world_data

    data = build_world_data(WORLD, 40, PREFERENCE_SPLIT)
    negative = instruction_set(data, WORLD, mix="negative", counts=(2, 2, 2))
    plain = instruction_set(data, WORLD, mix="plain", counts=(2, 2, 2))
    questions = [e for e in negative if e.kind != "caption"]
    assert 0.4 <= sum(e.answer == "no" for e in questions) / len(questions) <= 0.6
    assert all(e.negative == (e.answer == "no") for e in negative)
    assert [e.answer for e in negative if e.kind == "caption"] == list(data.captions)
    # the hard attribute negatives name the colour (size) the shape usually has; random ones need not
    stats = WorldStats.estimate(WORLD, n=2000, split="train")
    usual = {(kind, c): max(table[c], key=lambda k: table[c][k]) for kind, table in
             (("colour", stats.color_counts), ("size", stats.size_counts)) for c in WORLD.categories}
    hard = [e for e in negative if e.kind == "attribute" and e.negative]
    assert {e.prompt.split()[3] in WORLD.sizes for e in hard} == {True, False}  # colours and sizes both
    for e in hard:
        _, _, shape, value, _ = e.prompt.split()
        kind = "size" if value in WORLD.sizes else "colour"
        obj = data.scenes[e.image].get(shape)
        assert value == usual[kind, shape] or (obj.size if kind == "size" else obj.color) == usual[kind, shape]

    def partner_score(examples):  # how often the absent objects asked about were seen with the present ones
        asked = [(e.prompt.split()[3], data.scenes[e.image]) for e in examples if e.kind == "object" and e.negative]
        return np.mean([stats.cooccurrence_score(c, s.categories) + stats.category_counts[c] for c, s in asked])

    assert partner_score(negative) > 1.2 * partner_score(plain)
    with pytest.raises(ValueError, match="mix is 'hard'"):
        instruction_set(data, WORLD, mix="hard")
    lies = hallucinated_captions(data, WORLD, seed=0)
    assert all(caption_errors(t, s, WORLD) >= 1 for t, s in zip(lies, data.scenes))
    assert scene_rng(0, data.scenes[0]).random() == scene_rng(0, data.scenes[0]).random()


# ---------------------------------------------------------------- Re-Align: rejected answers from the retrieved image

OTHER = Scene(seed=8, image_size=64, objects=(
    SceneObject("star", "yellow", "large", x=40, y=22, extent=20),  # shared category, another colour
    SceneObject("circle", "red", "small", x=44, y=48, extent=14)))  # circle right of / below the star here


def test_retrieved_content_is_written_in_object_first_then_colour_then_relation():
    from plugins.tuning.preferences import inject_retrieved

    rng = np.random.default_rng(0)
    with_heart = Scene(seed=9, image_size=64, objects=OTHER.objects + (SceneObject("heart", "red", "small", 4, 48, 14),))
    text, how = inject_retrieved(SCENE, with_heart, WORLD, rng)
    assert how == "object" and "heart" in text and len(text.split()) == len(caption(SCENE, WORLD).split())
    assert caption_errors(text, SCENE, WORLD) >= 1
    text, how = inject_retrieved(SCENE, OTHER, WORLD, rng)  # no object to borrow: the star's colour in OTHER
    assert how == "attribute" and "yellow star" in text and caption_errors(text, SCENE, WORLD) == 1
    same_colours = Scene(seed=10, image_size=64, objects=(
        SceneObject("star", "blue", "large", x=2, y=22, extent=20), SceneObject("circle", "red", "small", x=44, y=25, extent=14)))
    text, how = inject_retrieved(SCENE, same_colours, WORLD, rng)  # only a relation differs: circle right of star
    assert how == "relation" and text.startswith("a large blue star left of a small red circle")  # as same_colours has it
    assert caption_errors(text, SCENE, WORLD) == 1
    text, how = inject_retrieved(SCENE, SCENE, WORLD, rng)
    assert how == "prior"


def test_retrieved_questions_are_false_here_and_true_there():
    from plugins.tuning.preferences import retrieved_questions

    qs = retrieved_questions(SCENE, OTHER, WORLD, 10, np.random.default_rng(0))
    texts = {q.text for q in qs}
    assert "is the star yellow ?" in texts and all(q.answer == "no" for q in qs)
    assert any(q.kind == "relation" for q in qs)
    assert len(retrieved_questions(SCENE, OTHER, WORLD, 1, np.random.default_rng(0))) == 1


def test_realign_pairs_need_retrieval_and_balance_yes_and_no(adapter):
    from plugins.models.data import build_world_data
    from plugins.tuning.preferences import PreferenceData, realign_pairs

    data = PreferenceData(build_world_data(WORLD, 8, PREFERENCE_SPLIT), ())
    with pytest.raises(ValueError, match="with_retrieval first"):
        realign_pairs(data, WORLD)
    prefs = realign_pairs(with_retrieval(data, adapter), WORLD, seed=0, counts=(2, 2, 2))
    assert prefs.retrieved is not None and all(p.source == "retrieved" for p in prefs.pairs)
    captions_ = [p for p in prefs.pairs if p.kind == "caption"]
    assert len(captions_) == 8 and all(p.chosen == prefs.data.captions[p.image] for p in captions_)
    assert all(caption_errors(p.rejected, prefs.data.scenes[p.image], WORLD) >= 1 for p in captions_)
    yesno = [p for p in prefs.pairs if p.kind != "caption"]
    assert sum(p.chosen == "yes" for p in yesno) == sum(p.chosen == "no" for p in yesno) > 0
    assert realign_pairs(with_retrieval(data, adapter), WORLD, seed=0) == prefs  # deterministic
