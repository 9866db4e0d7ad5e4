"""The built site in a real browser: Debian's headless Chromium driven by Playwright.

The site is built from a copy of the repository's records and served on localhost. Every
page visit records console errors, uncaught exceptions and any request to another host; each
test fails if there was one. A failing test leaves a screenshot in ``build/test-artifacts/``.

Chromium comes from the system (``apt-get install chromium``, done by ``make test``); Playwright
never downloads a browser. Without Chromium the tests are skipped locally and fail under CI.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading

import pytest

from site_gen.load import load_knowledge_base
from site_gen.render import build_site, generate_checkout
from site_gen.tables import TABLE1_METRICS, TABLE1_SPLITS, survey_table1

from .conftest import REPO
from .site_fixtures import copy_checkout, current_index, record_cells, write_index

ARTIFACTS = REPO / "build" / "test-artifacts"
CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and os.path.exists(p)), None)

if CHROMIUM is None:
    if os.environ.get("CI"):
        pytest.fail("Chromium is missing: `make test` installs it with apt-get (Debian package 'chromium')", pytrace=False)
    pytest.skip("Chromium not installed (make test installs it)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def site_url(tmp_path_factory):
    root = copy_checkout(tmp_path_factory.mktemp("site"))  # records, results, matrix and model card
    write_index(root / "results", current_index(root / "results"))
    kb, issues = load_knowledge_base(root)
    assert issues == []
    _, problems = generate_checkout(root, kb)
    assert problems == []
    build_site(root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root / "site")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def page(browser, site_url, request):
    """A fresh page that records console errors, page errors and requests to other hosts."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("request", lambda r: None if r.url.startswith((site_url, "data:", "blob:")) else problems.append(f"request to another host: {r.url}"))
    pg.set_default_timeout(15_000)
    yield pg
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed or problems:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / f"{request.node.name}.png"
        pg.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
    context.close()
    assert problems == [], "\n".join(problems)


def test_search_finds_a_method_and_opens_its_page(page, site_url):
    page.goto(site_url + "/")
    page.locator("label.md-search__icon, .md-search__input").first.click()
    # Material builds its index in a web worker; a query typed before it is ready is not re-run.
    page.locator(".md-search-result__meta", has_text="Type to start searching").wait_for(timeout=60_000)
    page.locator("input.md-search__input").press_sequentially("VCD", delay=50)
    hit = page.locator('a.md-search-result__link[href*="methods/vcd/"]').first
    hit.wait_for()
    hit.click()
    page.wait_for_url(re.compile(r".*/methods/vcd/(\?h=[^#]*)?(#.*)?$"))  # search adds ?h=<term> for highlighting
    assert page.locator("h1").first.inner_text() == "VCD"
    assert page.get_by_text("Decoding-based").first.is_visible()


def test_table1_shows_the_survey_numbers(page, site_url):
    kb, _ = load_knowledge_base(REPO)
    rows = survey_table1(kb)
    page.goto(site_url + "/tables/")
    table = page.locator("table.as-table1")
    shown = table.locator("tbody tr")
    assert shown.count() == len(rows) == 4  # baseline, SoM-LLaVA, SID, LogicCheckGPT
    for i, row in enumerate(rows):
        tr = shown.nth(i)
        assert tr.locator("td").first.inner_text().strip() == row.label
        for split in TABLE1_SPLITS:
            for metric in TABLE1_METRICS:
                value = row.cells.get((split, metric))
                cell = tr.locator(f'td[data-split="{split}"][data-metric="{metric}"]')
                assert cell.inner_text().strip() == ("" if value is None else f"{value:.1f}"), (row.label, split, metric)
    # Spot-checks against the printed survey, independently of the records.
    logic = shown.filter(has_text="LogicCheckGPT").first
    assert logic.locator('td[data-split="adversarial"][data-metric="accuracy"]').inner_text() == "85.0"
    assert logic.locator('td[data-split="popular"][data-metric="precision"]').inner_text() == "95.1"
    sid = shown.filter(has_text="SID").first
    assert sid.locator('td[data-split="popular"][data-metric="f1"]').inner_text() == ""  # empty in the printed table
    assert shown.first.locator("td").last.inner_text() == "1.27"  # baseline seconds per input
    assert page.locator("img.as-plot").first.evaluate("img => img.complete && img.naturalWidth > 0")


