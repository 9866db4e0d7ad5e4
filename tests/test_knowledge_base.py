"""The repository's own records: they validate, cover the survey, and hold its tables exactly."""
from __future__ import annotations

import pytest

from site_gen.graph import benchmarks_for_level, build_graph, methods_for_level, methods_in_family
from site_gen.load import load_knowledge_base
from site_gen.tables import SURVEY_ID, survey_table1, survey_table2, survey_table3

from .conftest import REPO


@pytest.fixture(scope="module")
def kb():
    kb, issues = load_knowledge_base(REPO)
    assert [i.format() for i in issues] == []
    return kb


def test_every_survey_reference_is_a_record(kb):
    survey = kb.papers[SURVEY_ID]
    assert len(survey.cites) == 124 == len(set(survey.cites))
    assert all(c in kb.papers for c in survey.cites)
    assert all(kb.papers[c].survey_key for c in survey.cites)
    assert sum(1 for c in survey.cites if kb.papers[c].arxiv) >= 75  # the reference list prints 75 arXiv ids
    assert kb.papers["xing2025-re-align"].arxiv == "2502.13146"
    assert survey.arxiv == "2501.01346"


def test_taxonomy_holds_the_survey_concepts(kb):
    causes = {k for k, n in kb.taxonomy.items() if n.kind == "cause"}
    assert causes == {f"cause/{c}" for c in (
        "data/imperfections", "data/imbalance", "data/inconsistency", "data/false-negatives", "data/polysemy",
        "model/ability-gap", "model/knowledge-gap", "model/knowledge-conflict", "inference/task-discrepancy")}
    families = {k for k, n in kb.taxonomy.items() if n.kind == "family"}
    assert families == {f"mitigation/{f}" for f in (
        "parameter-tuning/training-scheme/contrastive-learning", "parameter-tuning/training-scheme/instruction-tuning",
        "parameter-tuning/training-scheme/rlhf", "parameter-tuning/training-scheme/preference-optimization",
        "parameter-tuning/architecture/visual-encoder", "parameter-tuning/architecture/adapter",
        "parameter-frozen/augment", "parameter-frozen/inference", "parameter-frozen/decoding", "parameter-frozen/post-decoding")}
    assert {k for k, n in kb.taxonomy.items() if n.kind == "level"} == {"level/object", "level/attribute", "level/relation"}
    assert {k for k, n in kb.taxonomy.items() if n.kind == "stage"} == {"stage/contrastive-encoder", "stage/adapter", "stage/end-to-end"}
    assert {k for k, n in kb.taxonomy.items() if n.kind == "aspect"} == {"aspect/representational", "aspect/behavioral"}
    assert len([n for n in kb.taxonomy.values() if n.kind == "evaluation"]) == 3
    assert len([n for n in kb.taxonomy.values() if n.kind == "direction"]) == 4


NAMED = {  # every method the survey names in Sections 4.1-4.3, and the family it puts it in
    "cit": "contrastive-learning", "hacl": "contrastive-learning", "lrv-instruction": "instruction-tuning",
    "videocon": "instruction-tuning", "haca": "instruction-tuning", "textsquare": "instruction-tuning",
    "llava-rlhf": "rlhf", "rlhf-v": "rlhf", "ha-dpo": "preference-optimization", "clip-dpo": "preference-optimization",
    "fdpo": "preference-optimization", "povid": "preference-optimization", "re-align": "preference-optimization",
    "patch": "adapter", "halle-switch": "adapter", "ritual": "augment", "ara": "augment", "vti": "inference",
    "ict": "inference", "vcd": "decoding", "icd": "decoding", "opera": "decoding", "sgd": "decoding", "halc": "decoding",
    "pai": "decoding", "m3id": "decoding", "ibd": "decoding", "sid": "decoding", "agla": "decoding", "avisc": "decoding",
    "lure": "post-decoding", "woodpecker": "post-decoding", "logiccheckgpt": "post-decoding", "som-llava": "instruction-tuning",
}


