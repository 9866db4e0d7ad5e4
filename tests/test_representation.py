"""Representation alignment: hand-computed values, invariances, chance levels, and a tiny random LLaVA."""
from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers reads it: nothing here downloads
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")

from plugins.benchmarks.representation import (  # noqa: E402
    alignment_profile, cosine_margin, linear_cka, model_embeddings, mutual_knn,
)
from plugins.models.adapter import LlavaAdapter  # noqa: E402
from plugins.models.batch import Batch  # noqa: E402
from tests.tiny_llava import HIDDEN, random_images  # noqa: E402

CAPTIONS = ["a red circle", "a blue square left of a green triangle .", "the small dog", "a cat"]  # different lengths: real padding


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is fastest and leaves the other core alone."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _angles(*degrees: float) -> torch.Tensor:
    """(N, 2) unit vectors at the given angles."""
    return torch.tensor([[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in degrees])


def _orthogonal(d: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q


# ---------------------------------------------------------------------- cosine margin


def test_cosine_margin_hand_computed():
    # Two pairs: cos = [[1, 1/√2], [0, 1/√2]]; matched (1 + 1/√2)/2, mismatched (1/√2 + 0)/2 → 1/2.
    assert cosine_margin(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0]])) \
        == pytest.approx(0.5, abs=1e-12)
    # Three pairs: rows of cos are (1, 0, -1/√2), (0, 1, -1/√2), (1/√2, 1/√2, -1):
    # matched (1 + 1 - 1)/3 = 1/3; off-diagonal row means -1/(2√2), -1/(2√2), 1/√2 average to 0.
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    assert cosine_margin(img, txt) == pytest.approx(1 / 3, abs=1e-12)
    # Cosines ignore the length of each vector.
    assert cosine_margin(img * torch.tensor([[2.0], [0.5], [7.0]]), txt * 3) == pytest.approx(1 / 3, abs=1e-12)
    assert cosine_margin(torch.eye(3), torch.eye(3)) == pytest.approx(1.0)


