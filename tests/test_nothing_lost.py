"""Nothing lost, nothing wrong: damaged results, killed and concurrent runs, and matrix typos.

Each test replays one way a careless maintainer (or a crash) breaks a run: predictions overwritten,
deleted or cut short; the driver of a ``--jobs 2`` run killed with SIGKILL; two runs, or two
first uses of the world's test set, at once; a typo in one experiment of the matrix.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gzip  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("torch")

from plugins import runner  # noqa: E402
from plugins.files import Busy, exclusive  # noqa: E402
from plugins.registry import list_methods  # noqa: E402

from tests.runner_fixtures import FIXTURE, env, run, write_matrix  # noqa: E402,F401  (env: a fixture)

REPO = Path(runner.__file__).resolve().parents[2]


def _pope_only(env) -> None:
    """The env's matrix cut to its two POPE-fixture cells (seconds to run)."""
    write_matrix(env["matrix"], env["checkpoint"])
    text = env["matrix"].read_text()
    cut = text[text.index("      world-relation:"):text.index("    methods:")]
    env["matrix"].write_text(text.replace(cut, ""))


# ---------------------------------------------------------------- damaged predictions

def test_damaged_predictions_make_their_cells_run_again_and_the_site_says_so(env):
    from site_gen.render import load_checkout_results

    write_matrix(env["matrix"], env["checkpoint"], methods="{baseline: {}, vcd: {}}")
    text = env["matrix"].read_text()
    env["matrix"].write_text(text[:text.index("      world-caption:")] + text[text.index("    methods:"):])
    first = run(env)
    assert not first.failed and len(first.ran) == 6
    for record in first.ran:  # the record names its predictions' hash and row count
        data = (env["results"] / record.cell).with_name(record.predictions).read_bytes()
        assert record.predictions_rows == len(gzip.decompress(data).splitlines()) == record.n_samples
    saved = {r.cell: (env["results"] / r.cell).with_name(r.predictions).read_bytes() for r in first.ran}
    overwritten, deleted = (f"tiny-random/pope/random/{m}/seed0" for m in ("baseline", "vcd"))
    cut = "tiny-random/world-relation/opposite/baseline/seed0"
    pred = {c: (env["results"] / c).with_name("seed0.predictions.jsonl.gz") for c in saved}
    pred[overwritten].write_bytes(os.urandom(200))
    pred[deleted].unlink()
    rows = gzip.decompress(saved[cut]).splitlines(keepends=True)
    pred[cut].write_bytes(gzip.compress(b"".join(rows[:2]), mtime=0))

    plans = {p.cell.name: p for p in runner.dry_run(env["matrix"], results_dir=env["results"], echo=print).plans}
    assert {n for n, p in plans.items() if p.status != "cached"} == {overwritten, deleted, cut}
    assert "changed since the run" in plans[overwritten].reason and "missing" in plans[deleted].reason
    index = json.loads((env["results"] / "index.json").read_text())["cells"]
    assert index[cut]["state"] == "stale" and "changed since the run" in index[cut]["reason"]

    # The site reads the records directly, too: it shows them stale and warns, index or not.
    (env["results"] / "index.json").unlink()
    _, _, problems = load_checkout_results(env["results"].parent)
    damaged = [p for p in problems if p.startswith("result shown stale")]
    assert len(damaged) == 3 and all("make reproduce" in p for p in damaged)

    again = run(env)
    assert sorted(r.cell for r in again.ran) == sorted([overwritten, deleted, cut]) and not again.failed
    assert all(pred[c].read_bytes() == saved[c] for c in saved)  # the same bytes as the first run
    assert {p.status for p in runner.dry_run(env["matrix"], results_dir=env["results"], echo=print).plans} == {"cached"}


def test_a_record_from_before_predictions_hashes_is_re_run(env):
    _pope_only(env)
    first = run(env)
    path = env["results"] / f"{first.ran[0].cell}.json"
    data = json.loads(path.read_text())
    del data["predictions_sha256"]
    path.write_text(json.dumps(data))
    plans = runner.plan_matrix(env["matrix"], env["results"]).plans
    assert [p.reason for p in plans if p.status == "stale"] == ["predictions unverified (the record predates predictions hashes)"]


# ---------------------------------------------------------------- a killed driver

