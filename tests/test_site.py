"""The generated site: a page per record, escaping, determinism, golden pages, a strict mkdocs build."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from site_gen.guide import page_sources
from site_gen.load import load_knowledge_base
from site_gen.render import DOCS_DIR, build_site, generate_docs

from .conftest import PAPERS, write_kb

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_PAGES = ["papers/leng2024-vcd.md", "methods/vcd.md", "benchmarks/pope.md", "taxonomy/level.object.md"]


def docs(root: Path) -> dict[str, bytes]:
    kb, issues = load_knowledge_base(root)
    assert issues == []
    generate_docs(kb, root)
    base = root / DOCS_DIR
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def test_every_record_has_a_page(mini_kb):
    pages = docs(mini_kb)
    for expected in ("index.md", "tables.md", "taxonomy/index.md", "papers/index.md", "methods/index.md",
                     "papers/leng2024-vcd.md", "papers/li2023-pope.md", "methods/vcd.md", "benchmarks/pope.md",
                     "models/llava-1.5-7b.md", "taxonomy/mitigation.parameter-frozen.decoding.md", "taxonomy/cause.model.ability-gap.md"):
        assert expected in pages, expected


def test_two_generations_are_byte_identical(mini_kb):
    assert docs(mini_kb) == docs(mini_kb)


@pytest.mark.parametrize("page", GOLDEN_PAGES)
def test_golden_pages(mini_kb, page):
    text = docs(mini_kb)[page].decode()
    golden = GOLDEN / page.replace("/", "__")
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8"), f"{page} differs from {golden}; rerun with UPDATE_GOLDEN=1 if intended"


HOSTILE = {
    "evil2024-xss.yaml": '''
        id: evil2024-xss
        title: "<script>alert('t')</script> [click](javascript:alert(1)) {{ 7*7 }}"
        authors: ["<img src=x onerror=alert(2)>", "Robert'); DROP TABLE"]
        year: 2024
        venue: "<iframe src=//evil.example>"
        url: "https://example.org/x?a=1&b=2"
        summary: |
          First line <b>bold</b> and a link [x](javascript:alert(4)).

          <script>alert(5)</script> after a blank line, and **markdown** too.
        tags: [level/object]
        introduces:
          methods:
            - id: evil
              name: "<svg onload=alert(6)>"
              family: mitigation/parameter-frozen/decoding
              summary: "<style>body{display:none}</style> a summary"
              changes: [logits]
              third_model: false
        ''',
}


def test_record_text_is_always_escaped(mini_kb):
    write_kb(mini_kb, taxonomy={}, papers=HOSTILE)
    pages = docs(mini_kb)
    # Pages and plots are markup; graph.json is data that the explorer only ever puts in textContent.
    everything = b"\n".join(v for k, v in pages.items() if k.endswith((".md", ".svg"))).decode()
    for bad in ("<script>", "<img src=x", "<iframe", "<svg onload", "<style>", "<b>bold</b>", 'href="javascript:', "onerror=alert(2)>"):
        assert bad not in everything, bad
    page = pages["papers/evil2024-xss.md"].decode()
    assert "&lt;script&gt;alert(&#39;t&#39;)&lt;/script&gt;" in page
    assert "{{ 7*7 }}" in page and "49" not in page  # no template evaluation of record text
    front = page.split("---")[1]
    assert re.fullmatch(r'\ntitle: "[^<>"\[\]{}]*"\n', front), front
    assert "\n\n" not in page.split("---", 2)[2].strip()  # one HTML block: Markdown never parses record text


def test_strict_build_of_the_mini_kb(mini_kb):
    from .conftest import REPO

    (mini_kb / "mkdocs.yml").write_text((REPO / "mkdocs.yml").read_text())
    # The mini KB has no survey record: the home page links to it, which must still build.
    docs(mini_kb)
    build_site(mini_kb)
    html = (mini_kb / "site" / "papers" / "leng2024-vcd" / "index.html").read_text()
    assert "Mitigating Object Hallucinations through Visual Contrastive Decoding" in html


def test_strict_build_of_the_repository(repo_copy):
    pages = docs(repo_copy)
    build_site(repo_copy)
    site = repo_copy / "site"
    kb, _ = load_knowledge_base(repo_copy)
    for pid in kb.papers:
        assert (site / "papers" / pid / "index.html").is_file(), pid
    for mid in kb.methods:
        assert (site / "methods" / mid / "index.html").is_file(), mid
    n_md = sum(1 for p in pages if p.endswith(".md"))
    n_records = len(kb.taxonomy) + len(kb.papers) + len(kb.methods) + len(kb.benchmarks) + len(kb.models)
    assert n_md == 13 + len(page_sources()) + n_records  # 13 index pages (nav), the hand-written pages, one page per record
    table = (site / "tables" / "index.html").read_text()
    assert '<td data-split="popular" data-metric="f1"></td>' in table  # SID's empty cell stays empty
    assert '<td data-split="adversarial" data-metric="precision">94.1</td>' in table


def _result(method: str, split: str, acc: float, seed: int = 0, **extra):
    from plugins.api import ResultRecord

    return ResultRecord.model_validate({
        "method": method, "benchmark": "pope-synth", "split": split, "model": "tiny-test-model", "follows": "pope",
        "seed": seed, "n_samples": 12, "metrics": {"accuracy": acc, "precision": 0.5, "recall": 0.25, "f1": 0.2, "yes_ratio": 0.5},
        "seconds_per_input": 0.125, "fingerprint": "0123456789abcdef",
        "provenance": {"git_commit": "abcdef0123", "dirty": False, "package_versions": {"torch": "x"}, "device": "cpu",
                       "dtype": "float32", "decoding": {"strategy": "greedy"}, "parser": "pope-official-v1", "date": "2026-11-22"},
        **extra})


def test_reproduced_numbers_are_shown_labelled_with_provenance(repo_copy):
    from plugins.api import save_record
    from site_gen.render import generate_checkout

    results = repo_copy / "results"
    save_record(results, _result("baseline", "adversarial", 0.75))
    save_record(results, _result("vcd", "adversarial", 0.8125, seed=0))
    save_record(results, _result("vcd", "adversarial", 0.8375, seed=1))
    broken = results / "tiny-test-model/pope-synth/random/icd/seed0.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json", encoding="utf-8")
    kb, _ = load_knowledge_base(repo_copy)
    _, problems = generate_checkout(repo_copy, kb)
    left_out = [p for p in problems if p.startswith("result left out:")]
    assert len(left_out) == 1 and "icd/seed0.json" in left_out[0]  # reported, left out, the site still builds
    assert any("index.json is missing" in p for p in problems)  # and nothing can be marked stale without the index
    docs_dir = repo_copy / DOCS_DIR
    page = (docs_dir / "reproduction.md").read_text()
    # VCD's two seeds are averaged: (81.25 + 83.75) / 2 = 82.5 %
    assert re.search(r'data-split="adversarial" data-metric="accuracy" title="reproduced · tiny-test-model · pope-synth/adversarial · '
                     r'seeds 0,1 · n=24 · commit abcdef0123 · 2026-11-22[^"]*">82.5</td>', page)
    assert "75.0" in page
    # reported beside reproduced: the survey's LLaVA-1.5-7B baseline on POPE adversarial (77.9) sits next to ours
    side = page[page.index('id="reported-vs-reproduced"'):]
    assert "<td>reported</td>" in side and "77.9" in side and "<td>reproduced</td>" in side
    assert "Reproduced: tiny-test-model, pope-synth adversarial" in (docs_dir / "plots" / "reproduced-tiny-test-model--pope-synth.svg").read_text()
    vcd = (docs_dir / "methods" / "vcd.md").read_text()
    assert "reproduced" in vcd and "83.8" in vcd and "81.2" in vcd


def test_a_tuned_methods_training_time_is_shown_beside_its_cost(repo_copy):
    from site_gen.render import generate_docs

    tuned = _result("dpo", "adversarial", 0.7)
    tuned = tuned.model_copy(update={"provenance": tuned.provenance.model_copy(update={"train_seconds": 81.4})})
    kb, _ = load_knowledge_base(repo_copy)
    generate_docs(kb, repo_copy, results=[_result("baseline", "adversarial", 0.75), tuned])
    page = (repo_copy / DOCS_DIR / "reproduction.md").read_text()
    assert "<th title=\"One-off fine-tuning" in page
    assert '<td class="as-num">0.1250</td><td class="as-num">81</td>' in page  # dpo: trained in 81 s
    assert '<td class="as-num">0.1250</td><td class="as-num"></td>' in page  # the baseline trained nothing
    assert "trained in 81 s" in page  # and in the provenance list


def test_stale_results_are_marked(repo_copy):
    from plugins.api import save_record
    from site_gen.render import generate_docs

    rec = _result("vcd", "random", 0.5)
    save_record(repo_copy / "results", rec)
    kb, _ = load_knowledge_base(repo_copy)
    generate_docs(kb, repo_copy, results=[rec], stale_cells=frozenset({rec.cell}))
    page = (repo_copy / DOCS_DIR / "reproduction.md").read_text()
    assert 'class="as-stale"' in page and "STALE: the code changed since this ran" in page


def test_graph_data_for_the_explorer(mini_kb):
    import json

    pages = docs(mini_kb)
    data = json.loads(pages["assets/graph.json"])
    assert data["types"] == ["taxonomy", "method", "benchmark", "model", "paper"]
    by_url = {url: (kind, label) for kind, label, url in data["nodes"]}
    assert by_url["methods/vcd/"] == ("method", "VCD")
    assert by_url["taxonomy/level.object/"][0] == "taxonomy"
    for src, dst, kind in data["links"]:
        assert 0 <= src < len(data["nodes"]) and 0 <= dst < len(data["nodes"]) and kind
    # every node URL is a page that exists
    for url in by_url:
        assert f"{url[:-1]}.md" in pages or f"{url}index.md" in pages, url


def test_generation_rewrites_only_what_changed(mini_kb):
    docs(mini_kb)
    target = mini_kb / DOCS_DIR / "methods" / "vcd.md"
    stray = mini_kb / DOCS_DIR / "papers" / "gone.md"
    stray.write_text("left over from a deleted record")
    before = target.stat().st_mtime_ns
    os.utime(target, ns=(before - 10**9, before - 10**9))
    docs(mini_kb)
    assert target.stat().st_mtime_ns == before - 10**9  # unchanged page not rewritten (live preview reloads less)
    assert not stray.exists()  # pages of deleted records disappear


def test_cause_experiments_get_effects_with_intervals_and_stay_out_of_method_tables(repo_copy):
    from site_gen.render import generate_docs

    def arm(label: str, seed: int, yes: float):
        r = _result(label, "random", 0.7, seed=seed)
        return r.model_copy(update={"benchmark": "world-pope", "metrics": {**r.metrics, "yes_ratio": yes}})

    # yes-ratio of the neutral and yes-biased arms per seed: effects +30, +40, +35 points
    records = [arm("neutral", 0, 0.50), arm("yes-biased", 0, 0.80), arm("neutral", 1, 0.45), arm("yes-biased", 1, 0.85),
               arm("neutral", 2, 0.50), arm("yes-biased", 2, 0.85), arm("yes-biased", 3, 0.9)]  # seed 3 has no control
    diag = _result("baseline", "pope-adversarial", 0.7)
    diag = diag.model_copy(update={"benchmark": "world-diagnostics", "metrics": {
        "accuracy": 0.7, "vd_blank": 0.52, "image_attention_mean": 0.33, "image_attention_l0": 0.5, "image_attention_l1": 0.2,
        "lens_logp_l0": -2.0, "lens_logp_l1": -1.0, "lens_logp_l2": -0.3}})
    kb, _ = load_knowledge_base(repo_copy)
    vcd_diag = diag.model_copy(update={"method": "vcd", "metrics": {**diag.metrics, "vd_blank": 3.5, "accuracy": 0.69}})
    generate_docs(kb, repo_copy, results=records + [diag, vcd_diag, _result("baseline", "random", 0.75)])
    docs = repo_copy / DOCS_DIR
    causes = (docs / "causes.md").read_text()
    row = causes[causes.index("neutral → yes-biased"):]
    row = row[:row.index("</tr>")]
    # mean +35.00, sd 5, t(2) = 4.303: half-width 4.303 * 5 / sqrt(3) = 12.42
    assert ">3<" in row and "+35.00" in row and "[+22.58, +47.42]" in row and "confirmed" in row
    assert "t over seeds" in row  # records without predictions on disk: the fallback, named as such
    assert "Not run yet" in causes  # the other causes have no records here
    assert (docs / "plots" / "cause-cause-data-imbalance--cause-imbalance--world-pope-random-yes-ratio.svg").is_file()
    reproduction = (docs / "reproduction.md").read_text()
    assert "yes-biased" not in reproduction and "world-diagnostics" not in reproduction and "75.0" in reproduction
    diagnostics = (docs / "diagnostics.md").read_text()
    assert "pope-adversarial" in diagnostics and "0.520" in diagnostics and "70.0" in diagnostics
    assert (docs / "plots" / "diagnostics-tiny-test-model-pope-adversarial-lens_logp.svg").is_file()
    vcd = (docs / "methods" / "vcd.md").read_text()
    assert "Why: diagnostics beside the baseline" in vcd and "0.520 → 3.500" in vcd and "70.0 → 69.0" in vcd
    assert (docs / "plots" / "diagnostics-tiny-test-model-pope-adversarial-image_attention-vcd.svg").is_file()


@pytest.fixture(scope="module")
def generated_checkout(tmp_path_factory):
    """A copy of the checkout (records, results, model card) with its pages generated."""
    from site_gen.render import generate_checkout
    from tests.site_fixtures import copy_checkout

    root = copy_checkout(tmp_path_factory.mktemp("generated"))
    kb, _ = load_knowledge_base(root)
    generate_checkout(root, kb)
    return root, kb


def test_every_cause_experiment_has_its_own_section_and_plot(generated_checkout):
    """Two experiments of one cause (ability gap: visual dependence and accuracy) get two ids and two plots."""
    import re

    root, kb = generated_checkout
    page = (root / DOCS_DIR / "causes.md").read_text()
    ids = re.findall(r'<h2 id="([^"]+)"', page)
    plots = re.findall(r'<img class="as-plot" src="([^"]+)"', page)
    assert len(ids) == len(set(ids)) == sum(len(n.experiments) for n in kb.taxonomy.values())
    assert len([i for i in ids if "ability-gap" in i]) == 2
    assert len(plots) == len(set(plots)) >= 2 and all(f'href="#{i}"' in page for i in ids)
    # The committed results carry their predictions: every interval is the images-and-seeds bootstrap.
    assert "<td>bootstrap over images and seeds</td>" in page and "<td>t over seeds</td>" not in page


def test_the_reproduction_page_says_its_numbers_are_the_tiny_models_on_the_synthetic_world(generated_checkout):
    root, _ = generated_checkout
    total = json.loads((root / "plugins/models/checkpoints/alignscope-tiny-llava/training_log.json").read_text())["parameters"]["total"]
    page = (root / DOCS_DIR / "reproduction.md").read_text()
    notice = page[page.index('<div class="admonition warning">'):]
    notice = notice[:notice.index("</div>")]
    assert "not LLaVA-1.5-7B" in notice and f"{total:,} parameters" in notice and 'href="../embedded-model/"' in notice
    assert page.count(f"(the embedded tiny model, {total:,} parameters, on the synthetic world)") >= 3
