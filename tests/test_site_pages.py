"""Hand-written pages (site_gen/pages/): in the navigation, numbers rendered from the data, golden, escaped."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from site_gen.guide import GuideData, page_sources, parse_matrix, read_guide_data
from site_gen.load import load_knowledge_base
from site_gen.render import DOCS_DIR, Renderer, build_site, generate_docs, load_checkout_results, mkdocs_config
from site_gen.results_index import parse_results_index

from .conftest import REPO
from .site_fixtures import MODEL, copy_checkout

GOLDEN = Path(__file__).parent / "golden"


def nav_pages(nav) -> list[str]:
    out = []
    for item in nav:
        for value in (item.values() if isinstance(item, dict) else [item]):
            out += nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_every_hand_written_page_is_in_the_navigation():
    pages = page_sources()
    assert {"experiments.md", "methods-as-run.md", "embedded-model.md", "embedded-model-history.md", "real-models.md"} <= set(pages)
    assert set(pages) <= set(nav_pages(mkdocs_config(REPO)["nav"]))


@pytest.fixture(scope="module")
def repo_pages(tmp_path_factory):
    """The hand-written pages of a copy of the repository (records, results, matrix, model card), and their inputs."""
    root = copy_checkout(tmp_path_factory.mktemp("pages"))
    kb, issues = load_knowledge_base(root)
    assert issues == []
    records, index, _ = load_checkout_results(root)
    renderer = Renderer(kb, None, records, frozenset(), index, read_guide_data(root))
    renderer._guide_pages()
    return root, records, renderer.pages


def cells_of(spec: dict) -> list[str]:
    """An experiment's cells, computed here from the YAML as the runner's docstring defines them."""
    benches = spec["benchmarks"]
    protocols = ["" if p == "common" else f"{p}/" for p in spec.get("protocols", ["common"])]
    return [f"{m}/{b}/{s}/{label}/{p}seed{k}" for b, splits in benches.items() for s in (splits if isinstance(splits, list) else splits["splits"])
            for m in spec["models"] for label in spec["methods"] for p in protocols for k in spec.get("seeds", [0])]


def row_of(page: str, first_cell: str, section: str = "") -> list[str]:
    """The cells of the first table row starting with ``first_cell`` after the heading ``section``."""
    line = next(l for l in page[page.index(section):].splitlines() if l.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split("|")]


COST = "## What each experiment cost"


def test_the_experiments_page_renders_the_matrix_and_its_cost_from_the_records(repo_pages):
    root, records, pages = repo_pages
    page = pages["experiments.md"]
    matrix = yaml.safe_load((root / "plugins/reproduce.yaml").read_text())
    by_cell = {r.cell: r for r in records}
    every = set()
    for spec in matrix["experiments"]:
        cells = cells_of(spec)
        every.update(cells)
        mine = [by_cell[c] for c in cells if c in by_cell]
        row = row_of(page, spec["name"], COST)
        assert row[1] == str(len(cells)) and row[2] == str(len(mine)), spec["name"]
        assert row[3] == f"{sum(r.n_samples for r in mine):,}"
        assert row[4] == f"{sum(r.seconds_per_input * r.n_samples for r in mine):,.0f}"
        trainings = {(r.model, json.dumps(r.provenance.method_config, sort_keys=True)): r.provenance.train_seconds
                     for r in mine if r.provenance.train_seconds is not None}
        assert row[5] == str(len(trainings)) and row[6] == f"{sum(trainings.values()):,.0f}"
    total = row_of(page, "whole matrix", COST)
    assert total[1] == str(len(every)) and total[2] == str(len(set(every) & set(by_cell)))
    assert f"The matrix has {len(matrix['experiments'])} experiments" in page
    # benchmarks: inputs per split as the records count them
    pope = row_of(page, "world-pope", "## Benchmarks")
    for split in ("random", "popular", "adversarial"):
        n = max(r.n_samples for r in records if r.benchmark == "world-pope" and r.split == split)
        assert f"{split}: {n:,}" in pope[2]


def test_the_embedded_model_page_renders_the_model_card(repo_pages):
    root, records, pages = repo_pages
    page = pages["embedded-model.md"]
    log = json.loads((root / "plugins/models/checkpoints" / MODEL / "training_log.json").read_text())
    config = json.loads((root / "plugins/models/checkpoints" / MODEL / "config.json").read_text())
    assert f"| total, in the checkpoint | {log['parameters']['total']:,} |" in page
    for stage in log["stages"]:
        row = next(l for l in page.splitlines() if l.startswith("| stage") and f"| {stage['steps']:,} |" in l and f"{stage['loss_first10']:.4f}" in l)
        assert row.rstrip().endswith(f"| {stage['seconds']:.0f} |")
    assert f"In all {log['train_seconds']:.0f} s with {log['environment']['threads']} threads" in page
    pope = log["metrics"]["pope"]["adversarial"]
    assert f"| pope | adversarial | {pope['n']:,} | {100 * pope['accuracy']:.1f} |" in page
    assert f"{100 * log['stages'][0]['context_probe']['random_caption']:.1f} %" in page
    assert f"{config['image_seq_length']} image tokens" in page
    assert ", ".join(log["config"]["world"]["categories"]) in page
    assert "training-losses-alignscope-tiny-llava.svg" in page


def test_the_methods_page_shows_the_hyper_parameters_the_records_ran_with(repo_pages):
    _, records, pages = repo_pages
    page = pages["methods-as-run.md"]
    vcd = next(r for r in records if r.method == "vcd")
    row = row_of(page, "vcd")
    for key, value in vcd.provenance.method_config.items():
        if key != "plugin":
            assert f"{key.replace('_', '&#95;')}={json.dumps(value)}" in row[2], key
    assert row[3] == str(sum(r.method == "vcd" for r in records))
    assert "| neutral |" not in page  # cause arms are not mitigation methods


def test_hand_written_pages_build_without_data(mini_kb):
    pages = {}
    generate_docs(*load_knowledge_base(mini_kb)[:1], mini_kb)
    for page in page_sources():
        pages[page] = (mini_kb / DOCS_DIR / page).read_text()
    assert "No matrix here" in pages["experiments.md"] and "No committed model card here" in pages["embedded-model.md"]


# ---------------------------------------------------------------- golden pages from small, fixed inputs

def _record(method: str, split: str, seed: int, n: int, spi: float, train: float | None = None, config: dict | None = None):
    from plugins.api import ResultRecord

    return ResultRecord.model_validate({
        "method": method, "benchmark": "world-pope", "split": split, "model": "tiny", "seed": seed, "n_samples": n,
        "metrics": {"accuracy": 0.75}, "seconds_per_input": spi, "fingerprint": f"{seed:016x}",
        "provenance": {"git_commit": "abcdef0", "dirty": False, "package_versions": {}, "device": "cpu", "dtype": "float32",
                       "decoding": {"strategy": "greedy"}, "parser": "pope-official-v1", "date": "2026-12-01",
                       "method_config": {"plugin": method, **(config or {})}, "train_seconds": train}})


def fixed_guide(summary: str = "POPE's protocol on a toy world.") -> GuideData:
    matrix = parse_matrix({"experiments": [
        {"name": "default", "models": ["tiny"], "benchmarks": {"world-pope": ["random", "adversarial"]}, "methods": {"baseline": {}}},
        {"name": "tuned", "models": ["tiny"], "benchmarks": {"world-pope": ["random"]}, "methods": {"ha-dpo": {"use": "dpo"}},
         "seeds": [0, 1]}]})
    card = {"path": "plugins/models/checkpoints/tiny",
            "config": {"architectures": ["LlavaForConditionalGeneration"], "image_seq_length": 4,
                       "vision_config": {"model_type": "clip_vision_model", "num_hidden_layers": 1, "hidden_size": 8,
                                         "num_attention_heads": 2, "image_size": 16, "patch_size": 8},
                       "text_config": {"model_type": "llama", "num_hidden_layers": 1, "hidden_size": 8, "num_attention_heads": 2,
                                       "intermediate_size": 16, "vocab_size": 20, "max_position_embeddings": 32}},
            "log": {"parameters": {"vision_tower": 100, "projector": 20, "language_model": 300, "total": 420},
                    "stages": [{"name": "stage 0: LM pre-training (text only)", "steps": 10, "batch_size": 4, "lr": 0.001,
                                "trainable_parameters": 300, "loss_first10": 3.0, "loss_last10": 1.0, "seconds": 2.4,
                                "losses": [3.0, 2.0, 1.0],
                                "context_probe": {"n_scenes": 10, "random_caption": 0.9, "adversarial_caption": 0.8,
                                                  "random_no_context": 0.6, "adversarial_no_context": 0.5}}],
                    "train_seconds": 3.5, "train_data": {"n_scenes": 50, "seconds": 0.4, "split": "train", "sha256": "0" * 64},
                    "environment": {"threads": 1, "torch": "t", "transformers": "tf", "python": "3", "git_commit": "c" * 40,
                                    "code_dirty": False, "code_sha256": "d" * 64},
                    "config": {"stage1_objective": "supervised-regions", "questions": [2, 1, 1],
                               "world": {"categories": ["circle", "star"], "yes_ratio": 0.5,
                                         "cooccurrence": [{"categories": ["circle", "star"], "strength": 0.9}]}},
                    "metrics": {"test_set": "v1", "n_questions": 8, "decoding": "greedy", "parser": "pope-official-v1",
                                "pope": {"random": {"n": 8, "accuracy": 0.875, "precision": 1.0, "recall": 0.75, "f1": 0.857,
                                                    "yes_ratio": 0.375}}},
                    "world_fingerprint": "f" * 64}}
    return GuideData(matrix, "", {"tiny": card}, {},
                     {"methods": [("baseline", "No intervention."), ("dpo", "DPO.")], "benchmarks": [("world-pope", summary)],
                      "models": [("tiny", "A toy model.")]})


FIXED_RECORDS = [_record("baseline", "random", 0, 100, 0.01), _record("baseline", "adversarial", 0, 100, 0.02),
                 _record("ha-dpo", "random", 0, 100, 0.03, 60.0, {"beta": 0.1, "seed": 0}),
                 _record("ha-dpo", "random", 1, 100, 0.03, 62.0, {"beta": 0.1, "seed": 1})]
FIXED_INDEX = parse_results_index(json.dumps({"version": 1, "matrix": "plugins/reproduce.yaml", "cells": {
    **{r.cell: {"experiment": "default", "state": "current", "fingerprint": r.fingerprint} for r in FIXED_RECORDS},
    "tiny/world-pope/popular/baseline/seed0": {"experiment": "default", "state": "missing", "fingerprint": "1" * 64}}}))


@pytest.mark.parametrize("page", ["experiments.md", "embedded-model.md", "methods-as-run.md"])
def test_golden_hand_written_pages(mini_kb, page):
    generate_docs(load_knowledge_base(mini_kb)[0], mini_kb, results=FIXED_RECORDS, index=FIXED_INDEX, guide=fixed_guide())
    text = (mini_kb / DOCS_DIR / page).read_text(encoding="utf-8")
    golden = GOLDEN / f"guide__{page}"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8"), f"{page} differs from {golden}; rerun with UPDATE_GOLDEN=1 if intended"


def test_the_fixed_inputs_give_the_numbers_computed_by_hand(mini_kb):
    generate_docs(load_knowledge_base(mini_kb)[0], mini_kb, results=FIXED_RECORDS, index=FIXED_INDEX, guide=fixed_guide())
    page = (mini_kb / DOCS_DIR / "experiments.md").read_text()
    # default: 2 cells, 200 inputs, 100 × 0.01 + 100 × 0.02 = 3 s; tuned: 2 seeds = 2 trainings, 60 + 62 s
    assert row_of(page, "default", COST)[1:8] == ["2", "2", "200", "3", "0", "0", "cpu float32"]
    assert row_of(page, "tuned", COST)[1:7] == ["2", "2", "200", "6", "2", "122"]
    assert row_of(page, "whole matrix", COST)[1:7] == ["4", "4", "400", "9", "2", "122"]
    assert "| missing | 1 |" in page and "| current | 4 |" in page


HOSTILE = "<script>alert(1)</script> [x](javascript:alert(2)) {: onclick=alert(3) } *em* `code` | cell"


def test_hand_written_pages_make_every_value_inert(mini_kb):
    shutil.copy(REPO / "mkdocs.yml", mini_kb / "mkdocs.yml")
    records = [r.model_copy(update={"provenance": r.provenance.model_copy(update={"method_config": {"plugin": "dpo", "note": HOSTILE}})})
               for r in FIXED_RECORDS]
    generate_docs(load_knowledge_base(mini_kb)[0], mini_kb, results=records, index=FIXED_INDEX, guide=fixed_guide(HOSTILE))
    build_site(mini_kb)
    for page in ("experiments", "methods-as-run"):
        built = (mini_kb / "site" / page / "index.html").read_text()
        body = built[built.index('<article'):built.index('</article>')]
        assert "alert(1)</script>" not in body.replace("&lt;/script&gt;", "") and "<script>alert" not in body, page
        assert 'href="javascript:' not in body and not re.search(r"<[^>]*\sonclick=", body), page
        assert "<em>em</em>" not in body and "<code>code</code>" not in body, page
        assert HOSTILE in html.unescape(body), page  # shown as the text it is
