"""The synthetic world's test sets (fixed, hashed, versioned, in POPE's file format) and the base of its benchmarks.

One test set (:data:`TEST_SET_VERSION`) is generated from the world's held-out ``test`` scene
stream (training only ever sees the ``train`` stream) and written once to
``<data dir>/world-<version>-<world fingerprint>/``::

    images/world_test_000000.png ...      the rendered scenes (byte-stable PNG)
    scenes.jsonl                          exact ground truth: objects, colours, sizes, boxes
    pope/{random,popular,adversarial}.jsonl      object existence, POPE protocol
    attribute/{random,adversarial}.jsonl         colour and size questions
    attribute/prior.jsonl                        colour questions against the shape's usual colour (since v3)
    relation/opposite.jsonl                      spatial-relation questions
    count/all.jsonl                              counting questions (general QA, since v2)
    caption/all.jsonl                            "describe the image ." prompts
    MANIFEST.json                         version, world fingerprint, SHA-256 of every file

Question files are POPE JSON Lines (``question_id``, ``image``, ``text``, ``label``), so the loader
of the real POPE serves them unchanged (:mod:`plugins.benchmarks.questions`); the benchmarks
themselves are :mod:`plugins.benchmarks.world` (yes/no probes), :mod:`plugins.benchmarks.world_caption`
and :mod:`plugins.benchmarks.world_representation`.

**The POPE protocol, as in Li et al. 2023.** POPE takes 500 images with at least three annotated
objects and asks, per image, about three objects that are present and three that are not; the
absent ones are drawn at random (*random*), from the objects most frequent in the data set
(*popular*), or from those that co-occur most often with the image's objects (*adversarial*).
Here: the first :data:`N_POPE_IMAGES` test scenes with at least three objects, 3 + 3 questions
each, frequencies and co-occurrences counted on :data:`STATS_SCENES` scenes of the ``train``
stream (what a model could have learned them from).

**Attribute and relation probes** (the survey's attribute and relation levels) on the first
:data:`N_PROBE_IMAGES` test scenes: two colour questions per scene, one true and one false, the
false colour either random or the colour the shape usually has (*adversarial*: a
knowledge-conflict probe), then (since v2) two size questions, one true and one false, the false
size random or the size most frequent for the shape. The *prior* split (since v3) asks only the
knowledge-conflict case, which the adversarial split meets rarely (a shape with a colour prior drawn
in another colour): scanning the test scenes from the first, for each of the first
:data:`N_PRIOR_OBJECTS` such objects its true colour (yes) and its usual colour (no)
(:func:`plugins.world.prior_color_questions`). Two relation questions per scene with an unambiguous pair, one true and
its opposite (*opposite*). **Counting** (since v2): two questions per probe scene, the true number
of objects and one more or one fewer — general question answering, about no misalignment level,
to see what a mitigation costs elsewhere. **Captions**: the first :data:`N_CAPTION_IMAGES` probe scenes, scored
with CHAIR-style metrics against ``scenes.jsonl``.

**Fixed and versioned.** The same world config always gives the same bytes; a test pins the
manifest's hash for the default world, so a change to the world's code that would alter the test
set fails loudly and must come with a new :data:`TEST_SET_VERSION`. A folder whose files no longer
match its manifest (a crash mid-write, a hand edit) is detected and regenerated.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from plugins.benchmarks.base import BenchmarkConfig
from plugins.benchmarks.pope_files import POPE_SPLITS, PopeQuestion, write_pope_questions
from plugins.benchmarks.questions import QuestionFileBenchmark
from plugins.files import file_sha256, write_atomic
from plugins.world import (
    CAPTION_PROMPT, Scene, SceneSampler, WorldConfig, WorldStats, attribute_questions, count_questions, encode_png,
    existence_questions, prior_color_questions, relation_questions, render, size_questions,
)

__all__ = ["TEST_SET_VERSION", "WorldTestSet", "build_test_set", "load_test_set", "WorldConfigOption", "WorldBenchmark",
           "ATTRIBUTE_SPLITS", "RELATION_SPLITS", "COUNT_SPLITS", "CAPTION_SPLITS"]

TEST_SET_VERSION = "v3"
N_POPE_IMAGES = 500  # as POPE: 500 images x 6 questions = 3,000 questions per split
MIN_POPE_OBJECTS = 3  # POPE's images have at least three ground-truth objects
N_PROBE_IMAGES = 500  # attribute and relation probes: first 500 test scenes (2 questions each)
N_CAPTION_IMAGES = 200  # captioning: first 200 probe scenes
STATS_SCENES = 2000  # train scenes counted for popular / adversarial negatives
N_PRIOR_OBJECTS = 250  # prior split: objects drawn against their shape's colour prior (2 questions each)
PRIOR_SCAN_SCENES = 20000  # test scenes scanned for them at most (the default world needs 1,831)
ATTRIBUTE_SPLITS = ("random", "adversarial", "prior")
RELATION_SPLITS = ("opposite",)
COUNT_SPLITS = ("all",)
TEST_SET_FOLDERS = ("images", "pope", "attribute", "relation", "count", "caption")
"""The folders every test set of this version has: a set without one (made by older code) is made again."""
CAPTION_SPLITS = ("all",)


def image_name(index: int) -> str:
    return f"world_test_{index:06d}.png"


class WorldTestSet:
    """A generated test set on disk: the folder, its manifest, its scenes."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.manifest: dict[str, Any] = json.loads((self.root / "MANIFEST.json").read_text(encoding="utf-8"))
        self._scenes: Optional[dict[str, Scene]] = None

    @property
    def content_sha256(self) -> str:
        """SHA-256 of the manifest's file table: the identity of the whole test set."""
        return self.manifest["content_sha256"]

    def scenes(self) -> dict[str, Scene]:
        """Image file name -> its scene (exact ground truth)."""
        if self._scenes is None:
            self._scenes = {}
            for line in (self.root / "scenes.jsonl").read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                self._scenes[row["image"]] = Scene.from_dict(row["scene"])
        return self._scenes


