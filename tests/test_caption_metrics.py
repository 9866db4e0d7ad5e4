"""CHAIR-style caption metrics on hand-built scenes; every expected number is worked out by hand below."""
from __future__ import annotations

import json

import pytest

from plugins.benchmarks.caption import (
    CaptionScore, WrongAttribute, caption_audit, chair_metrics, count_words, score_caption,
)
from plugins.world import Relation, Scene, SceneObject, SceneSampler, WorldConfig, caption, noisy_caption

CFG = WorldConfig()  # relation_margin = 8 px

# Box centres: circle (11, 11), square (31, 51), star (50, 16). With an 8 px margin:
#   circle left of star (dx 39; dy 5 < 8: no vertical relation), circle left of and above square
#   (dx 20, dy 40), star right of and above square (dx 19, dy 35).
SCENE = Scene(seed=0, image_size=64, objects=(
    SceneObject("circle", "red", "small", x=4, y=4, extent=14),
    SceneObject("star", "blue", "large", x=40, y=6, extent=20),
    SceneObject("square", "green", "small", x=24, y=44, extent=14),
))
EXACT = "a small red circle left of a small green square left of a large blue star ."


def test_scene_relations_are_as_worked_out():
    assert set(SCENE.relations(8.0)) == {
        Relation("circle", "left of", "star"), Relation("star", "right of", "circle"),
        Relation("circle", "left of", "square"), Relation("square", "right of", "circle"),
        Relation("circle", "above", "square"), Relation("square", "below", "circle"),
        Relation("star", "right of", "square"), Relation("square", "left of", "star"),
        Relation("star", "above", "square"), Relation("square", "below", "star"),
    }


def test_exact_caption_scores_no_hallucination_and_full_recall():
    assert caption(SCENE, CFG) == EXACT
    s = score_caption(EXACT, SCENE, CFG)
    assert s.mentioned == ("circle", "square", "star") and s.hallucinated == ()
    assert (s.n_object_mentions, s.n_hallucinated_mentions) == (3, 0)
    assert (s.n_color, s.n_color_wrong, s.n_size, s.n_size_wrong) == (3, 0, 3, 0)
    assert (s.n_relations, s.n_relations_checked, s.n_relations_wrong) == (2, 2, 0)
    assert s.recall == 1.0 and s.n_words == 16
    m = chair_metrics([EXACT], [SCENE], CFG)
    assert {k: m[k] for k in ("chair_s", "chair_i", "attr_chair_s", "attr_chair_i", "rel_chair_s", "rel_chair_i")} \
        == dict.fromkeys(("chair_s", "chair_i", "attr_chair_s", "attr_chair_i", "rel_chair_s", "rel_chair_i"), 0.0)
    assert (m["recall"], m["mean_words"], m["n"]) == (1.0, 16.0, 1)


def test_canonical_captions_of_sampled_scenes_are_never_hallucinated():
    scenes = list(SceneSampler(CFG).scenes("test", 200))
    m = chair_metrics([caption(s, CFG) for s in scenes], scenes, CFG)
    assert (m["chair_s"], m["chair_i"], m["attr_chair_i"], m["rel_chair_i"], m["recall"]) == (0.0, 0.0, 0.0, 0.0, 1.0)
    assert m["relations_checked"] > 100  # the relation check really ran


def test_noisy_captions_are_scored_as_their_recorded_noise():
    cfg = WorldConfig(caption_insert_prob=0.5, caption_drop_prob=0.5)
    sampler = SceneSampler(cfg)
    for scene in sampler.scenes("train", 50):
        noisy = noisy_caption(scene, cfg, sampler=sampler)
        s = score_caption(noisy.text, scene, cfg)
        assert s.hallucinated == noisy.inserted
        assert s.n_covered == len(scene.objects) - len(noisy.dropped)
        assert s.n_attributes_wrong == 0 and s.n_relations_wrong == 0  # noise never lies about what it keeps


def test_inserted_absent_object():
    text = "a small red circle left of a small green square and a yellow heart left of a large blue star ."
    s = score_caption(text, SCENE, CFG)
    assert s.hallucinated == ("heart",)
    assert (s.n_object_mentions, s.n_hallucinated_mentions) == (4, 1)
    # The heart's "yellow" is not an attribute error: the heart is already an object hallucination.
    assert (s.n_color, s.n_size, s.n_attributes_wrong) == (3, 3, 0)
    assert s.recall == 1.0 and s.n_words == 20
    m = chair_metrics([text], [SCENE], CFG)
    assert (m["chair_s"], m["chair_i"]) == (1.0, 0.25)


def test_wrong_colour_and_wrong_size():
    s = score_caption("a small blue circle left of a small green square .", SCENE, CFG)
    assert (s.n_color, s.n_color_wrong, s.n_size, s.n_size_wrong) == (2, 1, 2, 0)
    assert s.wrong_attributes == (WrongAttribute("circle", "color", "blue", "red"),)
    assert s.hallucinated == () and s.recall == 2 / 3
    assert chair_metrics(["a small blue circle left of a small green square ."], [SCENE], CFG)["attr_chair_i"] == 0.25

    s = score_caption("a large blue circle", SCENE, CFG)
    assert (s.n_attributes, s.n_attributes_wrong) == (2, 2)
    assert [w.attribute for w in s.wrong_attributes] == ["color", "size"]


