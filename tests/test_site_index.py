"""The runner's index (results/index.json) as the site reads it: stale, failed, missing and unplannable cells."""
from __future__ import annotations

import json

import pytest

from site_gen.load import load_knowledge_base
from site_gen.render import DOCS_DIR, generate_checkout, load_checkout_results
from site_gen.results_index import INDEX_VERSION, STATES, parse_results_index, read_results_index

from .conftest import REPO
from .site_fixtures import copy_checkout, current_index, record_cells, write_index

FP = "a" * 64
CELL = "alignscope-tiny-llava/world-pope/random/baseline/seed0"


def test_a_well_formed_index_is_read_cell_by_cell():
    index = parse_results_index(json.dumps({"version": 1, "fingerprint_version": 2, "matrix": "plugins/reproduce.yaml", "cells": {
        CELL: {"experiment": "default", "state": "current", "fingerprint": FP},
        "m/b/s/vcd/seed0": {"experiment": "x", "state": "stale", "fingerprint": FP},
        "m/b/s/icd/seed0": {"experiment": "x", "state": "failed", "fingerprint": FP, "error": "TypeError: bad\nsecond line"},
        "m/b/s/sid/seed0": {"experiment": "x", "state": "missing", "fingerprint": FP},
        "m/b/s/opera/seed0": {"experiment": "x", "state": "error", "fingerprint": None, "error": "no checkpoint"}}}))
    assert index.found and index.problems == () and index.fingerprint_version == 2 and index.matrix == "plugins/reproduce.yaml"
    assert index.stale == frozenset({"m/b/s/vcd/seed0"})
    assert index.counts() == {"current": 1, "stale": 1, "missing": 1, "failed": 1, "error": 1}
    [failed] = index.in_state("failed")
    assert failed.error == "TypeError: bad" and failed.error_file == "results/m/b/s/icd/seed0.error.json"
    assert index.in_state("error")[0].fingerprint is None