def test_cosine_margin_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same space"):
        cosine_margin(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="3 rows but txt has 2"):
        cosine_margin(torch.zeros(3, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="at least 2 pairs"):
        cosine_margin(torch.ones(1, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match="expected a non-empty"):
        cosine_margin(torch.ones(3), torch.ones(3))


# ---------------------------------------------------------------------- mutual kNN


def test_mutual_knn_hand_computed_four_points():
    # a: angles 0, 10, 90, 100 deg; b: points 1 and 2 swapped (0, 90, 10, 100).
    # k=1: a pairs 0-1 and 2-3, b pairs 0-2 and 1-3: no neighbour shared → 0.
    # k=2: a: 0→{1,2} 1→{0,2} 2→{3,1} 3→{2,1}; b: 0→{2,1} 1→{3,2} 2→{0,1} 3→{1,2};
    #      shared 2, 1, 1, 2 → (6/4)/2 = 0.75.  k=3 = N-1: everyone is everyone's neighbour → 1.
    a, b = _angles(0, 10, 90, 100), _angles(0, 90, 10, 100)
    assert mutual_knn(a, b, k=1) == 0.0
    assert mutual_knn(a, b, k=2) == 0.75
    assert mutual_knn(a, b, k=3) == 1.0


def test_mutual_knn_of_a_space_with_itself_is_one_and_ignores_lengths():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 16, generator=gen)
    assert mutual_knn(x, x, k=10) == 1.0
    scales = torch.rand(60, 1, generator=gen) + 0.1
    assert mutual_knn(x, x * scales, k=10) == 1.0  # cosine neighbours: row lengths do not matter
    assert mutual_knn(x, x @ _orthogonal(16, gen).float(), k=10) == 1.0  # nor does a rotation


def test_mutual_knn_of_independent_spaces_is_at_chance():
    # For independent spaces with i.i.d. rows, kNN_b(i) is a uniformly random k-subset of the N-1 others,
    # independent of kNN_a(i), so |kNN_a(i) ∩ kNN_b(i)| is hypergeometric with mean k²/(N-1): E[score] = k/(N-1).
    # Its variance (population N-1 = 39, k = 4 marked, k = 4 drawn) is 4·(4/39)·(35/39)·(35/38) = 0.339, so one
    # term score/k has sd 0.146; a trial's mean over N correlated terms has sd at most that, and the average of
    # T = 1000 independent trials at most 0.146/√1000 = 0.0046. We allow 5 sd: 0.023.
    n, k, trials = 40, 4, 1000
    gen = torch.Generator().manual_seed(1)
    scores = [mutual_knn(torch.randn(n, 16, generator=gen), torch.randn(n, 8, generator=gen), k) for _ in range(trials)]
    assert abs(float(np.mean(scores)) - k / (n - 1)) < 0.023


def test_mutual_knn_rejects_k_at_least_n():
    with pytest.raises(ValueError, match="k=4 but there are only N=4 items"):
        mutual_knn(torch.randn(4, 3), torch.randn(4, 3), k=4)
    with pytest.raises(ValueError, match="positive integer"):
        mutual_knn(torch.randn(4, 3), torch.randn(4, 3), k=0)
    with pytest.raises(ValueError, match="4 rows but b has 5"):
        mutual_knn(torch.randn(4, 3), torch.randn(5, 3), k=1)


# ---------------------------------------------------------------------- linear CKA


def _cka_reference(x: np.ndarray, y: np.ndarray) -> float:
    """The formula as written, in numpy: ||Ycᵀ Xc||_F² / (||Xcᵀ Xc||_F ||Ycᵀ Yc||_F)."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))


@pytest.mark.parametrize("n, dx, dy", [(200, 6, 4), (10, 50, 70)])  # feature-space path, then Gram path
def test_linear_cka_matches_the_formula_on_both_paths(n, dx, dy):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(n, dx, generator=gen, dtype=torch.float64)
    y = torch.cat([x[:, :min(dx, dy)], torch.zeros(n, max(0, dy - dx), dtype=torch.float64)], dim=1)[:, :dy]
    y = y + 0.5 * torch.randn(n, dy, generator=gen, dtype=torch.float64)  # related but not identical
    expected = _cka_reference(x.numpy(), y.numpy())
    assert 0.05 < expected < 0.99
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-10)


def test_linear_cka_of_a_space_with_itself_is_one():
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(3))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_linear_cka_invariant_to_rotation_scaling_and_shift_of_one_side():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(80, 12, generator=gen, dtype=torch.float64)
    y = x[:, :6] @ torch.randn(6, 9, generator=gen, dtype=torch.float64) + torch.randn(80, 9, generator=gen, dtype=torch.float64)
    base = linear_cka(x, y)
    assert 0.1 < base < 0.95
    q = _orthogonal(12, gen)
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(7.5 * x, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x + 3.0, y) == pytest.approx(base, rel=1e-10)  # centring removes a shift
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), rel=1e-12)  # symmetric
    # Not invariant to an anisotropic scaling: that is what separates CKA from CCA.
    stretch = torch.diag(torch.linspace(0.1, 10.0, 12, dtype=torch.float64))
    assert abs(linear_cka(x @ stretch, y) - base) > 1e-3


def test_linear_cka_of_independent_features_is_small():
    # For independent N x D Gaussian features, E||Ycᵀ Xc||² ≈ (N-1)·Dx·Dy and ||Xcᵀ Xc||_F ≈ (N-1)·√Dx, so
    # CKA ≈ √(Dx·Dy)/(N-1) = 8/499 = 0.016; the numerator is ~ a χ² with Dx·Dy = 64 dof (relative sd √(2/64) = 0.18),
    # so the sd is about 0.003 and 5 sd is 0.015.
    gen = torch.Generator().manual_seed(5)
    cka = linear_cka(torch.randn(500, 8, generator=gen), torch.randn(500, 8, generator=gen))
    assert abs(cka - 8 / 499) < 0.015 and cka < 0.05


def test_linear_cka_of_a_constant_side_is_zero():
    assert linear_cka(torch.randn(5, 3), torch.full((5, 2), 4.0)) == 0.0
    with pytest.raises(ValueError, match="at least 2 items"):
        linear_cka(torch.randn(1, 3), torch.randn(1, 3))


# ---------------------------------------------------------------------- a tiny random LLaVA


@pytest.fixture(scope="module")
def embeddings(adapter) -> dict:
    return model_embeddings(adapter, random_images(4), CAPTIONS, batch_size=4)


def test_model_embeddings_shapes(adapter, embeddings):
    n_states = adapter.config.text_config.num_hidden_layers + 1  # 2 decoder layers + embeddings
    assert embeddings["layers"] == list(range(n_states)) == [0, 1, 2]
    for key in ("image", "text"):
        assert embeddings[key].shape == (3, 4, HIDDEN)
        assert embeddings[key].dtype == torch.float32 and embeddings[key].device.type == "cpu"
        assert torch.isfinite(embeddings[key]).all()
    embeddings["image"].add_(0)  # ordinary tensors, not inference tensors: in-place ops work
    last = model_embeddings(adapter, random_images(4), CAPTIONS, layers=[-1], batch_size=4)
    assert last["layers"] == [2] and last["image"].shape == (1, 4, HIDDEN)
    torch.testing.assert_close(last["image"][0], embeddings["image"][2])
    torch.testing.assert_close(last["text"][0], embeddings["text"][2])


def test_model_embeddings_do_not_depend_on_batching(adapter, embeddings):
    # Captions of different lengths are left-padded together; one at a time there is no padding.
    one_by_one = model_embeddings(adapter, random_images(4), CAPTIONS, batch_size=1)
    torch.testing.assert_close(one_by_one["text"], embeddings["text"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one_by_one["image"], embeddings["image"], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_layer_zero_is_the_mean_projector_output_and_the_mean_token_embedding(adapter, embeddings):
    images = random_images(4)
    pixels = adapter.encode(Batch(images=images, prompts=["describe the image ."] * 4)).pixel_values
    config = adapter.config
    assert config.vision_feature_select_strategy == "default"  # so the CLS feature is dropped below
    patches = adapter.vision_tower(pixels, output_hidden_states=True).hidden_states[config.vision_feature_layer][:, 1:]
    expected_image = adapter.projector(patches).mean(dim=1)  # (4, D)
    torch.testing.assert_close(embeddings["image"][0], expected_image, atol=1e-5, rtol=1e-5)

    table = adapter.model.get_input_embeddings()
    for i, text in enumerate(CAPTIONS):
        ids = adapter.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]  # no BOS
        torch.testing.assert_close(embeddings["text"][0, i], table(ids).mean(dim=0), atol=1e-6, rtol=1e-6)


def test_zeroed_projector_makes_every_image_look_the_same(checkpoint):
    adapter = LlavaAdapter.load(checkpoint, device="cpu")  # a private copy to break
    with torch.no_grad():
        for p in adapter.projector.parameters():
            p.zero_()
    emb = model_embeddings(adapter, random_images(4, seed=7), CAPTIONS, batch_size=4)
    # Layer 0 holds the projector output at the image tokens: exactly zero for every image.
    assert torch.equal(emb["image"][0], torch.zeros(4, HIDDEN))
    # Every image token then sees the same inputs, so every layer is the same across images.
    for layer in emb["image"]:
        torch.testing.assert_close(layer, layer[:1].expand_as(layer), atol=1e-6, rtol=1e-6)
    # Identical image embeddings are no closer to their own caption than to any other: margin 0.
    profile = alignment_profile(adapter, random_images(4, seed=7), CAPTIONS, k=2, batch_size=4)
    assert profile["cosine_margin"] == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)


def test_alignment_profile_reports_every_layer_and_summaries(adapter, embeddings):
    profile = alignment_profile(adapter, random_images(4), CAPTIONS, k=2, batch_size=2)
    assert profile["layers"] == [0, 1, 2] and (profile["n"], profile["k"]) == (4, 2)
    for name, metric in (("cosine_margin", cosine_margin), ("mutual_knn", mutual_knn), ("linear_cka", linear_cka)):
        values = profile[name]
        args = (2,) if name == "mutual_knn" else ()
        expected = [metric(embeddings["image"][l], embeddings["text"][l], *args) for l in range(3)]
        assert values == pytest.approx(expected, abs=1e-5)
        assert profile[f"{name}_last"] == values[-1]
        assert profile[f"{name}_mean"] == pytest.approx(sum(values) / 3)
    # k=2, N=4: each overlap is 0, 1 or 2 of 2, averaged over 4 items: a multiple of 1/8 in [0, 1].
    assert all(0 <= v <= 1 and (8 * v).is_integer() for v in profile["mutual_knn"])


def test_bad_model_inputs_are_rejected_before_the_model_runs():
    with pytest.raises(ValueError, match="k=4 nearest neighbours need more than 4"):
        alignment_profile(None, random_images(4), CAPTIONS, k=4)  # type: ignore[arg-type]


def test_bad_embedding_requests_name_the_problem(adapter):
    with pytest.raises(ValueError, match="2 images but 3 captions"):
        model_embeddings(adapter, random_images(2), CAPTIONS[:3])
    with pytest.raises(ValueError, match=r"captions\[1\] is ' '"):
        model_embeddings(adapter, random_images(2), ["a cat", " "])
    with pytest.raises(ValueError, match="layer 3 is not a hidden-state index"):
        model_embeddings(adapter, random_images(2), CAPTIONS[:2], layers=[3])
    with pytest.raises(ValueError, match="layers is empty"):
        model_embeddings(adapter, random_images(2), CAPTIONS[:2], layers=[])
