"""Shared fixtures: a small, valid knowledge base written into a temporary folder; a tiny random LLaVA."""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TAXONOMY = {
    "level.yaml": """
        id: level
        name: Misalignment levels
        kind: root
        summary: The three semantic levels at which outputs can disagree with the image.
        children:
          - id: object
            name: Object misalignment
            kind: level
            summary: The output names objects that the image does not contain.
            references: [leng2024-vcd]
          - id: attribute
            name: Attribute misalignment
            kind: level
            summary: The object is right but one of its properties is wrong.
          - id: relation
            name: Relation misalignment
            kind: level
            summary: The objects are right but the relation between them is wrong.
        """,
    "cause.yaml": """
        id: cause
        name: Causes
        kind: root
        summary: Where misalignment comes from, grouped by level of the pipeline.
        children:
          - id: model
            name: Model level
            kind: cause-group
            summary: Causes that come from the architecture and its training.
            children:
              - id: ability-gap
                name: Ability gap
                kind: cause
                summary: The language model is much stronger than the vision encoder.
        """,
    "mitigation.yaml": """
        id: mitigation
        name: Mitigation
        kind: root
        summary: How misalignment is reduced, with or without changing weights.
        children:
          - id: parameter-frozen
            name: Parameter-frozen
            kind: family-group
            summary: Methods that leave every weight of the model untouched.
            children:
              - id: decoding
                name: Decoding-based
                kind: family
                summary: Methods that change how the next token is chosen.
        """,
}

PAPERS = {
    "leng2024-vcd.yaml": """
        id: leng2024-vcd
        title: "Mitigating Object Hallucinations through Visual Contrastive Decoding"
        authors: [Sicong Leng, Hang Zhang]
        year: 2024
        venue: CVPR 2024
        arxiv: "2311.16922"
        summary: Contrasts the output distribution of a clean image with that of a noised one.
        tags: [mitigation/parameter-frozen/decoding, level/object]
        cites: [li2023-pope]
        introduces:
          methods:
            - id: vcd
              name: VCD
              family: mitigation/parameter-frozen/decoding
              summary: Subtracts the logits of a noised image from the logits of the clean image.
              targets: {levels: [object], causes: [model/ability-gap]}
              changes: logits
              third_model: false
        """,
    "li2023-pope.yaml": """
        id: li2023-pope
        title: "Evaluating Object Hallucination in Large Vision-Language Models"
        authors: [Yifan Li, others]
        year: 2023
        arxiv: "2305.10355"
        summary: Introduces a polling-based yes/no probe of object existence with three negative samplers.
        tags: [level/object]
        introduces:
          benchmarks:
            - id: pope
              name: POPE
              summary: Yes/no questions about object presence, three positives and three negatives per image.
              dimensions: {object: true, attribute: false, relation: false, cognition: false, instruction_following: false}
              evaluator: traditional
              dimensions_source: survey Table 3
              splits: [random, popular, adversarial]
          models:
            - id: llava-1.5-7b
              name: LLaVA-1.5-7B
              vision_encoder: CLIP-ViT-L-336px
              adapter: MLP projection layer
              llm: Vicuna v1.5
              components_source: survey Table 2
        reported:
          - {model: llava-1.5-7b, benchmark: pope, split: random, metrics: {accuracy: 88.4, f1: null}, source: "Table 1"}
          - {model: llava-1.5-7b, method: vcd, benchmark: pope, split: adversarial, metrics: {accuracy: 80.0}, source: "Table 1"}
        """,
}


def write_kb(root: Path, taxonomy: dict | None = None, papers: dict | None = None) -> Path:
    for sub, files in (("taxonomy", taxonomy if taxonomy is not None else TAXONOMY), ("papers", papers if papers is not None else PAPERS)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (root / sub / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return root


@pytest.fixture
def mini_kb(tmp_path: Path) -> Path:
    """A valid knowledge base with three taxonomy files and two papers."""
    return write_kb(tmp_path)


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A copy of the repository's records and site config, safe to modify."""
    for sub in ("taxonomy", "papers"):
        shutil.copytree(REPO / sub, tmp_path / sub)
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    return tmp_path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can tell whether the test failed (screenshots)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


# ---------------------------------------------------------------- a tiny random-weight LLaVA (per test module)

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny random-weight LlavaForConditionalGeneration saved to a temporary folder (see tests/tiny_llava.py)."""
    from tests.tiny_llava import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("ckpt") / "tiny-llava", seed=0)


@pytest.fixture(scope="module")
def adapter(checkpoint):
    """The LlavaAdapter of :func:`checkpoint`, on CPU."""
    from plugins.models.adapter import LlavaAdapter

    return LlavaAdapter.load(checkpoint, device="cpu")


# ---------------------------------------------------------------- for methods that compute something once per model

@pytest.fixture
def artifact_cache(tmp_path, monkeypatch) -> Path:
    """A private, empty ``ALIGNSCOPE_CACHE`` (see plugins.artifacts.cached_artifact) for one test."""
    monkeypatch.setenv("ALIGNSCOPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def world_questions():
    """Four test-split scenes of the default world, each with one object question (a Batch)."""
    from plugins.models.batch import Batch
    from plugins.world import SceneSampler, WorldConfig, existence_questions, render

    world = WorldConfig()
    scenes = [SceneSampler(world).sample_split("test", i) for i in range(4)]
    return Batch([render(s, world) for s in scenes], [existence_questions(s, world, n=1)[0].text for s in scenes])