@pytest.mark.parametrize("text, says", [
    ("{not json", "not readable JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"version": 1, "cells": []}', "'cells' must be an object"),
    ('{"cells": {}}', "version None, but this site reads version 1 only"),
    ('{"version": 2, "cells": {}}', "version 2, but this site reads version 1 only"),
])
def test_a_bad_or_unknown_index_marks_nothing_and_says_why(text, says):
    index = parse_results_index(text)
    assert not index.found and index.cells == {} and index.stale == frozenset()
    assert len(index.problems) == 1 and says in index.problems[0] and "no result is marked stale" in index.problems[0]


def test_a_bad_cell_is_left_out_and_the_others_kept():
    index = parse_results_index(json.dumps({"version": INDEX_VERSION, "cells": {
        CELL: {"experiment": "default", "state": "stale", "fingerprint": FP},
        "bad/state": {"experiment": "default", "state": "done", "fingerprint": FP},
        "bad/entry": "current",
        "bad/fingerprint": {"experiment": "default", "state": "current", "fingerprint": 3}}}))
    assert list(index.cells) == [CELL] and index.stale == frozenset({CELL})
    assert len(index.problems) == 3 and all("the cell is left out" in p for p in index.problems)
    assert any("'done' is not one of " + ", ".join(STATES) in p for p in index.problems)


def test_a_missing_index_warns_only_when_there_are_records(tmp_path):
    assert read_results_index(tmp_path, has_records=False).problems == ()
    assert "index.json is missing" in read_results_index(tmp_path, has_records=True).problems[0]


class _Rec:
    def __init__(self, cell, fingerprint):
        self.cell, self.fingerprint = cell, fingerprint


def test_a_record_whose_fingerprint_is_not_the_indexed_one_is_stale():
    index = parse_results_index(json.dumps({"version": 1, "cells": {
        CELL: {"experiment": "default", "state": "current", "fingerprint": FP},
        "m/b/s/vcd/seed0": {"experiment": "x", "state": "error", "fingerprint": None, "error": "why"}}}))
    stale = index.stale_cells([_Rec(CELL, "b" * 64), _Rec("m/b/s/vcd/seed0", "c" * 64), _Rec("other/seed0", FP)])
    assert stale == frozenset({CELL})  # a cell that cannot be planned has no fingerprint to disagree with
    assert index.not_in_matrix([_Rec(CELL, FP), _Rec("other/seed0", FP)]) == ["other/seed0"]


# ---------------------------------------------------------------- on the site

@pytest.fixture
def checkout(tmp_path):
    """The repository's records and two result records, with an index the test fills in."""
    copy_checkout(tmp_path, results=False)
    src = REPO / "results"
    for cell in (CELL, "alignscope-tiny-llava/world-pope/random/vcd/seed0"):
        for name in (f"{cell}.json", f"{cell.rsplit('/', 1)[0]}/seed0.predictions.jsonl.gz"):
            out = tmp_path / "results" / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes((src / name).read_bytes())
    return tmp_path


HOSTILE_ERROR = "ValueError: <script>alert(1)</script> [x](javascript:alert(2)) {: onclick=alert(3)}"


def _generate(root):
    kb, issues = load_knowledge_base(root)
    assert issues == []
    n, problems = generate_checkout(root, kb)
    return problems, (root / DOCS_DIR / "reproduction.md").read_text(encoding="utf-8")


def test_the_reproduction_page_marks_stale_and_lists_what_did_not_run(checkout):
    results = checkout / "results"
    cells = current_index(results)
    vcd = "alignscope-tiny-llava/world-pope/random/vcd/seed0"
    cells[vcd]["state"] = "stale"
    cells[vcd]["fingerprint"] = "f" * 64
    cells["alignscope-tiny-llava/world-pope/random/icd/seed0"] = {"experiment": "parameter-frozen", "state": "failed",
                                                                 "fingerprint": FP, "error": HOSTILE_ERROR}
    cells["alignscope-tiny-llava/world-pope/random/sid/seed0"] = {"experiment": "parameter-frozen", "state": "missing", "fingerprint": FP}
    cells["llava-1.5-7b/pope/random/baseline/seed0"] = {"experiment": "llava-7b-pope", "state": "error", "fingerprint": None,
                                                       "error": "model 'llava-1.5-7b': no checkpoint in the local Hugging Face cache"}
    del cells[CELL]  # a record the matrix no longer lists
    write_index(results, cells)
    error_file = results / "alignscope-tiny-llava/world-pope/random/icd/seed0.error.json"
    error_file.parent.mkdir(parents=True)
    error_file.write_text(json.dumps(
        {"cell": "x", "fingerprint": FP, "error": HOSTILE_ERROR, "traceback": "...", "date": "2026-12-04"}), encoding="utf-8")
    problems, page = _generate(checkout)
    assert problems == []  # neither the index nor the error file is a broken record
    assert page.count('class="as-stale"') >= 1 and "(stale)" in page
    row = page[page.index('<tr class="as-stale"'):]
    assert "/vcd/" in row[:row.index("</tr>")]
    assert "0 current, 1 stale, 1 missing, 1 failed, 1 error (4 cells)" in page
    failed = page[page.index('id="failed-cells"'):]
    assert "<code>alignscope-tiny-llava/world-pope/random/icd/seed0</code>" in failed
    assert "results/alignscope-tiny-llava/world-pope/random/icd/seed0.error.json" in failed
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in failed and "<script>alert" not in page
    assert "no checkpoint in the local Hugging Face cache" in page[page.index('id="unplanned-cells"'):]
    assert "alignscope-tiny-llava/world-pope/random/sid/seed0" in page[page.index('id="missing-cells"'):]
    orphans = page[page.index('id="not-in-the-matrix"'):]
    assert f"<code>{CELL}</code>" in orphans and "(not in the matrix)" in page


def test_without_an_index_the_site_builds_and_says_so(checkout):
    problems, page = _generate(checkout)
    assert len(problems) == 1 and "index.json is missing" in problems[0]
    assert "as-stale" not in page and "There is no readable <code>results/index.json</code>" in page


def test_an_index_of_an_unknown_version_is_refused_clearly(checkout):
    write_index(checkout / "results", current_index(checkout / "results"), version=99)
    problems, page = _generate(checkout)
    assert len(problems) == 1 and "version 99, but this site reads version 1 only" in problems[0]


def test_a_record_changed_after_the_index_was_written_is_stale(checkout):
    results = checkout / "results"
    write_index(results, current_index(results))
    path = results / f"{CELL}.json"
    data = json.loads(path.read_text())
    data["fingerprint"] = "e" * 64  # e.g. pulled from another branch
    path.write_text(json.dumps(data), encoding="utf-8")
    records, index, problems = load_checkout_results(checkout)
    assert problems == [] and index.stale_cells(records) == frozenset({CELL})
    assert set(record_cells(results)) == {r.cell for r in records}
