"""The Verdicts page and the method pages' verdict tables, rendered from comparison records only."""
from __future__ import annotations

from plugins.api import ComparisonRecord, ResultRecord
from site_gen.load import load_knowledge_base
from site_gen.render import DOCS_DIR
from site_gen.verdicts import comparison_stale, verdict_tables


def _comparison(method: str, effect: float, verdict: str, *, oracle: str | None = None, metric: str = "accuracy",
                sha: str = "a" * 64) -> ComparisonRecord:
    return ComparisonRecord(
        method=method, reference="baseline", relation="same-protocol baseline", model="tiny-test-model",
        benchmark="pope-synth", split="adversarial", protocol="greedy", metric=metric, higher_is_better=metric == "accuracy",
        method_value=0.75 + effect, reference_value=0.75, effect=effect, low=effect - 0.01, high=effect + 0.01, p=0.01,
        p_holm=0.03 if verdict != "no detectable change" else 0.4, family_size=3, test="cluster-bootstrap", n_items=24,
        n_clusters=4, replicates=2000, verdict=verdict, oracle=oracle,
        inputs={f"tiny-test-model/pope-synth/adversarial/{method}/seed0": sha}, input_key="0" * 64)


def _record(method: str, sha: str = "a" * 64) -> ResultRecord:
    return ResultRecord.model_validate({
        "method": method, "benchmark": "pope-synth", "split": "adversarial", "model": "tiny-test-model", "seed": 0,
        "n_samples": 24, "metrics": {"accuracy": 0.75}, "seconds_per_input": 0.1, "fingerprint": "ab" * 32,
        "predictions": "seed0.predictions.jsonl.gz", "predictions_sha256": sha, "predictions_rows": 24,
        "provenance": {"git_commit": "abcdef0123", "dirty": False, "package_versions": {}, "device": "cpu",
                       "dtype": "float32", "decoding": {"strategy": "greedy"}, "parser": "pope-official-v1",
                       "date": "2026-12-04"}})


COMPARISONS = [_comparison("vcd", -0.02, "worse"), _comparison("pai", 0.004, "no detectable change"),
               _comparison("woodpecker", 0.15, "better", oracle="its detector is trained on the world's exact labels"),
               _comparison("icd", 0.03, "better")]


def test_rows_are_ranked_best_first_with_oracles_set_apart():
    (t,) = verdict_tables(COMPARISONS, [_record(m) for m in ("vcd", "pai", "woodpecker", "icd")])
    assert [r.c.method for r in t.rows] == ["icd", "pai", "vcd"]
    assert [r.c.method for r in t.oracles] == ["woodpecker"]
    assert t.counts == {"better": 1, "worse": 1, "no detectable change": 1}
    assert not any(r.stale for r in t.rows)


def test_a_comparison_whose_records_changed_is_stale():
    c = COMPARISONS[0]
    assert comparison_stale(c, {}, frozenset())  # its record is gone
    assert comparison_stale(c, {r.cell: r for r in [_record("vcd", sha="b" * 64)]}, frozenset())
    assert comparison_stale(c, {r.cell: r for r in [_record("vcd")]}, frozenset({_record("vcd").cell}))
    assert not comparison_stale(c, {r.cell: r for r in [_record("vcd")]}, frozenset())


def test_the_verdicts_page_and_method_pages_show_the_records(repo_copy):
    from site_gen.render import generate_docs

    kb, _ = load_knowledge_base(repo_copy)
    records = [_record(m) for m in ("vcd", "pai", "woodpecker")] + [_record("icd", sha="c" * 64)]
    generate_docs(kb, repo_copy, results=records, comparisons=COMPARISONS)
    page = (repo_copy / DOCS_DIR / "verdicts.md").read_text()
    assert "1 better, 1 worse, 1 with no detectable change (oracles not counted)" in page
    assert page.index(">ICD<") < page.index(">PAI<") < page.index(">VCD<") < page.index(">Woodpecker<")
    assert 'class="as-verdict-better as-stale"' in page  # icd's record no longer matches its comparison
    assert 'class="as-verdict-better as-oracle"' in page and "trained on the world&#39;s exact labels" in page
    assert "−2.0 [−3.0, −1.0]" in page and "0.03 (3)" in page
    assert (repo_copy / DOCS_DIR / "plots" / "verdicts-tiny-test-model-pope-synth-adversarial-greedy-accuracy.svg").is_file()
    vcd = (repo_copy / DOCS_DIR / "methods" / "vcd.md").read_text()
    assert "Of 1 comparisons, 0 better, 1 worse and 0 with no detectable change" in vcd
    assert "75.0 → 73.0" in vcd


def test_without_comparisons_the_page_says_how_to_get_them(repo_copy):
    from site_gen.render import generate_docs

    kb, _ = load_knowledge_base(repo_copy)
    generate_docs(kb, repo_copy)
    assert "No comparison records yet. Run <code>make reproduce</code>" in (repo_copy / DOCS_DIR / "verdicts.md").read_text()


def test_the_mirage_table_pairs_each_sampled_method_with_both_baselines(repo_copy):
    from site_gen.render import generate_docs
    from site_gen.verdicts import mirage_rows, mirage_summary

    def c(protocol, effect, verdict, seeds=5):
        return _comparison("vcd", effect, verdict).model_copy(update={"protocol": protocol, "n_seeds": seeds})

    comps = [c("sampling", 0.03, "better"), c("sampling-vs-common", -0.01, "no detectable change"),
             c("common", 0.0, "no detectable change", seeds=1)]
    (row,) = mirage_rows(comps, [])
    assert row.vs_same.c.protocol == "sampling" and row.vs_greedy.c.protocol == "sampling-vs-common"
    assert mirage_summary([row]) == ("Of 1 method × benchmark comparisons, the method beats the baseline sampling the "
                                     "same way in 1 (the comparison its paper makes) and beats greedy decoding in 0; it is "
                                     "worse than greedy in 0.")
    kb, _ = load_knowledge_base(repo_copy)
    generate_docs(kb, repo_copy, results=[_record("vcd")], comparisons=comps)
    page = (repo_copy / DOCS_DIR / "verdicts.md").read_text()
    mirage = page[page.index('id="mirage"'):]
    assert "+3.0 [+2.0, +4.0]" in mirage and "−1.0 [−2.0, ±0.0]" in mirage
