"""`alignscope site` when little or nothing changed: memoised pages and plots, a skipped mkdocs build, no torch.

A warm build must give the bytes a cold one gives; a change to a record, a result, a template or
mkdocs.yml must rebuild what it affects.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import site_gen.memo as memo
from site_gen.load import load_knowledge_base
from site_gen.render import DOCS_DIR, build_site, generate_checkout

from .conftest import REPO
from .site_fixtures import copy_checkout, current_index, write_index

PROBE = """
import json, sys
from alignscope.cli import app
try:
    app(["site", "--root", sys.argv[1]])
except SystemExit as exc:
    assert not exc.code, exc.code
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers") or m.startswith("plugins.runner"))))
"""


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def site_run(root: Path) -> subprocess.CompletedProcess:
    """The real command in a fresh interpreter; its last output line lists what it imported of torch, transformers and the runner."""
    return subprocess.run([sys.executable, "-c", PROBE, str(root)], capture_output=True, text=True, cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The repository's records and results with a runner index, built once by `alignscope site` (cold)."""
    root = copy_checkout(tmp_path_factory.mktemp("checkout"))
    write_index(root / "results", current_index(root / "results"))
    cold = site_run(root)
    return root, cold


def test_a_full_site_run_imports_neither_torch_nor_the_runner(built):
    _, cold = built
    assert cold.returncode == 0, cold.stderr
    assert json.loads(cold.stdout.strip().splitlines()[-1]) == [], f"imported: {cold.stdout.splitlines()[-1]}"
    assert "warning" not in cold.stderr, cold.stderr  # the index is read; nothing is left out


def test_a_second_run_with_no_change_rewrites_nothing_and_skips_mkdocs(built):
    root, _ = built
    before = {p: p.stat().st_mtime_ns for p in (root / "site").rglob("*") if p.is_file()}
    docs_before = {p: p.stat().st_mtime_ns for p in (root / DOCS_DIR).rglob("*") if p.is_file()}
    warm = site_run(root)
    assert warm.returncode == 0, warm.stderr
    assert "site/ is up to date" in warm.stdout and json.loads(warm.stdout.strip().splitlines()[-1]) == []
    assert {p: p.stat().st_mtime_ns for p in (root / "site").rglob("*") if p.is_file()} == before
    assert {p: p.stat().st_mtime_ns for p in (root / DOCS_DIR).rglob("*") if p.is_file()} == docs_before


# ---------------------------------------------------------------- warm equals cold, and changes propagate

PARTIAL = ("world-pope/adversarial", "world-caption", "world-diagnostics/pope-adversarial")


@pytest.fixture(scope="module")
def small_generated(tmp_path_factory):
    """A checkout with a few result records (enough for reproduction, diagnostics and method plots), generated once."""
    root = copy_checkout(tmp_path_factory.mktemp("small"), results=False)
    for path in sorted((REPO / "results").rglob("seed*.json")):
        rel = path.relative_to(REPO).as_posix()
        if any(f"/{part}/" in rel for part in PARTIAL) and not path.name.endswith(".error.json"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / rel)
            shutil.copy(path.with_name(json.loads(path.read_text())["predictions"]), (root / rel).parent)
    write_index(root / "results", current_index(root / "results"))
    build(root, mkdocs=False)
    return root


@pytest.fixture
def small(small_generated, tmp_path):
    """A copy of :func:`small_generated`, its docs and memo included (so the next generation is warm)."""
    return Path(shutil.copytree(small_generated, tmp_path / "a"))


def build(root: Path, memo_on: bool = True, force: bool = False, mkdocs: bool = True) -> tuple[int, bool]:
    kb, issues = load_knowledge_base(root)
    assert issues == []
    n, problems = generate_checkout(root, kb, memo=memo_on)
    assert problems == [] or problems == ["results/index.json is missing" + problems[0].split("missing", 1)[1]]
    return n, build_site(root, force=force) if mkdocs else False


def cold_copy(root: Path, dest: Path) -> Path:
    """The same inputs in a fresh folder, built with no memo and no stamp."""
    shutil.copytree(root, dest, ignore=shutil.ignore_patterns("build", "site"))
    build(dest, memo_on=False, force=True)
    return dest


class DrawCounter:
    def __init__(self, monkeypatch):
        import site_gen.plots as plots

        self.calls: list[str] = []
        for name in ("pareto_svg", "stacked_bars_svg", "paired_svg", "lines_svg", "loss_curves_svg"):
            real = getattr(plots, name)
            monkeypatch.setattr(plots, name, self._wrap(name, real))

    def _wrap(self, name, real):
        def draw(*args, **kwargs):
            self.calls.append(name)
            return real(*args, **kwargs)
        return draw


