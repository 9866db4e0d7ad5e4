"""Comparison records (plugins/compare.py): pairing, the test chosen, Holm families, reuse, refusals."""
from __future__ import annotations

import gzip
import json
import textwrap
from pathlib import Path

import pytest

from plugins import compare
from plugins.api import ResultRecord, read_comparisons, result_path, save_record
from plugins.compare import PairSpec, comparison_pairs, write_comparisons
from plugins.files import file_sha256
from plugins.runner.matrix import expand_all, load_matrix

MODEL = "tiny"


def put(results: Path, method: str, benchmark: str, split: str, rows: list[dict], *, seed: int = 0,
        decoding: dict | None = None, metrics: dict | None = None, plugin: str | None = None,
        protocol: str = "common") -> ResultRecord:
    """A record and its predictions file, as the runner writes them."""
    if metrics is None:
        if "parsed" in rows[0]:
            metrics = {"accuracy": sum(r["parsed"] == r["label"] for r in rows) / len(rows)}
        else:
            metrics = {"chair_s": sum(r["chair_s"] for r in rows) / len(rows),
                       "chair_i": sum(r["n_hallucinated_mentions"] for r in rows) / sum(r["n_object_mentions"] for r in rows)}
    name = f"seed{seed}.predictions.jsonl.gz"
    stub = ResultRecord.model_validate({**_record(method, benchmark, split, seed, len(rows), metrics, decoding, plugin),
                                        "protocol": protocol})
    path = result_path(results, stub).with_name(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    record = ResultRecord.model_validate({**stub.model_dump(mode="json"), "predictions": name,
                                          "predictions_sha256": file_sha256(path), "predictions_rows": len(rows)})
    save_record(results, record)
    return record


def _record(method, benchmark, split, seed, n, metrics, decoding, plugin):
    return {"method": method, "benchmark": benchmark, "split": split, "model": MODEL, "seed": seed, "n_samples": n,
            "metrics": metrics, "seconds_per_input": 0.01, "fingerprint": f"{seed:02d}" * 32,
            "provenance": {"git_commit": "0" * 40, "dirty": False, "package_versions": {}, "device": "cpu",
                           "dtype": "float32", "decoding": decoding or {"strategy": "greedy", "num_beams": 1},
                           "parser": "pope-official-v1", "date": "2026-12-04",
                           "method_config": {"plugin": plugin or method}}}


def yesno(correct: list[bool], per_image: int = 1) -> list[dict]:
    return [{"question_id": str(i + 1), "image": f"img{i // per_image}.png", "label": "yes",
             "parsed": "yes" if ok else "no", "answer": "yes" if ok else "no"} for i, ok in enumerate(correct)]


def captions(hallucinated: list[int], mentions: list[int]) -> list[dict]:
    return [{"question_id": str(i + 1), "image": f"img{i}.png", "chair_s": int(h > 0), "n_hallucinated_mentions": h,
             "n_object_mentions": m} for i, (h, m) in enumerate(zip(hallucinated, mentions))]


def records(results: Path) -> list[ResultRecord]:
    from plugins.api import load_results

    found, problems = load_results(results)
    assert not problems
    return found


def test_one_question_per_image_is_judged_by_the_exact_mcnemar_test(tmp_path):
    put(tmp_path, "baseline", "world-attribute", "random", yesno([False] * 10 + [True] * 2 + [True] * 8))
    put(tmp_path, "vcd", "world-attribute", "random", yesno([True] * 10 + [False] * 2 + [True] * 8))
    out, problems = write_comparisons(tmp_path, [PairSpec("vcd", "baseline", "same-protocol baseline")], records(tmp_path))
    assert problems == [] and len(out) == 1
    c = out[0]
    assert (c.test, c.discordant, c.n_items, c.n_clusters) == ("mcnemar-exact", (10, 2), 20, 20)
    assert c.effect == pytest.approx(0.4) and c.p == pytest.approx(2 * 79 / 4096)
    assert c.method_value == pytest.approx(0.9) and c.reference_value == pytest.approx(0.5)
    assert c.verdict == "better" and c.p_holm == c.p and c.family_size == 1 and c.protocol == "common"
    assert set(c.inputs) == {f"{MODEL}/world-attribute/random/vcd/seed0", f"{MODEL}/world-attribute/random/baseline/seed0"}
    assert read_comparisons(tmp_path)[0] == out


def test_questions_sharing_an_image_are_bootstrapped_over_images(tmp_path):
    put(tmp_path, "baseline", "world-pope", "random", yesno([True, False] * 30, per_image=6))
    put(tmp_path, "vcd", "world-pope", "random", yesno([True] * 60, per_image=6))
    (c,), _ = write_comparisons(tmp_path, [PairSpec("vcd", "baseline", "x")], records(tmp_path), n_boot=200)
    assert c.test == "cluster-bootstrap" and c.n_clusters == 10 and c.n_items == 60 and c.replicates == 200
    assert c.discordant == (30, 0) and c.effect == pytest.approx(0.5)


def test_caption_metrics_are_ratios_of_sums_and_lower_is_better(tmp_path):
    put(tmp_path, "baseline", "world-caption", "all", captions([1, 0, 2, 1] * 10, [3, 2, 4, 3] * 10))
    put(tmp_path, "opera", "world-caption", "all", captions([0, 0, 1, 0] * 10, [3, 2, 4, 3] * 10))
    out, _ = write_comparisons(tmp_path, [PairSpec("opera", "baseline", "x")], records(tmp_path), n_boot=200)
    by = {c.metric: c for c in out}
    assert set(by) == {"chair_s", "chair_i"}
    assert by["chair_i"].effect == pytest.approx(10 / 120 - 40 / 120)
    assert by["chair_s"].effect == pytest.approx(0.25 - 0.75)
    assert not by["chair_i"].higher_is_better and by["chair_i"].verdict == "better"


def test_holm_adjusts_over_the_comparisons_of_one_table(tmp_path):
    base = [True] * 30 + [False] * 30
    put(tmp_path, "baseline", "world-attribute", "random", yesno(base))
    put(tmp_path, "a", "world-attribute", "random", yesno([True] * 42 + [False] * 18))  # b = 12, c = 0
    put(tmp_path, "b", "world-attribute", "random", yesno(base))
    put(tmp_path, "c", "world-attribute", "random", yesno([True] * 36 + [False] * 24))  # b = 6, c = 0
    pairs = [PairSpec(m, "baseline", "x") for m in "abc"]
    out, _ = write_comparisons(tmp_path, pairs, records(tmp_path))
    by = {c.method: c for c in out}
    p = {m: by[m].p for m in "abc"}
    assert p["b"] == 1.0 and p["a"] == pytest.approx(2 / 2 ** 12) and p["c"] == pytest.approx(2 / 2 ** 6)
    assert by["a"].p_holm == pytest.approx(3 * p["a"]) and by["c"].p_holm == pytest.approx(2 * p["c"])
    assert all(c.family_size == 3 for c in out)
    # c alone would pass (p = 0.031) but not after Holm (0.0625)
    assert [by[m].verdict for m in "abc"] == ["better", "no detectable change", "no detectable change"]


def test_arms_that_answered_different_questions_are_refused(tmp_path):
    put(tmp_path, "baseline", "world-attribute", "random", yesno([True] * 10))
    put(tmp_path, "vcd", "world-attribute", "random", yesno([True] * 12))
    out, problems = write_comparisons(tmp_path, [PairSpec("vcd", "baseline", "x")], records(tmp_path))
    assert out == [] and "did not answer the same questions" in problems[0] and "vcd vs baseline" in problems[0]


def test_items_that_disagree_with_their_record_are_refused(tmp_path):
    put(tmp_path, "baseline", "world-attribute", "random", yesno([True] * 10))
    put(tmp_path, "vcd", "world-attribute", "random", yesno([True] * 10), metrics={"accuracy": 0.7})
    _, problems = write_comparisons(tmp_path, [PairSpec("vcd", "baseline", "x")], records(tmp_path))
    assert "accuracy from its 10 predictions is 1.000000, its record says 0.700000" in problems[0]


def test_a_damaged_predictions_file_is_refused(tmp_path):
    put(tmp_path, "baseline", "world-attribute", "random", yesno([True] * 10))
    r = put(tmp_path, "vcd", "world-attribute", "random", yesno([True] * 10))
    result_path(tmp_path, r).with_name(r.predictions).write_bytes(b"garbage")
    _, problems = write_comparisons(tmp_path, [PairSpec("vcd", "baseline", "x")], records(tmp_path))
    assert "changed since the run" in problems[0]


def test_only_the_same_protocol_is_paired_unless_the_pair_says_otherwise(tmp_path):
    put(tmp_path, "baseline", "world-pope", "random", yesno([True, False] * 6, per_image=6))
    put(tmp_path, "baseline", "world-pope", "random", yesno([True] * 12, per_image=6), protocol="beam-5")
    put(tmp_path, "opera", "world-pope", "random", yesno([True] * 11 + [False], per_image=6), protocol="beam-5")
    rs = records(tmp_path)
    (c,), _ = write_comparisons(tmp_path, [PairSpec("opera", "baseline", "x")], rs, n_boot=50)
    assert c.protocol == "beam-5" and c.effect == pytest.approx(-1 / 12)  # against 5-beam search, not greedy
    (c,), _ = write_comparisons(tmp_path, [PairSpec("baseline", "baseline", "x", "beam-5", "common")], rs, n_boot=50)
    assert c.protocol == "beam-5-vs-common" and c.effect == pytest.approx(0.5)
    assert write_comparisons(tmp_path, [PairSpec("baseline", "baseline", "x")], rs, n_boot=50)[0] == []  # not itself


def test_sampling_seeds_are_paired_and_pooled_and_a_greedy_reference_serves_every_seed(tmp_path):
    for seed, right in enumerate([8, 9, 10]):
        put(tmp_path, "baseline", "world-pope", "random", yesno([True] * 6 + [False] * 6, per_image=6), seed=seed,
            protocol="sampling")
        put(tmp_path, "vcd", "world-pope", "random", yesno([True] * right + [False] * (12 - right), per_image=6),
            seed=seed, protocol="sampling")
    put(tmp_path, "baseline", "world-pope", "random", yesno([True] * 7 + [False] * 5, per_image=6))
    rs = records(tmp_path)
    pairs = [PairSpec("vcd", "baseline", "same"), PairSpec("vcd", "baseline", "mirage", "sampling", "common")]
    out, problems = write_comparisons(tmp_path, pairs, rs, n_boot=100)
    by = {c.protocol: c for c in out}
    assert problems == [] and set(by) == {"sampling", "sampling-vs-common"}
    assert by["sampling"].n_seeds == 3 and by["sampling"].effect == pytest.approx((9 / 12) - 0.5)
    assert len(by["sampling"].inputs) == 6 and len(by["sampling-vs-common"].inputs) == 4
    assert by["sampling-vs-common"].effect == pytest.approx(9 / 12 - 7 / 12)


def test_unchanged_inputs_are_reused_and_changed_ones_recomputed(tmp_path, monkeypatch):
    put(tmp_path, "baseline", "world-attribute", "random", yesno([False] * 5 + [True] * 5))
    put(tmp_path, "vcd", "world-attribute", "random", yesno([True] * 10))
    pairs = [PairSpec("vcd", "baseline", "x")]
    first, _ = write_comparisons(tmp_path, pairs, records(tmp_path))
    text = (tmp_path / "comparisons.json").read_text()

    def boom(*a, **k):
        raise AssertionError("recomputed an unchanged comparison")

    monkeypatch.setattr(compare, "compare_arms", boom)
    again, problems = write_comparisons(tmp_path, pairs, records(tmp_path))
    assert again == first and problems == [] and (tmp_path / "comparisons.json").read_text() == text
    put(tmp_path, "vcd", "world-attribute", "random", yesno([True] * 9 + [False]))
    with pytest.raises(AssertionError, match="recomputed"):
        write_comparisons(tmp_path, pairs, records(tmp_path))


def test_an_oracle_method_is_marked(tmp_path):
    put(tmp_path, "baseline", "world-attribute", "random", yesno([True] * 10))
    put(tmp_path, "woodpecker", "world-attribute", "random", yesno([True] * 10))
    from plugins.compare import oracle_of

    assert "exact object labels" in oracle_of("woodpecker")
    assert oracle_of("vcd") is None and oracle_of("no-such-method") is None
    (c,), _ = write_comparisons(tmp_path, [PairSpec("woodpecker", "baseline", "x")], records(tmp_path),
                                oracle=lambda r: oracle_of(r.provenance.method_config["plugin"]))
    assert c.oracle == oracle_of("woodpecker")


def test_the_matrix_declares_pairs_and_a_bad_label_is_located(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent("""\
        experiments:
          - name: frozen
            reference: baseline
            models: [alignscope-tiny-llava]
            benchmarks: {world-pope: [random]}
            methods: {baseline: {}, vcd: {}, beam: {}}
          - name: other
            reference: basline
            models: [alignscope-tiny-llava]
            benchmarks: {world-pope: [random]}
            methods: {opera: {}}
        comparisons:
          - {method: opera, reference: beam, why: "its own baseline"}
          - {method: opera, reference: bem, why: "typo"}
        """), encoding="utf-8")
    matrix = load_matrix(path)
    _, problems = expand_all(matrix)
    assert any(p.startswith(f"{path.name}:8:") or ":8: " in p and "basline" in p and "did you mean 'baseline'" in p
               for p in problems), problems
    assert any(":14: " in p and "'bem'" in p and "did you mean 'beam'" in p for p in problems), problems
    pairs = comparison_pairs(matrix)
    assert PairSpec("vcd", "baseline", "same-protocol baseline") in pairs
    assert PairSpec("opera", "beam", "its own baseline") in pairs
    assert comparison_pairs(load_matrix()), "the default matrix declares comparisons"
    assert all(p.method != "baseline" for p in pairs)


def test_the_committed_comparisons_are_current():
    """results/comparisons.json equals what the committed records give (make reproduce rewrites it)."""
    from plugins.runner.reproduce import DEFAULT_RESULTS

    committed, problems = read_comparisons(DEFAULT_RESULTS)
    assert problems == []
    if not committed:
        pytest.skip("no comparisons committed yet")
    stored = (DEFAULT_RESULTS / "comparisons.json").read_text(encoding="utf-8")
    cells = {cell for c in committed for cell in c.inputs}
    rs = [r for r in records(DEFAULT_RESULTS) if r.cell in cells]
    assert {r.cell for r in rs} == cells, "a comparison names a record that is not committed"
    for r in rs:
        assert committed_input(committed, r.cell) == r.predictions_sha256, f"{r.cell} changed after its comparison"
    assert stored.endswith("\n")


def committed_input(committed, cell: str) -> str:
    return next(c.inputs[cell] for c in committed if cell in c.inputs)


def test_a_gap_effect_resamples_both_splits_of_the_same_images(tmp_path):
    """The causes' joint measure: (random − adversarial accuracy) of the treated arm minus the control's."""
    # Four images, one question each per split. Treated: random all right, adversarial all wrong (gap 1.0);
    # control: both right (gap 0.0). The effect of the gaps is +1.0, and every replicate keeps it.
    t_rand = put(tmp_path, "treated", "world-pope", "random", yesno([True] * 4))
    t_adv = put(tmp_path, "treated", "world-pope", "adversarial", yesno([False] * 4))
    c_rand = put(tmp_path, "control", "world-pope", "random", yesno([True] * 4))
    c_adv = put(tmp_path, "control", "world-pope", "adversarial", yesno([True] * 4))
    tab = {k: compare.read_items(result_path(tmp_path, r), r)
           for k, r in {"tr": t_rand, "ta": t_adv, "cr": c_rand, "ca": c_adv}.items()}
    e = compare.gap_effect([tab["tr"]], [tab["cr"]], "accuracy", method_minus=[tab["ta"]], reference_minus=[tab["ca"]],
                           minus_metric="accuracy", n_boot=200)
    assert (e.effect, e.low, e.high) == (1.0, 1.0, 1.0) and e.test == "cluster-bootstrap"
    plain = compare.gap_effect([tab["ta"]], [tab["ca"]], "accuracy", n_boot=200)
    assert plain.effect == -1.0
    with pytest.raises(compare.ComparisonError, match="cannot be read item by item"):
        compare.gap_effect([tab["ta"]], [tab["ca"]], "chair_i", n_boot=10)


def test_yes_ratio_and_visual_dependence_are_read_item_by_item_but_get_no_verdict(tmp_path):
    rows = yesno([True, False, True, True])
    rows[1]["parsed"] = "yes"
    rows[1]["label"] = "no"
    r = put(tmp_path, "neutral", "world-pope", "random", rows,
            metrics={"accuracy": 0.75, "yes_ratio": 1.0})
    table = compare.read_items(result_path(tmp_path, r), r)
    assert table.num["yes_ratio"].sum() / table.den["yes_ratio"].sum() == 1.0
    assert "yes_ratio" not in compare.ITEM_METRICS["yesno"]  # descriptive: compared only where a cause names it
    diag = [{"id": str(i), "image": f"img{i}.png", "correct": i % 2 == 0, "vd_blank": v, "vd_noise": None,
             "vd_none": 1.0} for i, v in enumerate([0.5, 1.5, 2.0])]
    d = put(tmp_path, "neutral", "world-diagnostics", "pope-adversarial", diag,
            metrics={"accuracy": 2 / 3, "vd_blank": 4.0 / 3, "vd_none": 1.0})
    table = compare.read_items(result_path(tmp_path, d), d)
    assert table.kind == "diagnostics" and abs(table.num["vd_blank"].sum() / table.den["vd_blank"].sum() - 4 / 3) < 1e-12
    bad = put(tmp_path, "other", "world-diagnostics", "pope-adversarial", diag,
              metrics={"accuracy": 2 / 3, "vd_blank": 1.0, "vd_none": 1.0})
    with pytest.raises(compare.ComparisonError, match="vd_blank from its 3 predictions"):
        compare.read_items(result_path(tmp_path, bad), bad)
