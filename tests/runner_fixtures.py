"""What the runner's tests share: a small matrix on the tiny random-weight LLaVA, a private
environment (data, cache, results under the test's temporary folder), and a quiet run."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from plugins import runner

FIXTURE = Path(__file__).parent / "fixtures" / "pope"


def write_matrix(path: Path, checkpoint: Path, methods: str = "{baseline: {}}", extra: str = "") -> Path:
    path.write_text(textwrap.dedent(f"""\
        version: 1
        defaults: {{device: cpu, batch_size: 4}}
        experiments:
          - name: real-path
            models: [{{name: tiny-random, path: {checkpoint}}}]
            benchmarks:
              pope:
                splits: [random, adversarial]
                options: {{questions: {FIXTURE}, images: {FIXTURE / 'images'}}}
              world-relation: {{options: {{limit: 6}}}}
              world-caption: {{options: {{limit: 2}}}}
              world-representation: {{options: {{limit: 12}}}}
            methods: {methods}
            seeds: [0]
        {extra}"""), encoding="utf-8")
    return path


@pytest.fixture()
def env(tmp_path, checkpoint, monkeypatch):
    monkeypatch.setenv("ALIGNSCOPE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ALIGNSCOPE_CACHE", str(tmp_path / "cache"))  # plan memo, hash caches, artifacts: private
    return {"matrix": write_matrix(tmp_path / "reproduce.yaml", checkpoint), "results": tmp_path / "results",
            "checkpoint": checkpoint}


def run(env, **kw):
    return runner.run(env["matrix"], results_dir=env["results"], progress=False, echo=lambda s: None, **kw)
