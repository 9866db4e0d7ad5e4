"""The world's test set: POPE's protocol, the probes, its pinned content, and self-repair."""
from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from plugins.benchmarks.base import BenchmarkError
from plugins.benchmarks.pope_files import load_pope_splits
from plugins.benchmarks.world_data import N_POPE_IMAGES, TEST_SET_VERSION, load_test_set
from plugins.registry import get_benchmark
from plugins.world import SceneSampler, WorldConfig, scene_seed

# The content of test set v3 for the default world: question files, ground truth and decoded pixels. (v1, the world
# before tiny sizes, fading, overlap and clutter, was 8360ac0f0681529900c5d3c657e6aa93ae57d8d73701ee3ba2f21a7bbba5a201;
# v2, before the prior-colour split, 8c14b17b6579b0bcf0db7c57ed2a15f93cfd696309325c405cfd1c36ec2166c3.)
# If a change to plugins/world alters it, the change must come with a new TEST_SET_VERSION (and this pin).
PINNED_V3 = "80d880432bb35e1a3f2d5cea5d7c46e8efd43abdd778c831d5da45c3dd08b26c"


@pytest.fixture(scope="module")
def ts(tmp_path_factory):
    return load_test_set(WorldConfig(), tmp_path_factory.mktemp("data"))


def content_sha256(root: Path) -> str:
    from PIL import Image

    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "MANIFEST.json"):
        data = np.asarray(Image.open(path).convert("RGB")).tobytes() if path.suffix == ".png" else path.read_bytes()
        digest.update(f"{path.relative_to(root)}\t".encode() + hashlib.sha256(data).digest())
    return digest.hexdigest()


def test_the_default_test_set_is_pinned(ts):
    assert TEST_SET_VERSION == "v3"
    assert content_sha256(ts.root) == PINNED_V3


def test_pope_protocol_500_images_3_present_3_absent_each(ts):
    splits = load_pope_splits(ts.root / "pope", ts.root / "images")
    scenes = ts.scenes()
    for name, split in splits.items():
        per_image = defaultdict(Counter)
        for q in split.questions:
            per_image[q.image][q.label] += 1
            category = q.text.split()[3]  # "is there a <category> in the image ?"
            assert (category in scenes[q.image].categories) == (q.label == "yes"), (name, q)
        assert len(per_image) == N_POPE_IMAGES
        assert all(c == Counter(yes=3, no=3) for c in per_image.values())
        assert all(len(scenes[image].objects) >= 3 for image in per_image)
    assert len(splits["random"].questions) == 3000


def test_adversarial_negatives_co_occur_more_than_random_ones(ts):
    """The point of the adversarial split: its absent objects are the present ones' usual partners."""
    world = WorldConfig()
    partners = {c: set(g.categories) - {c} for g in world.cooccurrence for c in g.categories}
    splits = load_pope_splits(ts.root / "pope", ts.root / "images", ("random", "adversarial"))
    scenes = ts.scenes()

    def partner_share(split) -> float:
        negs = [(q.image, q.text.split()[3]) for q in split.questions if q.label == "no"]
        return np.mean([any(n in partners.get(c, ()) for c in scenes[img].categories) for img, n in negs])

    assert partner_share(splits["adversarial"]) > partner_share(splits["random"]) + 0.2


def test_the_prior_split_asks_the_usual_colour_of_shapes_drawn_in_another(ts):
    """Knowledge conflict: each object is asked its true colour (yes) and its shape's usual colour (no)."""
    from plugins.benchmarks.world import prior_consistent
    from plugins.benchmarks.world_data import N_PRIOR_OBJECTS
    from plugins.world import usual_color

    world, scenes = WorldConfig(), ts.scenes()
    questions = load_pope_splits(ts.root / "attribute", ts.root / "images", ("prior",))["prior"].questions
    assert len(questions) == 2 * N_PRIOR_OBJECTS and Counter(q.label for q in questions) == Counter(yes=250, no=250)
    for q in questions:
        _, _, category, colour, _ = q.text.split()
        obj = scenes[q.image].get(category)
        usual = usual_color(category, world)
        assert usual is not None and obj.color != usual
        assert colour == (obj.color if q.label == "yes" else usual), q
        assert prior_consistent(q.text, scenes[q.image], world) is (q.label == "no")