def test_warm_builds_after_changes_equal_cold_builds(small, tmp_path, monkeypatch):
    # a result changes: its tables and plots change, the others come from the memo
    rec = small / "results/alignscope-tiny-llava/world-pope/adversarial/vcd/seed0.json"
    data = json.loads(rec.read_text())
    data["metrics"]["accuracy"] = 0.5
    rec.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    # a record changes
    paper = small / "papers/leng2024-vcd.yaml"
    paper.write_text(paper.read_text().replace("Visual Contrastive Decoding", "Visual Contrastive Decoding (edited)", 1))
    counter = DrawCounter(monkeypatch)
    n, rebuilt = build(small)
    assert rebuilt
    assert counter.calls == ["pareto_svg"]  # only the world-pope accuracy-vs-cost plot is drawn again
    monkeypatch.undo()
    cold = cold_copy(small, tmp_path / "b")
    assert tree(small / "site") == tree(cold / "site")
    assert tree(small / DOCS_DIR) == tree(cold / DOCS_DIR)
    assert "(edited)" in (small / DOCS_DIR / "papers/leng2024-vcd.md").read_text()
    assert "50.0" in (small / DOCS_DIR / "reproduction.md").read_text()


def test_an_index_change_marks_results_stale(small):
    cells = current_index(small / "results")
    cell = "alignscope-tiny-llava/world-pope/adversarial/vcd/seed0"
    cells[cell] = {**cells[cell], "state": "stale", "fingerprint": "f" * 64}
    write_index(small / "results", cells)
    build(small, mkdocs=False)
    assert "(stale)" in (small / DOCS_DIR / "reproduction.md").read_text()


def test_mkdocs_runs_again_when_its_config_or_the_built_site_changes(mini_kb):
    shutil.copy(REPO / "mkdocs.yml", mini_kb / "mkdocs.yml")
    assert build(mini_kb)[1] is True
    assert build(mini_kb)[1] is False  # nothing changed
    config = mini_kb / "mkdocs.yml"
    config.write_text(config.read_text().replace("site_name: AlignScope", "site_name: AlignScope (fork)"))
    assert build(mini_kb)[1] is True
    assert "AlignScope (fork)" in (mini_kb / "site/index.html").read_text()
    assert build(mini_kb)[1] is False
    (mini_kb / "site/coverage/index.html").unlink()  # someone deleted a built page
    assert build(mini_kb)[1] is True and (mini_kb / "site/coverage/index.html").is_file()
    paper = mini_kb / "papers/leng2024-vcd.yaml"
    paper.write_text(paper.read_text().replace("CVPR 2024", "CVPR 2024 (oral)"))
    assert build(mini_kb)[1] is True and "CVPR 2024 (oral)" in (mini_kb / "site/papers/leng2024-vcd/index.html").read_text()


def test_a_template_or_page_source_edit_changes_the_salt_and_the_stamp(tmp_path, monkeypatch):
    code = tmp_path / "site_gen"
    shutil.copytree(REPO / "site_gen", code, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(memo, "SITE_GEN", code)
    docs, config = tmp_path / "docs", tmp_path / "mkdocs.yml"
    docs.mkdir()
    config.write_text("site_name: x\n")
    salt, inputs = memo.code_salt(), memo.build_inputs(docs, config)
    for rel in ("templates/method.html.j2", "pages/experiments.md.j2", "templates/assets/alignscope.css"):
        path = code / rel
        original = path.read_text()
        path.write_text(original + "\n")
        assert memo.code_salt() != salt, rel
        if rel.startswith("templates/"):
            assert memo.build_inputs(docs, config) != inputs, rel
        path.write_text(original)
    assert memo.code_salt() == salt


def test_the_memo_forgets_what_the_site_no_longer_uses(small):
    plots = small / memo.MEMO_DIR / "plots"
    n_before = len(list(plots.iterdir()))
    for rec in (small / "results").rglob("seed*.json"):
        if "/world-pope/" in rec.as_posix():
            rec.unlink()
    build(small, mkdocs=False)
    assert len(list((small / memo.MEMO_DIR / "tree").iterdir())) == 1
    assert len(list(plots.iterdir())) < n_before


def test_a_damaged_memo_entry_is_made_again(small):
    for entry in (small / memo.MEMO_DIR / "tree").iterdir():
        entry.write_bytes(b"{truncated")
    docs = tree(small / DOCS_DIR)
    shutil.rmtree(small / DOCS_DIR)
    build(small, mkdocs=False)
    assert tree(small / DOCS_DIR) == docs


def test_the_no_change_run_is_fast(built):
    """About a second on a 2-core machine (bench/bench_site_nochange.py measures it); 5 s leaves room for a busy CI."""
    import time

    root, _ = built
    t0 = time.perf_counter()
    run = site_run(root)
    assert run.returncode == 0 and "site/ is up to date" in run.stdout
    assert time.perf_counter() - t0 < 5.0
