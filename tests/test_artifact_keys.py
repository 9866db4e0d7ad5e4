"""Artifacts are keyed by the code that trains them (plugins/trainers/), not by the code that answers with them.

Each test copies the project's sources to a temporary tree, edits one file there, and asks every method that
keeps an artifact (tuned weights, steering directions, Woodpecker's detector) for the key it would store it
under, with :mod:`plugins.identity` reading the copy. Editing answering code leaves every key as it was;
editing a trainer, or code a trainer imports, changes exactly the keys of the artifacts it trains; editing a
docstring or a comment changes nothing.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from plugins import artifacts, identity
from plugins.registry import create_method

TUNED = ("dpo", "rdpo", "hacl", "lrv", "world-tune")
STEERING = ("vti", "ict")
ALL = (*TUNED, *STEERING, "woodpecker")
KINDS = {name: f"tuned-{name}" for name in TUNED} | {"vti": "vti-directions", "ict": "ict-directions",
                                                       "woodpecker": "woodpecker-detector"}


class _Stop(Exception):
    """Raised where the artifact would be looked up on disk: the key is known, nothing needs to train."""


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of the project's Python sources that plugins.identity reads instead of the checkout."""
    root = tmp_path_factory.mktemp("copy")
    for path in (identity.REPO_ROOT / "plugins").rglob("*.py"):
        target = root / path.relative_to(identity.REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    original = identity.module_source
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALIGNSCOPE_CACHE", str(tmp_path_factory.mktemp("cache")))
        patch.setattr(identity, "module_source", lambda name, _root=identity.REPO_ROOT: original(name, root))
        time.sleep(2.1)  # a file is parsed again until it is 2 s old (plugins.files.stat_key): let the copy age once
        yield root


@pytest.fixture
def edit(tree):
    """``edit(module, old, new)``: replace ``old`` (found once) by ``new`` in the copy; undone after the test."""
    saved: dict[Path, str] = {}

    def apply(module: str, old: str, new: str) -> None:
        path = tree / (module.replace(".", "/") + ".py")
        text = path.read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{old!r} not found once in {path}"
        saved.setdefault(path, text)
        path.write_text(text.replace(old, new), encoding="utf-8")

    yield apply
    for path, text in saved.items():
        path.write_text(text, encoding="utf-8")


def artifact_keys(adapter, monkeypatch) -> dict[str, dict]:
    """The full key (config values, checkpoint, dtype, device, trainer and its code) each method's artifact has."""
    keys: dict[str, dict] = {}

    def record(kind, full_key):
        keys[kind] = dict(full_key)
        raise _Stop

    with monkeypatch.context() as patch:
        patch.setattr(artifacts, "artifact_path", record)
        for name in ALL:
            with pytest.raises(_Stop):
                create_method(name).prepare(adapter)
    return {name: keys[KINDS[name]] for name in ALL}


ANSWERING_EDITS = [  # code that runs only while answering
    ("plugins.methods.tuned", "        problems = [f\"{k}: not in the model\"",  # SwappedWeights.__enter__
     "        entered = len(self.state)  # an edit of how tuned weights are swapped in\n"
     "        problems = [f\"{k}: not in the model\""),
    ("plugins.methods.dpo", "    trainer = staticmethod(train_dpo)\n",
     "    trainer = staticmethod(train_dpo)\n    edited = True\n"),
    ("plugins.methods.woodpecker", "    probe = parse_question(question, world)\n",
     "    probe = parse_question(question, world)\n    answer = str(answer)  # an edit of the revision rules\n"),
    ("plugins.methods.vti", "        if self.image_strength == 0 and self.text_strength == 0:\n",
     "        strengths = (self.image_strength, self.text_strength)\n"
     "        if self.image_strength == 0 and self.text_strength == 0:\n"),
    ("plugins.methods.ict", "        x = args[0]  # (B, T, H·hd): every head's output, before o_proj\n",
     "        x = args[0]  # (B, T, H·hd): every head's output, before o_proj\n        x = x\n"),
    ("plugins.methods.steering", "    if isinstance(value, torch.Tensor):\n",
     "    moved = device\n    if isinstance(value, torch.Tensor):\n"),
]


@pytest.mark.parametrize("module, old, new", ANSWERING_EDITS, ids=[e[0] for e in ANSWERING_EDITS])
def test_editing_answering_code_keeps_every_artifact_key(edit, adapter, monkeypatch, module, old, new):
    before = artifact_keys(adapter, monkeypatch)
    answering_before = identity.code_hash([module])
    edit(module, old, new)
    assert identity.code_hash([module]) != answering_before  # a real edit: the cells' identity moves
    assert artifact_keys(adapter, monkeypatch) == before


TRAINING_EDITS = [  # (module, old, new, the artifacts whose key must change)
    ("plugins.trainers.tuned", "    wall, cpu = time.perf_counter(), time.process_time()\n    run = train()\n",
     "    wall, cpu = time.perf_counter(), time.process_time()\n    run = train()\n    run = run\n", TUNED),
    ("plugins.tuning.losses", "import torch.nn.functional as F\n",
     "import torch.nn.functional as F\n\nEDITED = 1\n", TUNED),
    ("plugins.models.loop", "    losses: list[float] = []\n", "    losses: list[float] = []\n    edited = 1\n",
     TUNED),
    ("plugins.trainers.vti", "    scenes = demo_scenes(world, num_demos)\n",
     "    scenes = demo_scenes(world, num_demos)\n    edited = 1\n", ("vti",)),
    ("plugins.trainers.ict", "    world = build_world(world)\n",
     "    world = build_world(world)\n    edited = 1\n", ("ict",)),
    ("plugins.trainers.directions", "    sampler = SceneSampler(world)\n",
     "    sampler = SceneSampler(world)\n    edited = 1\n", STEERING),
    ("plugins.trainers.detector", "    report = evaluate_detector(net, world, val_scenes)",
     "    edited = 1\n    report = evaluate_detector(net, world, val_scenes)", ("woodpecker",)),
    ("plugins.models.detector", "            x = (images.float() / 255.0 - 0.5) / 0.25",
     "            x = (images.float() / 255.0 - 0.5) / 0.5", ("woodpecker",)),
    ("plugins.models.adapter", "PLAIN_TEMPLATE_TEXT_ONLY = \"USER: {question} ASSISTANT:\"\n",
     "PLAIN_TEMPLATE_TEXT_ONLY = \"USER: {question} ASSISTANT:\"\nEDITED = 1\n", (*TUNED, *STEERING)),
    ("plugins.world.text", "from __future__ import annotations\n", "from __future__ import annotations\nEDITED = 1\n",
     ALL),
]


@pytest.mark.parametrize("module, old, new, changed", TRAINING_EDITS, ids=[e[0] for e in TRAINING_EDITS])
def test_editing_training_code_changes_the_keys_of_what_it_trains(edit, adapter, monkeypatch, module, old, new,
                                                                  changed):
    before = artifact_keys(adapter, monkeypatch)
    edit(module, old, new)
    after = artifact_keys(adapter, monkeypatch)
    moved = {name for name in ALL if after[name] != before[name]}
    assert moved == set(changed)
    for name in moved:  # only the code part of the key moved
        assert {k: v for k, v in after[name].items() if k != "code"} == {k: v for k, v in before[name].items()
                                                                           if k != "code"}


def test_docstrings_and_comments_change_no_key(edit, adapter, monkeypatch):
    before = artifact_keys(adapter, monkeypatch)
    edit("plugins.trainers.tuned", '"""Training the tuned methods\' weights', '"""Training (reworded) the weights')
    edit("plugins.trainers.detector", "    wall, cpu = time.perf_counter(), time.process_time()\n",
         "    # a comment\n    wall, cpu = time.perf_counter(), time.process_time()  # and another\n")
    edit("plugins.trainers.vti", '    """(L, D): faithful minus hallucinated caption',
         '    """(L, D): the faithful minus the hallucinated caption')
    assert artifact_keys(adapter, monkeypatch) == before


def test_the_key_holds_the_values_that_decide_training(tree, adapter, monkeypatch):
    keys = artifact_keys(adapter, monkeypatch)
    for name in (*TUNED, *STEERING):
        key = keys[name]
        assert key["checkpoint_sha256"] == adapter.checkpoint_hash() and key["device"] == "cpu"
        assert key["dtype"] == str(adapter.dtype) and len(key["code"]) == 64
    assert keys["dpo"]["config"] == create_method("dpo").config.model_dump(mode="json")
    assert "alpha" not in keys["ict"]["config"]  # ICT's α scales the shift at answer time only
    assert keys["woodpecker"]["recipe"] == create_method("woodpecker").detector_recipe()
    assert keys["woodpecker"]["trainer"] == "plugins.trainers.detector:detector_artifact"
    assert {keys[name]["trainer"].split(":")[0] for name in TUNED} == {"plugins.trainers.tuned"}


@pytest.mark.parametrize("module", sorted(p.stem for p in (identity.REPO_ROOT / "plugins" / "trainers").glob("*.py")))
def test_no_trainer_runs_answering_code(module):
    """A trainer's import closure holds no method, runner or registry: it is handed what it needs."""
    name = "plugins.trainers" + ("" if module == "__init__" else f".{module}")
    closure = identity.code_identity([name])
    assert not [m for m in closure if m.split(".")[1:2] in (["methods"], ["runner"], ["registry"])], sorted(closure)
