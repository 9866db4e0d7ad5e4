"""Diagnostics (plugins.diagnostics): each reading checked on a tiny model whose answer is known."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from plugins.diagnostics import (
    CONDITIONS, DiagnosticsError, blank_image, diagnose, layer_readout, noised_image, reference_batch, summarize,
)
from plugins.methods.attention import AttentionEdit
from plugins.models.adapter import LlavaAdapter
from plugins.models.batch import Batch
from plugins.registry import create_method
from tests.tiny_llava import random_images

QUESTIONS = ["is there a cat in the image ?", "is the circle red ?", "is there a dog ?", "what color is the square ?"]


@pytest.fixture(scope="module")
def batch():
    return Batch(random_images(4, seed=3), QUESTIONS, seed=7)


@pytest.fixture
def fresh(checkpoint):
    """An adapter of its own, so a test may zero weights without touching the shared one."""
    return LlavaAdapter.load(checkpoint, device="cpu")


def test_references_blank_noise_and_no_image(batch):
    blank = reference_batch(batch, "blank")
    assert all((im == 128).all() and im.shape == batch.images[0].shape for im in blank.images)
    noise = reference_batch(batch, "noise")
    again = reference_batch(batch, "noise")
    assert all((a == b).all() for a, b in zip(noise.images, again.images))  # seeded per item
    assert not (noise.images[0] == noise.images[1]).all()
    assert not (noise.images[0] == batch.images[0]).all()
    assert reference_batch(batch, "none").has_images == (False,) * len(batch)
    with pytest.raises(DiagnosticsError, match="blank, noise, none"):
        reference_batch(batch, "grey")


def test_noise_keeps_a_share_of_the_signal():
    img = np.zeros((16, 16, 3), np.uint8)
    img[:8] = 255
    noisy = noised_image(img, seed=0).astype(float)
    assert noisy[:8].mean() > noisy[8:].mean() + 100  # step 500 of 1000 keeps most of the picture
    assert blank_image(img).std() == 0


def test_zeroed_projector_has_no_visual_dependence(fresh, batch):
    before = diagnose(fresh, batch, ["yes", "no", "yes", "no"])
    assert max(abs(r["vd_blank"]) for r in before) > 1e-4  # the random model does look at its images
    with torch.no_grad():
        for p in fresh.projector.parameters():
            p.zero_()
    rows = diagnose(fresh, batch, ["yes", "no", "yes", "no"])
    for row in rows:
        assert row["vd_blank"] == pytest.approx(0, abs=1e-5)
        assert row["vd_noise"] == pytest.approx(0, abs=1e-5)
    assert summarize(rows)["vd_blank"] == pytest.approx(0, abs=1e-5)


def test_logit_lens_at_the_last_layer_is_the_model_output(adapter, batch):
    rows = diagnose(adapter, batch)
    logits = adapter.next_token_logits(batch)
    best = torch.log_softmax(logits.float(), -1).max(-1).values
    for row, expected in zip(rows, best):
        assert row["lens_logp"][-1] == pytest.approx(float(expected), abs=1e-4)
        assert row["logp"] == pytest.approx(float(expected), abs=1e-4)
        assert row["lens_top1"][-1] == 1
    assert len(rows[0]["lens_logp"]) == len(adapter.decoder_layers) + 1
    assert all(row["correct"] is None for row in rows)


def test_uniform_attention_gives_the_image_tokens_their_share_of_positions(fresh, batch):
    with torch.no_grad():
        for layer in fresh.decoder_layers:
            layer.self_attn.q_proj.weight.zero_()  # every score 0: attention is uniform over the visible keys
    encoded = fresh.encode(batch)
    answer = torch.zeros(len(batch), dtype=torch.long)
    shares = layer_readout(fresh, batch, answer)["image_attention"]  # (B, L)
    expected = encoded.image_token_mask.sum(1).float() / encoded.attention_mask.sum(1).float()
    for layer in range(shares.shape[1]):
        assert torch.allclose(shares[:, layer], expected, atol=1e-5)


def test_an_edit_inside_another_sees_its_changes(adapter, batch):
    """PAI's amplification and the diagnostics' recorder are both active: the recorder sees amplified attention."""
    plain = layer_readout(adapter, batch, torch.zeros(len(batch), dtype=torch.long))["image_attention"]
    pai = create_method("pai", {"start_layer": 0, "gamma": 1.0})  # amplification only, from the first layer
    amplified = layer_readout(adapter, batch, torch.zeros(len(batch), dtype=torch.long), pai)["image_attention"]
    assert (amplified > plain + 1e-4).all()
    seen = []
    with AttentionEdit(adapter, {0}, before=lambda layer, s, img: s.masked_fill(img[:, None, None, :], -1e9)), \
            AttentionEdit(adapter, {0}, after=lambda layer, p, img: seen.append(float((p[:, :, -1] * img[:, None]).sum()))):
        adapter.next_token_logits(batch)
    assert seen and seen[0] == pytest.approx(0, abs=1e-6)  # image tokens hidden by the outer edit


def test_methods_are_applied_and_bad_labels_refused(adapter, batch):
    base = diagnose(adapter, batch)
    vcd = create_method("vcd", {"alpha": 3.0})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = diagnose(adapter, batch, method=vcd)
    assert any("without an image" in str(w.message) for w in caught)
    assert all(r["vd_none"] is None and r["vd_blank"] is not None for r in rows)
    assert [r["logp"] for r in rows] != [r["logp"] for r in base]  # the method's own distribution is read
    assert "vd_none" not in summarize(rows)
    with pytest.raises(DiagnosticsError, match="labels"):
        diagnose(adapter, batch, ["yes"])


def test_summary_splits_correct_and_hallucinated(adapter, batch):
    rows = diagnose(adapter, batch, ["yes", "no", "yes", "no"], batch_size=3)  # two chunks
    assert [r["id"] for r in rows] == list(batch.ids)
    s = summarize(rows)
    n_correct = sum(r["correct"] for r in rows)
    assert s["n_correct"] == n_correct and s["n_hallucinated"] == 4 - n_correct
    assert s["accuracy"] == n_correct / 4
    for c in CONDITIONS:
        assert s[f"vd_{c}"] == pytest.approx(np.mean([r[f"vd_{c}"] for r in rows]))
    assert set(s) >= {f"image_attention_l{k}" for k in range(len(adapter.decoder_layers))}


def test_world_diagnostics_benchmark_runs_a_cell(adapter, tmp_path):
    from plugins.registry import get_benchmark

    bench = get_benchmark("world-diagnostics")({"limit": 6}, data_dir=tmp_path)
    items = bench.items("attribute-adversarial")
    assert len(items) == 6 and all(i.label in ("yes", "no") for i in items)
    metrics, rows = bench.evaluate(adapter, create_method("baseline"), "attribute-adversarial", items, batch_size=4,
                                   seed=0)
    assert len(rows) == 6 and all(r["level"] == "attribute" for r in rows)
    assert metrics["n_items"] == 6 and 0 <= metrics["accuracy"] <= 1
    payload = bench.fingerprint_payload("attribute-adversarial")
    assert payload["options"]["limit"] == 6 and payload["parser"] == "diagnostics-v1"
    from plugins.identity import code_identity

    code = code_identity(["plugins.benchmarks.diagnostics"])  # what the runner hashes for its cells
    assert {"plugins.diagnostics", "plugins.methods.attention", "plugins.models.noise"} <= set(code)


def test_explain_command_on_one_question_and_its_errors(checkpoint, tmp_path):
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from alignscope.cli import app

    picture = tmp_path / "cat.png"
    Image.fromarray(random_images(1, seed=5)[0]).save(picture)
    out = tmp_path / "report.json"
    runner = CliRunner()
    result = runner.invoke(app, ["explain", "--model", str(checkpoint), "--device", "cpu", "--image", str(picture),
                                 "--question", "is there a cat ?", "--label", "yes", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "visual dependence" in result.output and "image attention share" in result.output
    report = json.loads(out.read_text())
    assert len(report["rows"]) == 1 and report["rows"][0]["label"] == "yes"
    assert report["summary"]["n_items"] == 1

    bad = runner.invoke(app, ["explain", "--model", str(checkpoint), "--method", "vcd", "--method-config",
                              '{"alpah": 1}', "--image", str(picture), "--question", "is there a cat ?"])
    assert bad.exit_code == 2 and "did you mean 'alpha'" in bad.output
    opera = runner.invoke(app, ["explain", "--model", str(checkpoint), "--method", "opera", "--image", str(picture),
                                "--question", "is there a cat ?"])
    assert opera.exit_code == 0, opera.output  # the common protocol: OPERA with one beam has a first token too
    missing = runner.invoke(app, ["explain", "--model", str(checkpoint), "--image", str(tmp_path / "nope.png"),
                                  "--question", "is there a cat ?"])
    assert missing.exit_code == 2 and "no such file" in missing.output