def test_killing_the_driver_ends_its_worker_processes(tmp_path):
    """SIGKILL the process that owns the worker pool (as ``kill -9`` of ``reproduce --jobs 2``): its workers go too."""
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent("""\
        import sys, time
        from plugins.runner.executors import worker_pool

        if __name__ == "__main__":
            pool = worker_pool(2, 1)
            busy = [pool.submit(time.sleep, 600) for _ in range(2)]
            time.sleep(1)
            while len(pool._processes) < 2:
                time.sleep(0.1)
            print(" ".join(map(str, pool._processes)), flush=True)
            time.sleep(600)
        """))
    driver = subprocess.Popen([sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        workers = [int(p) for p in driver.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "worker processes outlived their driver"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has ended; it only waits for its parent to collect it


# ---------------------------------------------------------------- two runs at once

def test_a_second_run_refuses_or_waits_and_never_touches_a_live_runs_files(env):
    _pope_only(env)
    results = env["results"]
    results.mkdir(parents=True)
    live = results / ".seed0.json.live.tmp"  # what a running cell is writing
    live.write_text("half a record")
    with exclusive(results / runner.LOCK_NAME, "test"):
        with pytest.raises(runner.RunnerError, match=r"in use by pid \d+ .*not started"):
            run(env, wait=False)
        said: list[str] = []
        second = threading.Thread(target=lambda: said.append(
            runner.run(env["matrix"], results_dir=results, progress=False, echo=said.append)))
        second.start()
        time.sleep(1.5)
        assert second.is_alive() and live.exists()  # waiting, and the live run's file is untouched
        assert any("waiting for it to finish" in s for s in said[:1])
        assert not list(results.rglob("seed0.json"))
    second.join(timeout=300)
    assert not second.is_alive()
    summary = said[-1]
    assert len(summary.ran) == 2 and not live.exists()  # a leftover once no run holds the folder


def test_a_dry_run_during_a_run_leaves_the_index_to_it(env):
    _pope_only(env)
    env["results"].mkdir(parents=True)
    said: list[str] = []
    with exclusive(env["results"] / runner.LOCK_NAME, "test"):
        plans = runner.dry_run(env["matrix"], results_dir=env["results"], echo=said.append).plans
    assert len(plans) == 2 and not (env["results"] / "index.json").exists()
    assert "the index is left to it" in said[0]


def test_the_lock_says_who_holds_it(tmp_path):
    with exclusive(tmp_path / "x.lock", "the folder"):
        with pytest.raises(Busy, match=rf"the folder is in use by pid {os.getpid()} on .* since \d{{4}}-"):
            with exclusive(tmp_path / "x.lock", "the folder", wait=False):
                pass
    with exclusive(tmp_path / "x.lock", "the folder", wait=False):  # released
        pass


def test_the_worlds_test_set_is_generated_once_when_two_processes_need_it(tmp_path):
    """Two processes start on a fresh data folder at once: one generates, the other waits and reads the same set."""
    code = ("import sys; from plugins.benchmarks.world_data import load_test_set, _intact; "
            "from plugins.world import WorldConfig; ts = load_test_set(WorldConfig(), sys.argv[1]); "
            "assert _intact(ts.root); print(ts.content_sha256)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
             for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    assert len({out for out, _ in outs}) == 1
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == [
        next(p.name for p in tmp_path.iterdir() if p.is_dir())]  # one set, no temporary folder left


def test_a_process_that_needs_the_test_set_waits_for_the_one_generating_it(tmp_path, capfd):
    from plugins.benchmarks.world_data import TEST_SET_VERSION, load_test_set
    from plugins.world import WorldConfig

    world = WorldConfig()
    root = tmp_path / f"world-{TEST_SET_VERSION}-{world.fingerprint()[:12]}"
    done: list = []
    with exclusive(tmp_path / f".{root.name}.lock", "test"):
        waiting = threading.Thread(target=lambda: done.append(load_test_set(world, tmp_path)))
        waiting.start()
        time.sleep(1.0)
        assert waiting.is_alive() and not root.exists()
    waiting.join(timeout=120)
    assert done and done[0].root == root
    assert "waiting for it to finish" in capfd.readouterr().err


# ---------------------------------------------------------------- typos in the matrix

def test_matrix_typos_are_located_and_the_valid_experiments_run(env, tmp_path):
    _pope_only(env)
    good = env["matrix"].read_text()
    env["matrix"].write_text(good + textwrap.indent(textwrap.dedent(f"""\
        - name: typo-in-a-method
          models: [{{name: tiny-random, path: {env['checkpoint']}}}]
          benchmarks: {{world-relation: {{options: {{limit: 6}}}}}}
          methods: {{vcdd: {{}}, baseline: {{}}}}
        - name: typo-in-a-split
          models: [{{name: tiny-random, path: {env['checkpoint']}}}]
          benchmarks:
            world-pope: [randon]
          methods: {{baseline: {{}}}}
        - name: bad-seeds
          models: [tiny-random]
          benchmarks: {{world-pope: [random]}}
          methods: {{baseline: {{}}}}
          seeds: [-1]
        """), "  "))
    lines = env["matrix"].read_text().splitlines()

    def line_of(text: str) -> int:
        return next(i for i, line in enumerate(lines, 1) if text in line)

    summary = run(env)
    path = str(env["matrix"])
    assert sorted(r.cell for r in summary.ran) == [
        "tiny-random/pope/adversarial/baseline/seed0", "tiny-random/pope/random/baseline/seed0",
        "tiny-random/world-relation/opposite/baseline/seed0"]  # the valid experiment and the valid method
    assert summary.problems == [
        f"{path}:{line_of('seeds: [-1]')}: experiments.3.seeds: seeds are [-1], expected a non-empty list of "
        "non-negative integers",
        f"{path}:{line_of('vcdd')}: experiment 'typo-in-a-method': method 'vcdd': unknown method 'vcdd'; "
        "did you mean 'vcd'? allowed: " + ", ".join(sorted(list_methods())),
        f"{path}:{line_of('[randon]')}: experiment 'typo-in-a-split': benchmark 'world-pope': unknown split "
        "'randon'; did you mean 'random'? allowed: adversarial, popular, random",
    ]
    from typer.testing import CliRunner

    from alignscope.cli import app

    cli = CliRunner().invoke(app, ["reproduce", "--matrix", path, "--results", str(env["results"]), "--no-progress"])
    assert cli.exit_code == 1
    assert f"not run: {path}:{line_of('vcdd')}: " in cli.output
    assert "0 cells run, 3 unchanged, 0 failed, 3 problems in the matrix" in cli.output
    dry = CliRunner().invoke(app, ["reproduce", "--matrix", path, "--results", str(env["results"]), "--dry-run"])
    assert dry.exit_code == 1 and f"not run: {path}:{line_of('[randon]')}: " in dry.output