def test_tables_sort_by_a_column(page, site_url):
    page.goto(site_url + "/tables/")
    table = page.locator("table.as-table1")
    cells = table.locator('tbody td[data-split="adversarial"][data-metric="accuracy"]')
    header = table.locator("thead tr").nth(1).locator("th").nth(4)  # adversarial Acc (after 4 random columns)
    header.click()
    values = [float(t) for t in cells.all_inner_texts()]
    assert values == sorted(values)
    header.click()
    values = [float(t) for t in cells.all_inner_texts()]
    assert values == sorted(values, reverse=True)


def test_graph_explorer_filters_and_opens_pages(page, site_url):
    page.goto(site_url + "/graph/")
    nodes = page.locator("svg.as-graph-canvas a.as-node")
    nodes.first.wait_for()
    kb, _ = load_knowledge_base(REPO)
    expected = len(kb.taxonomy) + len(kb.methods) + len(kb.benchmarks) + len(kb.models)  # papers are off by default
    assert nodes.count() == expected
    assert page.locator("svg.as-graph-canvas a.as-node-paper").count() == 0
    page.locator('input[name=type][value="paper"]').check()
    assert page.locator("svg.as-graph-canvas a.as-node-paper").count() > 0
    page.locator('input[name=type][value="paper"]').uncheck()
    page.locator("input[name=focus]").fill("VCD (method)")
    focus = page.locator("svg.as-graph-canvas a.as-focus")
    focus.wait_for()
    assert 1 < nodes.count() < expected
    assert "around VCD" in page.locator(".as-graph-status").inner_text()
    page.locator('svg.as-graph-canvas a.as-node-taxonomy[href*="mitigation.parameter-frozen.decoding"] circle').click()
    page.wait_for_url(re.compile(r".*/taxonomy/mitigation\.parameter-frozen\.decoding/$"))
    assert page.locator("h1").first.inner_text() == "Decoding-based"


def test_every_kind_of_page_loads_cleanly(page, site_url):
    for path in ("/", "/papers/", "/papers/leng2024-vcd/", "/methods/", "/benchmarks/pope/", "/models/llava-1.5-7b/",
                 "/taxonomy/level.object/", "/coverage/", "/reproduction/", "/experiments/", "/methods-as-run/",
                 "/embedded-model/", "/embedded-model-history/", "/real-models/"):
        response = page.goto(site_url + path)
        assert response is not None and response.ok, path
        assert page.locator("h1").first.is_visible(), path


def test_the_experiments_section_is_in_the_navigation_and_shows_the_data(page, site_url):
    page.goto(site_url + "/experiments/")
    nav = page.locator("nav.md-nav--primary")
    for title in ("Running the experiments", "Methods as run here", "The embedded model", "Embedded model: history",
                  "Real models and GPUs"):
        assert nav.get_by_text(title, exact=True).count() >= 1, title
    n_records = len(record_cells(REPO / "results"))
    total = page.locator("tr", has=page.locator("td", has_text="whole matrix")).first.locator("td")
    assert total.nth(2).inner_text() == str(n_records)  # "with a record": every record of the copy
    page.goto(site_url + "/embedded-model/")
    plot = page.locator('img[src*="training-losses-"]')
    assert plot.evaluate("img => img.complete && img.naturalWidth > 0")
    page.goto(site_url + "/reproduction/")
    assert page.get_by_text("Every cell of the matrix has a record.").is_visible()