def _content_sha256(files: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{name}\t{sha}\n" for name, sha in sorted(files.items())).encode()).hexdigest()


def build_test_set(world: WorldConfig, root: Path) -> Path:
    """Generate the test set of ``world`` into ``root`` (which must not exist yet); returns ``root``."""
    root = Path(root)
    sampler = SceneSampler(world)
    stats = WorldStats.estimate(world, n=STATS_SCENES, split="train")
    (root / "images").mkdir(parents=True)
    scene_rows: list[str] = []
    written: dict[int, Scene] = {}

    def image_of(index: int, scene: Scene) -> str:
        if index not in written:
            (root / "images" / image_name(index)).write_bytes(encode_png(render(scene, world)))
            scene_rows.append(json.dumps({"image": image_name(index), "index": index, "scene": scene.to_dict()},
                                         sort_keys=True))
            written[index] = scene
        return image_name(index)

    def write(rel: str, rows: list[tuple[str, str, str]]) -> None:
        questions = [PopeQuestion(qid, image, text, label) for qid, (image, text, label) in enumerate(rows, start=1)]
        write_pope_questions(root / rel, questions)

    # POPE: the first N_POPE_IMAGES test scenes with >= 3 objects, 3 present + 3 absent each.
    pope_rows: dict[str, list[tuple[str, str, str]]] = {s: [] for s in POPE_SPLITS}
    index = taken = 0
    while taken < N_POPE_IMAGES:
        scene = sampler.sample_split("test", index)
        if len(scene.objects) >= MIN_POPE_OBJECTS:
            image = image_of(index, scene)
            for split in POPE_SPLITS:
                qs = existence_questions(scene, world, strategy=split, n=6, stats=stats, yes_ratio=0.5)
                pope_rows[split] += [(image, q.text, q.answer) for q in qs]
            taken += 1
        index += 1
    for split, rows in pope_rows.items():
        write(f"pope/{split}.jsonl", rows)

    attr_rows: dict[str, list[tuple[str, str, str]]] = {s: [] for s in ATTRIBUTE_SPLITS}
    rel_rows: list[tuple[str, str, str]] = []
    count_rows: list[tuple[str, str, str]] = []
    cap_rows: list[tuple[str, str, str]] = []
    for index in range(N_PROBE_IMAGES):
        scene = sampler.sample_split("test", index)
        image = image_of(index, scene)
        for split in ("random", "adversarial"):
            qs = (attribute_questions(scene, world, strategy=split, n=2, stats=stats, yes_ratio=0.5)
                  + size_questions(scene, world, strategy=split, n=2, stats=stats, yes_ratio=0.5))
            attr_rows[split] += [(image, q.text, q.answer) for q in qs]
        rel_rows += [(image, q.text, q.answer) for q in relation_questions(scene, world, n=2, yes_ratio=0.5)]
        count_rows += [(image, q.text, q.answer) for q in count_questions(scene, world, n=2, yes_ratio=0.5)]
        if index < N_CAPTION_IMAGES:
            cap_rows.append((image, CAPTION_PROMPT, "yes"))  # label unused: captions are scored against scenes.jsonl
    # The prior split: the first N_PRIOR_OBJECTS objects of the test stream drawn against their colour prior.
    # A world whose priors are rare or absent yields fewer (the scan stops after PRIOR_SCAN_SCENES scenes).
    index = 0
    while len(attr_rows["prior"]) < 2 * N_PRIOR_OBJECTS and index < PRIOR_SCAN_SCENES:
        scene = sampler.sample_split("test", index)
        qs = prior_color_questions(scene, world)[:2 * N_PRIOR_OBJECTS - len(attr_rows["prior"])]
        if qs:
            image = image_of(index, scene)
            attr_rows["prior"] += [(image, q.text, q.answer) for q in qs]
        index += 1
    for split, rows in attr_rows.items():
        write(f"attribute/{split}.jsonl", rows)
    write("relation/opposite.jsonl", rel_rows)
    write("count/all.jsonl", count_rows)
    write("caption/all.jsonl", cap_rows)
    (root / "scenes.jsonl").write_text("\n".join(sorted(scene_rows)) + "\n", encoding="utf-8")

    files = {str(p.relative_to(root)): file_sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}
    manifest = {"version": TEST_SET_VERSION, "world_fingerprint": world.fingerprint(), "split": "test",
                "stats": {"split": "train", "n_scenes": STATS_SCENES}, "files": files,
                "content_sha256": _content_sha256(files)}
    write_atomic(root / "MANIFEST.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return root


def _intact(root: Path) -> bool:
    """Does every file of ``root``'s manifest exist with its recorded hash (and nothing is missing)?"""
    try:
        manifest = json.loads((root / "MANIFEST.json").read_text(encoding="utf-8"))
        files = manifest["files"]
        folders = {name.split("/")[0] for name in files}
        return (manifest.get("version") == TEST_SET_VERSION and set(TEST_SET_FOLDERS) <= folders
                and all(file_sha256(root / name) == sha for name, sha in files.items()))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def load_test_set(world: Optional[WorldConfig] = None, data_dir: Optional[Path] = None) -> WorldTestSet:
    """The test set of ``world`` (default world) under ``data_dir``, generated on first use.

    Generation writes to a temporary folder and renames it into place, so a crash never leaves a
    half-written set; a set whose files no longer match its manifest is regenerated. One process
    at a time generates (a lock beside the set): another that needs the set meanwhile waits, then
    finds it made, so two runs started together never replace a set the other is reading.
    """
    import sys

    from plugins.benchmarks.base import default_data_dir
    from plugins.files import exclusive

    world = world or WorldConfig()
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    root = data_dir / f"world-{TEST_SET_VERSION}-{world.fingerprint()[:12]}"
    if root.is_dir() and _intact(root):
        return WorldTestSet(root)
    data_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(data_dir / f".{root.name}.lock", f"the world's test set {root}",
                   on_wait=lambda message: print(message, file=sys.stderr, flush=True)):
        if root.is_dir() and _intact(root):  # made by another process while this one waited
            return WorldTestSet(root)
        tmp = Path(tempfile.mkdtemp(dir=data_dir, prefix=f".{root.name}."))
        try:
            build_test_set(world, tmp / "set")
            if root.exists():
                root.rename(tmp / "damaged")  # out of the way in one step; removed with tmp
            (tmp / "set").rename(root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return WorldTestSet(root)


# ---------------------------------------------------------------- the benchmarks' base

class WorldConfigOption(BenchmarkConfig):
    """Options of the world benchmarks."""

    world: Optional[dict[str, Any]] = None  # WorldConfig fields (default: the default world)


class WorldBenchmark(QuestionFileBenchmark):
    """Base of the world's benchmarks: its questions and images are the test set of ``options.world``."""

    Config = WorldConfigOption
    folder = ""  # sub-folder of the test set holding this benchmark's question files

    @property
    def world(self) -> WorldConfig:
        return WorldConfig(**(self.options.world or {}))

    @property
    def test_set(self) -> WorldTestSet:
        if not hasattr(self, "_test_set"):
            self._test_set = load_test_set(self.world, self.data_dir)
        return self._test_set

    def prepare(self) -> None:
        self.test_set  # noqa: B018  (generates on first use)

    def question_dir(self) -> Path:
        return self.test_set.root / self.folder

    def image_dir(self) -> Path:
        return self.test_set.root / "images"
