"""The runner end to end on CPU: a tiny random-weight LLaVA saved to a temp folder, the POPE fixture
and a slice of the world's test set — the same code path a GPU user runs on llava-1.5-7b-hf.

Covered: cells and fingerprints, caching (an unchanged second run runs nothing), a method-code edit
re-runs only that method's cells, a crash mid-run keeps finished cells and leaves no partial file,
clear errors for bad matrices, records and per-sample predictions that agree.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gzip  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("torch")

from plugins import runner  # noqa: E402
from plugins.api import load_results  # noqa: E402
from plugins.benchmarks.pope import pope_metrics  # noqa: E402

from tests.runner_fixtures import FIXTURE, env, run, write_matrix  # noqa: E402,F401  (env: a fixture)


def test_cells_run_write_records_and_predictions_that_agree(env):
    summary = run(env)
    assert not summary.failed
    names = sorted(r.cell for r in summary.ran)
    assert names == ["tiny-random/pope/adversarial/baseline/seed0", "tiny-random/pope/random/baseline/seed0",
                     "tiny-random/world-caption/all/baseline/seed0", "tiny-random/world-relation/opposite/baseline/seed0",
                     "tiny-random/world-representation/captions/baseline/seed0"]
    records, problems = load_results(env["results"])
    assert not problems and len(records) == 5
    rep = next(r for r in records if r.benchmark == "world-representation")
    assert rep.n_samples == 12 and -1 <= rep.metrics["cosine_margin_last"] <= 2 and 0 <= rep.metrics["linear_cka_last"] <= 1
    caption = next(r for r in records if r.benchmark == "world-caption")
    assert caption.n_samples == 2 and {"chair_s", "chair_i", "recall"} <= set(caption.metrics)
    assert caption.provenance.parser == "chair-world-v1"
    for record in records:
        if record.benchmark in ("world-caption", "world-representation"):
            continue
        path = env["results"] / f"{record.cell}.json"
        rows = [json.loads(line) for line in gzip.decompress(path.with_name(record.predictions).read_bytes()).splitlines()]
        assert len(rows) == record.n_samples
        # Every number can be audited: recomputing the metrics from the stored answers gives the record's.
        again = pope_metrics([r["answer"] for r in rows], [r["label"] for r in rows])
        assert again["accuracy"] == pytest.approx(record.metrics["accuracy"])
        assert record.provenance.parser == "pope-official-v1"
        assert record.provenance.decoding["strategy"] == "greedy"
        assert record.seconds_per_input > 0
    pope = next(r for r in records if r.benchmark == "pope")
    assert pope.n_samples == 18 and pope.follows == "pope" and pope.protocol == "common"
    assert next(r for r in records if r.benchmark == "world-relation").n_samples == 6


def test_second_run_skips_everything_and_changes_nothing(env):
    run(env)
    before = {p: p.read_bytes() for p in env["results"].rglob("*") if p.is_file()}
    summary = run(env)
    assert summary.ran == [] and len(summary.cached) == 5
    assert {p: p.read_bytes() for p in env["results"].rglob("*") if p.is_file()} == before
    index = json.loads((env["results"] / "index.json").read_text())
    assert index["version"] == 1 and index["fingerprint_version"] == runner.FINGERPRINT_VERSION
    assert sorted(index["cells"]) == sorted(r.cell for r in load_results(env["results"])[0])
    assert {c["state"] for c in index["cells"].values()} == {"current"}


def test_an_unchanged_plan_needs_neither_torch_nor_the_methods(env):
    """The memoised plan: a second dry run answers from file status alone (no torch, no method module)."""
    import subprocess
    import sys

    run(env)
    code = ("import sys, json; from plugins import runner; "
            f"plans = runner.dry_run({str(env['matrix'])!r}, results_dir={str(env['results'])!r}).plans; "
            "print(json.dumps([sorted({p.status for p in plans}), 'torch' in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith('plugins.methods.'))]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ}, cwd=Path(runner.__file__).parents[2])
    assert json.loads(out.stdout.splitlines()[-1]) == [["cached"], False, []]


def test_a_cell_that_raises_anything_fails_alone_with_its_traceback_saved(env, monkeypatch):
    from plugins.runner import executors

    real = executors.compute_cell

    def broken(p, *args, **kwargs):
        if p.cell.benchmark == "world-relation":
            raise TypeError("__init__() got an unexpected keyword argument 'processor_config'")
        return real(p, *args, **kwargs)

    monkeypatch.setattr(executors, "compute_cell", broken)
    summary = run(env)
    assert summary.failed == [("tiny-random/world-relation/opposite/baseline/seed0",
                               "TypeError: __init__() got an unexpected keyword argument 'processor_config'")]
    assert len(summary.ran) == 4
    saved = json.loads(runner.error_path(env["results"], summary.failed[0][0]).read_text())
    assert saved["error"].startswith("TypeError") and "Traceback" in saved["traceback"] and "broken" in saved["traceback"]
    index = json.loads((env["results"] / "index.json").read_text())["cells"]
    assert index[summary.failed[0][0]]["state"] == "failed" and "TypeError" in index[summary.failed[0][0]]["error"]
    plans = runner.plan_matrix(env["matrix"], env["results"]).plans
    assert [p.cell.name for p in plans if p.status == "failed"] == [summary.failed[0][0]]
    monkeypatch.setattr(executors, "compute_cell", real)
    again = run(env)  # fixed: the failed cell runs, its error file goes
    assert [r.cell for r in again.ran] == [summary.failed[0][0]] and not again.failed
    assert not runner.error_path(env["results"], summary.failed[0][0]).exists()


def test_the_cli_exits_non_zero_when_a_cell_fails(env, monkeypatch):
    from typer.testing import CliRunner

    from alignscope.cli import app
    from plugins.runner import executors

    def broken(p, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(executors, "compute_cell", broken)
    result = CliRunner().invoke(app, ["reproduce", "--matrix", str(env["matrix"]), "--results", str(env["results"]),
                                      "--only", "*/pope/random/*", "--no-progress"])
    assert result.exit_code == 1
    assert "failed: tiny-random/pope/random/baseline/seed0: RuntimeError: boom (traceback:" in result.output


def copy_of_the_code(tmp_path, monkeypatch):
    """A copy of plugins/ that the fingerprints read from (edits there change identities, not the running code)."""
    from plugins import identity

    root = tmp_path / "code"
    shutil.copytree(identity.REPO_ROOT / "plugins", root / "plugins",
                    ignore=shutil.ignore_patterns("__pycache__", "checkpoints"))
    monkeypatch.setattr(identity, "REPO_ROOT", root)
    return root


def edit(root: Path, module: str, old: str, new: str) -> None:
    path = root.joinpath(*module.split(".")).with_suffix(".py")
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize("use_memo", [True, False])
def test_editing_a_method_reruns_only_its_cells_and_a_docstring_edit_nothing(env, tmp_path, monkeypatch, use_memo):
    write_matrix(env["matrix"], env["checkpoint"], methods="{baseline: {}, copy: {use: baseline}, vcd: {}}")
    run(env)
    root = copy_of_the_code(tmp_path, monkeypatch)

    def statuses():
        plans = runner.plan_matrix(env["matrix"], env["results"], use_memo=use_memo).plans
        return {p.cell.name: (p.status, p.reason) for p in plans}

    assert {s for s, _ in statuses().values()} == {"cached"}
    # Documentation of the method, the adapter and the parser: nothing to run.
    edit(root, "plugins.methods.vcd", '"""', '"""Edited words. ')
    edit(root, "plugins.models.adapter", "    def decode(self", "    # a comment\n    def decode(self")
    edit(root, "plugins.benchmarks.pope", '"""', '"""Edited words. ')
    assert {s for s, _ in statuses().values()} == {"cached"}
    # Code of VCD: its cells only, and the reason names the module.
    edit(root, "plugins.methods.vcd", "        alpha = self.config.alpha\n", "        alpha = self.config.alpha + 0\n")
    now = statuses()
    assert {n for n, (s, _) in now.items() if s == "stale"} == {n for n in now if "/vcd/" in n}
    assert all(r == "code of plugins.methods.vcd" for n, (s, r) in now.items() if s == "stale")


def test_only_runs_the_matching_cells_and_the_index_still_lists_every_cell(env):
    summary = run(env, only="*/pope/random/*")
    assert [r.cell for r in summary.ran] == ["tiny-random/pope/random/baseline/seed0"]
    states = {c: v["state"] for c, v in json.loads((env["results"] / "index.json").read_text())["cells"].items()}
    assert len(states) == 5 and states.pop("tiny-random/pope/random/baseline/seed0") == "current"
    assert set(states.values()) == {"missing"}


def test_a_crash_mid_run_keeps_finished_cells_and_leaves_no_partial_file(env, monkeypatch):
    from plugins.runner import executors

    calls = {"n": 0}
    real = executors.run_cell

    def crash_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C inside the second cell
        return real(*args, **kwargs)

    monkeypatch.setattr(executors, "run_cell", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run(env)
    files = [p for p in env["results"].rglob("*") if p.is_file()]
    assert len([p for p in files if p.name.startswith("seed") and p.name.endswith(".json")]) == 1
    assert not [p for p in files if (p.name.startswith(".") or p.suffix == ".tmp") and p.name != runner.LOCK_NAME]
    monkeypatch.setattr(executors, "run_cell", real)
    # A SIGKILL in the middle of a write leaves a temporary file; the next run removes it.
    leftover = files[0].with_name(f".{files[0].name}.abc123.tmp")
    leftover.write_text("half a record")
    summary = run(env)
    assert not leftover.exists()
    assert len(summary.cached) == 1 and len(summary.ran) == 4


def test_stale_cells_after_a_data_change(env, tmp_path):
    questions = tmp_path / "pope-copy"
    shutil.copytree(FIXTURE, questions)
    text = env["matrix"].read_text().replace(f"questions: {FIXTURE}", f"questions: {questions}")
    env["matrix"].write_text(text)
    run(env)
    assert runner.stale_cells(env["results"], env["matrix"]) == frozenset()
    path = questions / "coco_pope_random.json"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")  # drop one question
    assert runner.stale_cells(env["results"], env["matrix"]) == {"tiny-random/pope/random/baseline/seed0"}
    plans = runner.plan_matrix(env["matrix"], env["results"]).plans
    assert {p.reason for p in plans if p.status == "stale"} == {"data"}


@pytest.mark.parametrize("matrix, message", [
    ("experiments: []", "experiments: List should have at least 1 item"),
    ("experiments:\n  - name: x\n    models: [m]\n    benchmarks: {world-pope: null}\n    methods: {baseline: {}}\n    sedes: [0]",
     ":6: experiments.0: unknown key 'sedes'; did you mean 'seeds'?"),
    ("experiments:\n  - name: x\n    models: [m]\n    benchmarks: {world-pop: null}\n    methods: {baseline: {}}",
     "unknown benchmark 'world-pop'; did you mean 'world-pope'?"),
    ("experiments:\n  - name: x\n    models: [m]\n    benchmarks: {world-pope: [randon]}\n    methods: {baseline: {}}",
     "unknown split 'randon'; did you mean 'random'?"),
    ("experiments:\n  - name: x\n    models: [m]\n    benchmarks: {world-pope: null}\n    methods: {baselin: {}}",
     "unknown method 'baselin'; did you mean 'baseline'?"),
    ("experiments:\n  - name: x\n    models: [m]\n    benchmarks: {world-pope: null}\n    methods: {baseline: {}}\n"
     "  - name: y\n    models: [m]\n    benchmarks: {world-pope: [random]}\n    methods: {baseline: {use: vcd}}",
     "cell m/world-pope/random/baseline/seed0 appears in experiments 'x' and 'y' with different settings"),
    ("experiments: [\n", "YAML syntax error"),
])
def test_bad_matrices_fail_with_located_messages(tmp_path, matrix, message):
    path = tmp_path / "reproduce.yaml"
    path.write_text(matrix)
    with pytest.raises(runner.RunnerError) as err:
        runner.expand(runner.load_matrix(path))
    assert message in str(err.value)
    assert str(path) in str(err.value) or "unknown" in message or "appears" in message


def test_a_cell_shared_by_two_experiments_runs_once_and_training_seeds_follow_the_cell(tmp_path):
    path = tmp_path / "reproduce.yaml"
    path.write_text("experiments:\n"
                    "  - name: x\n    models: [m]\n    benchmarks: {world-pope: [random]}\n"
                    "    methods: {control: {use: lrv}, fixed: {use: lrv, seed: 5}}\n    seeds: [0, 1]\n"
                    "  - name: y\n    models: [m]\n    benchmarks: {world-pope: [random, popular]}\n"
                    "    methods: {control: {use: lrv}}\n    seeds: [0, 1]\n")
    cells = runner.expand(runner.load_matrix(path))
    names = [c.name for c in cells]
    assert len(names) == len(set(names)) == 6  # x: 2 labels x 2 seeds; y adds popular only
    seeds = {c.name: dict(c.config).get("seed") for c in cells}
    assert seeds["m/world-pope/random/control/seed1"] == "1"  # frozen JSON of the cell's seed
    assert seeds["m/world-pope/random/fixed/seed1"] == "5"  # a seed the matrix sets is kept


def test_a_missing_checkpoint_fails_its_cells_only_and_says_where_it_looked(env, tmp_path):
    text = env["matrix"].read_text() + textwrap.indent(textwrap.dedent(f"""\
        - name: absent-model
          models: [{{name: absent, path: {tmp_path / 'no-such-checkpoint'}}}]
          benchmarks: {{world-relation: {{options: {{limit: 6}}}}}}
          methods: {{baseline: {{}}}}
        """), "  ")
    env["matrix"].write_text(text)
    summary = run(env)
    assert [name for name, _ in summary.failed] == ["absent/world-relation/opposite/baseline/seed0"]
    assert "no-such-checkpoint" in summary.failed[0][1] and "Looked in" in summary.failed[0][1]
    assert len(summary.ran) == 5  # the other model's cells still ran


def test_the_default_matrix_is_valid():
    cells = runner.expand(runner.load_matrix())
    assert "alignscope-tiny-llava/world-pope/adversarial/baseline/seed0" in {c.name for c in cells}


def test_ray_executor_runs_each_cell_as_a_task_on_a_local_instance(env):
    ray = pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")  # CI installs the extra
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        summary = run(env, executor="ray", only="*/pope/*")
    finally:
        ray.shutdown()
    assert not summary.failed
    assert sorted(r.cell for r in summary.ran) == ["tiny-random/pope/adversarial/baseline/seed0",
                                                  "tiny-random/pope/random/baseline/seed0"]
    # The same numbers as the local executor: the cache sees the Ray-written records as up to date.
    again = run(env, only="*/pope/*")
    assert again.ran == [] and len(again.cached) == 2


def test_worker_processes_write_the_same_records_as_one_process(env, tmp_path):
    summary = run(env, jobs=2, only="*/pope/*")
    assert not summary.failed
    assert sorted(r.cell for r in summary.ran) == ["tiny-random/pope/adversarial/baseline/seed0",
                                                  "tiny-random/pope/random/baseline/seed0"]
    again = run(env, only="*/pope/*")  # the in-process run sees them as current
    assert again.ran == [] and len(again.cached) == 2
    forced = run({**env, "results": tmp_path / "one-process"}, only="*/pope/*")
    assert ({r.cell: r.metrics for r in forced.ran} == {r.cell: r.metrics for r in summary.ran})
    with pytest.raises(runner.RunnerError, match="jobs is 0, expected a positive number"):
        run(env, jobs=0)


def test_a_tuned_method_trains_once_before_its_cells_and_records_its_training_time(env, artifact_cache):
    """With worker processes, one task trains; both cells then load the same cached weights."""
    import json

    from tests.test_tuning_methods import TINY

    write_matrix(env["matrix"], env["checkpoint"], methods="{lrv: " + json.dumps(TINY) + "}")
    summary = run(env, jobs=2, only="*/pope/*")
    assert not summary.failed and len(summary.ran) == 2
    seconds = {r.provenance.train_seconds for r in summary.ran}  # two trainings would differ in wall time
    assert len(seconds) == 1 and next(iter(seconds)) > 0
    assert len(list((artifact_cache / "tuned-lrv").glob("*.pt"))) == 1
    baseline = run({**env, "matrix": write_matrix(env["matrix"].with_name("b.yaml"), env["checkpoint"])},
                   only="*/pope/random/*")
    assert baseline.ran[0].provenance.train_seconds is None


@pytest.mark.filterwarnings("ignore:woodpecker:RuntimeWarning")  # the POPE fixture is not the world
def test_steering_directions_and_the_detector_are_prepared_before_the_clock(env, artifact_cache, monkeypatch):
    """Once-per-model work (VTI's directions, Woodpecker's detector) happens in ``prepare``, before a
    cell's answering is timed, so ``seconds_per_input`` is answering only (and worker processes
    get it as one task instead of each training its own copy)."""
    import functools
    import json

    from plugins.benchmarks.base import Benchmark
    from plugins.methods.vti import VTI
    from plugins.trainers import detector as detector_trainer
    from tests.test_method_vti import SMALL
    from tests.test_method_woodpecker import TINY

    events = []
    directions, train, evaluate = VTI.trainer, detector_trainer.train_detector, Benchmark.evaluate
    monkeypatch.setattr(VTI, "trainer", staticmethod(functools.wraps(directions)(  # same name: same artifact key
        lambda *a, **k: events.append("directions") or directions(*a, **k))))
    monkeypatch.setattr(detector_trainer, "train_detector", lambda *a, **k: events.append("detector") or train(*a, **k))
    monkeypatch.setattr(Benchmark, "evaluate", lambda self, *a, **k: events.append("answer") or evaluate(self, *a, **k))
    write_matrix(env["matrix"], env["checkpoint"], methods="{vti: " + json.dumps(SMALL) + "}")
    assert not run(env, only="*/pope/*").failed
    assert events == ["directions", "answer", "answer"]  # computed once, before the first cell answers
    events.clear()
    write_matrix(env["matrix"], env["checkpoint"], methods="{woodpecker: " + json.dumps(TINY) + "}")
    assert not run(env, only="*/pope/random/*").failed
    assert events == ["detector", "answer"]
    from plugins.runner.executors import _preparation_key

    ctx = runner.Context(None, "auto")
    for methods in ("{vti: {}}", "{woodpecker: {}}", "{baseline: {}}"):  # worker processes: one preparation task
        cells = runner.expand(runner.load_matrix(write_matrix(env["matrix"], env["checkpoint"], methods=methods)))
        keys = {_preparation_key(p, ctx) for p in runner.plan(cells, env["results"], ctx)}
        assert (keys == {None}) == (methods == "{baseline: {}}")


def test_unknown_executor(env):
    with pytest.raises(runner.RunnerError, match="unknown executor 'dask'; .*allowed: local, ray"):
        run(env, executor="dask")