def test_test_scenes_are_not_training_scenes(ts):
    test_seeds = {s.seed for s in ts.scenes().values()}
    train_seeds = {scene_seed("train", i) for i in range(20000)}
    assert not test_seeds & train_seeds
    first = SceneSampler(WorldConfig()).sample_split("test", 0)
    assert ts.scenes()["world_test_000000.png"] == first


def test_probes_are_balanced_and_true(ts):
    scenes, ts_world = ts.scenes(), WorldConfig()
    attr = get_benchmark("world-attribute")(data_dir=ts.root.parent)
    for split in ("random", "adversarial"):  # the prior split has a test of its own
        items = attr.items(split)
        assert len(items) == 2000 and sum(i.label == "yes" for i in items) == 1000  # 500 scenes x (2 colour + 2 size)
        kinds = Counter()
        for item in items:
            _, _, category, word, _ = item.prompt.split()  # "is the <category> <colour or size> ?"
            obj = scenes[item.meta["image"]].get(category)
            kind = "size" if word in ts_world.sizes else "colour"
            kinds[kind, item.label] += 1
            assert ((obj.size if kind == "size" else obj.color) == word) == (item.label == "yes")
        assert set(kinds.values()) == {500}
    rel = get_benchmark("world-relation")(data_dir=ts.root.parent)
    items = rel.items("opposite")
    assert sum(i.label == "yes" for i in items) == len(items) // 2
    captions = get_benchmark("world-caption")(data_dir=ts.root.parent).items("all")
    assert len(captions) == 200 and captions[0].label is None
    count = get_benchmark("world-count")(data_dir=ts.root.parent)
    items = count.items("all")
    words = ("one", "two", "three", "four", "five", "six")
    assert len(items) == 1000 and sum(i.label == "yes" for i in items) == 500
    for item in items:  # "are there <n> objects in the image ?": yes exactly when n is the number of objects
        n = words.index(item.prompt.split()[2]) + 1
        assert (n == len(scenes[item.meta["image"]].objects)) == (item.label == "yes")


def test_errors_that_follow_the_prior_are_counted(ts):
    """An always-"yes" model errs on every "no" question: its prior-following share is the chance share."""
    from plugins.benchmarks.world import prior_consistent

    scenes = ts.scenes()
    for name, split in (("world-pope", "adversarial"), ("world-attribute", "adversarial")):
        bench = get_benchmark(name)(data_dir=ts.root.parent)
        items = bench.items(split)
        metrics, _ = bench.score(split, items, ["yes"] * len(items))
        negatives = [i for i in items if i.label == "no"]
        prior = sum(bool(prior_consistent(i.prompt, scenes[i.meta["image"]], WorldConfig())) for i in negatives)
        assert metrics["negatives"] == metrics["false_yes"] == len(negatives)
        assert metrics["prior_negatives"] == metrics["prior_false_yes"] == prior > 0
        metrics, _ = bench.score(split, items, ["no"] * len(items))
        assert metrics["false_yes"] == metrics["prior_false_yes"] == 0


def test_a_damaged_test_set_is_regenerated(tmp_path):
    first = load_test_set(WorldConfig(), tmp_path)
    question_file = first.root / "pope" / "random.jsonl"
    good = question_file.read_bytes()
    question_file.write_bytes(good.replace(b'"label": "no"', b'"label": "yes"', 1))
    again = load_test_set(WorldConfig(), tmp_path)
    assert question_file.read_bytes() == good and again.content_sha256 == first.content_sha256
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]  # no temporary folder left


def test_the_data_hash_follows_the_files(tmp_path):
    bench = get_benchmark("world-relation")(data_dir=tmp_path)
    h = bench.data_hash("opposite")
    assert h == get_benchmark("world-relation")(data_dir=tmp_path).data_hash("opposite")
    assert h != get_benchmark("world-relation")({"limit": 10}, data_dir=tmp_path).data_hash("opposite")
    with pytest.raises(BenchmarkError, match="unknown split 'random'"):
        bench.data_hash("random")


def test_real_pope_without_data_says_what_it_needs():
    with pytest.raises(BenchmarkError, match="options.questions"):
        get_benchmark("pope")().items("random")


def test_manifest_records_every_file(ts):
    manifest = json.loads((ts.root / "MANIFEST.json").read_text())
    files = {str(p.relative_to(ts.root)) for p in ts.root.rglob("*") if p.is_file() and p.name != "MANIFEST.json"}
    assert set(manifest["files"]) == files and manifest["version"] == TEST_SET_VERSION