def test_swapped_relations():
    s = score_caption("a large blue star left of a small red circle .", SCENE, CFG)
    assert s.wrong_relations == (Relation("star", "left of", "circle"),)
    assert (s.n_relations_checked, s.n_relations_wrong) == (1, 1)
    # circle below square is wrong (it is above); square below star is right.
    s = score_caption("a small red circle below a small green square below a large blue star .", SCENE, CFG)
    assert (s.n_relations_checked, s.n_relations_wrong) == (2, 1)
    assert s.wrong_relations == (Relation("circle", "below", "square"),)
    assert chair_metrics(["a small red circle below a small green square below a large blue star ."],
                         [SCENE], CFG)["rel_chair_i"] == 0.5


def test_relation_within_the_margin_is_wrong_and_the_config_margin_is_used():
    text = "a circle above a star ."  # centres 5 px apart vertically
    assert score_caption(text, SCENE, CFG).n_relations_wrong == 1
    assert score_caption(text, SCENE, WorldConfig(relation_margin=4.0)).n_relations_wrong == 0


def test_relation_to_a_hallucinated_object_is_an_object_error_only():
    s = score_caption("a small red circle left of a heart .", SCENE, CFG)
    assert s.hallucinated == ("heart",)
    assert (s.n_relations, s.n_relations_checked, s.n_relations_wrong) == (1, 0, 0)
    assert s.unchecked_relations == (Relation("circle", "left of", "heart"),)
    m = chair_metrics(["a small red circle left of a heart ."], [SCENE], CFG)
    assert (m["chair_s"], m["chair_i"], m["rel_chair_s"], m["rel_chair_i"], m["relations_unchecked"]) == (1.0, 0.5, 0.0, 0.0, 1)


def test_repeated_mentions_count_each_time_as_in_official_chair():
    s = score_caption("a heart and a heart and a circle .", SCENE, CFG)
    assert s.hallucinated == ("heart",) and (s.n_object_mentions, s.n_hallucinated_mentions) == (3, 2)
    assert chair_metrics(["a heart and a heart and a circle ."], [SCENE], CFG)["chair_i"] == 2 / 3


@pytest.mark.parametrize("text, words", [("", 0), ("the quick brown fox !!", 4), ("... ?", 0)])
def test_empty_and_gibberish_captions_score_zero_everywhere(text, words):
    s = score_caption(text, SCENE, CFG)
    assert (s.n_object_mentions, s.n_attributes, s.n_relations, s.n_covered, s.n_words) == (0, 0, 0, 0, words)
    m = chair_metrics([text], [SCENE], CFG)
    rates = ("chair_s", "chair_i", "attr_chair_s", "attr_chair_i", "color_chair_i", "size_chair_i",
             "rel_chair_s", "rel_chair_i", "recall")
    assert all(m[k] == 0.0 for k in rates)


def test_aggregation_over_captions():
    texts = [
        EXACT,  # 3 mentions, 6 attributes, 2 checked relations, covers 3, 16 words
        "a small red circle left of a small green square and a yellow heart left of a large blue star .",  # 4 mentions (1 absent), 6 attr, 1 checked + 1 unchecked, covers 3, 20 words
        "a large blue circle and a small green square .",  # 2 mentions, 4 attr (2 wrong: size, colour), covers 2, 9 words
        "a small red circle below a small green square below a large blue star .",  # 3 mentions, 6 attr, 2 checked (1 wrong), covers 3, 14 words
        "",  # nothing, 0 words
    ]
    m = chair_metrics(texts, [SCENE] * 5, CFG)
    assert m["n"] == 5
    assert (m["object_mentions"], m["hallucinated_mentions"]) == (12, 1)
    assert m["chair_s"] == 1 / 5 and m["chair_i"] == 1 / 12
    assert (m["attribute_mentions"], m["attribute_wrong"]) == (22, 2)
    assert m["attr_chair_s"] == 1 / 5 and m["attr_chair_i"] == 2 / 22
    assert m["color_chair_i"] == 1 / 11 and m["size_chair_i"] == 1 / 11
    assert (m["relations_checked"], m["relations_wrong"], m["relations_unchecked"]) == (5, 1, 1)
    assert m["rel_chair_s"] == 1 / 5 and m["rel_chair_i"] == 1 / 5
    assert m["recall"] == 11 / 15  # pooled over captions, not a mean of per-caption recalls
    assert m["mean_words"] == pytest.approx(59 / 5)


def test_audit_rows_are_json_ready():
    rows = caption_audit(["a large blue star left of a small red circle and a heart ."], [SCENE], CFG)
    row = json.loads(json.dumps(rows[0]))
    assert row["caption"].startswith("a large blue star")
    assert row["hallucinated"] == ["heart"] and row["mentioned"] == ["star", "circle", "heart"]
    assert row["wrong_relations"] == [["star", "left of", "circle"]]
    assert row["wrong_attributes"] == []
    assert (row["chair_s"], row["chair_i"], row["rel_chair_i"], row["recall"]) == (1, 1 / 3, 1.0, 2 / 3)
    assert set(row) >= {f.name for f in CaptionScore.__dataclass_fields__.values()}


def test_count_words():
    assert count_words(EXACT) == 16
    assert count_words("A red star, left of a circle.") == 7


def test_bad_inputs_are_rejected_with_a_reason():
    with pytest.raises(ValueError, match="2 captions but 1 scenes"):
        chair_metrics(["a", "b"], [SCENE], CFG)
    with pytest.raises(TypeError, match="single string"):
        chair_metrics("a star", [SCENE], CFG)
    with pytest.raises(ValueError, match="at least one"):
        chair_metrics([], [], CFG)
    with pytest.raises(TypeError, match="expected plugins.world.Scene"):
        score_caption("a star", SCENE.to_dict(), CFG)  # type: ignore[arg-type]