@pytest.mark.parametrize("method, family", sorted(NAMED.items()))
def test_named_method_sits_in_its_family(kb, method, family):
    assert kb.methods[method].family.endswith("/" + family)
    assert kb.taxonomy[kb.methods[method].family].kind == "family"


def test_third_model_flags_follow_the_survey(kb):
    assert kb.methods["logiccheckgpt"].third_model and kb.methods["woodpecker"].third_model
    assert not kb.methods["vcd"].third_model and not kb.methods["ritual"].third_model
    assert kb.methods["re-align"].extends == ["dpo"]


def test_table1_exactly_as_printed(kb):
    rows = {r.method: r for r in survey_table1(kb)}
    assert list(rows) == [None, "som-llava", "sid", "logiccheckgpt"]
    base = rows[None]
    assert [base.cells[("random", m)] for m in ("accuracy", "precision", "recall", "f1")] == [88.4, 87.5, 89.7, 88.6]
    assert [base.cells[("adversarial", m)] for m in ("accuracy", "precision", "recall", "f1")] == [77.9, 72.6, 89.7, 80.3]
    assert [base.cells[("popular", m)] for m in ("accuracy", "precision", "recall", "f1")] == [84.8, 81.7, 89.7, 85.5]
    assert [rows[m].seconds_per_input for m in rows] == [1.27, 1.62, 1.68, 51.5]
    assert [rows["sid"].cells[("popular", m)] for m in ("accuracy", "precision", "recall", "f1")] == [85.9, 85.9, 85.9, None]
    assert rows["logiccheckgpt"].cells[("adversarial", "precision")] == 94.1
    assert rows["som-llava"].cells[("random", "accuracy")] == 89.6


def test_table2_exactly_as_printed(kb):
    got = {m.id: (m.vision_encoder, m.adapter, m.llm) for m in survey_table2(kb)}
    assert got == {
        "qwen-vl": ("Vision Transformer (ViT)", "Single cross-attention layer", "Qwen"),
        "qwen2-vl": ("ViT", "MLP layer", "Qwen2"),
        "minigpt-4": ("ViT-G/14", "Single linear projection layer", "Vicuna"),
        "llama-3.2-vision": ("Modified ViT (16x16 patches)", "Multiple cross-attention layers", "Llama 3.1 text-only model"),
        "llava-1.5": ("CLIP-ViT-L-336px", "MLP projection layer", "Vicuna v1.5"),
        "deepseek-vl2": ("SigLIP-SO400M-384", "Two-layer MLP", "DeepSeekMoE"),
    }


def test_table3_exactly_as_printed(kb):
    got = {b.id: (tuple(b.dimensions.model_dump().values()), b.evaluator) for b in survey_table3(kb)}
    T, F = True, False
    assert got == {
        "pope": ((T, F, F, F, F), "traditional"),
        "chair": ((T, F, F, F, F), "traditional"),
        "mme": ((T, T, T, T, F), "traditional"),
        "mmhal-bench": ((T, T, T, T, F), "traditional"),
        "llava-bench": ((T, T, T, F, F), "traditional"),
        "lvlm-ehub": ((T, T, F, T, T), "traditional"),
        "gavie": ((T, T, T, F, F), "third-model"),
        "cceval": ((T, F, F, F, F), "third-model"),
        "haelm": ((T, T, T, F, F), "third-model"),
    }
    assert {"amber", "hallusionbench"} <= set(kb.benchmarks)


def test_graph_of_the_repository(kb):
    g = build_graph(kb)
    assert "vcd" in methods_for_level(g, "object")
    assert set(benchmarks_for_level(g, "relation")) >= {"mme", "mmhal-bench", "llava-bench", "gavie", "haelm"}
    assert "pope" not in benchmarks_for_level(g, "relation")
    assert set(methods_in_family(g, "mitigation/parameter-frozen")) >= {"vcd", "ritual", "vti", "woodpecker"}


def test_every_plugin_a_record_names_is_registered(kb):
    from plugins.registry import list_methods

    named = {m.id: m.plugin for m in kb.methods.values() if m.plugin}
    assert named["vti"] == "vti" and named["ict"] == "ict"
    assert set(named.values()) <= set(list_methods())
