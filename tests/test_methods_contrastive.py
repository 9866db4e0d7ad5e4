"""The contrastive decoding family (VCD, ICD, M3ID, RITUAL, PAI, SID) and its two execution paths."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from plugins.methods.contrastive import ContrastiveConfig, ContrastiveMethod, plausible
from plugins.methods.pai import amplify_image_attention
from plugins.methods.ritual import TRANSFORMS, random_transform
from plugins.methods.sid import hidden_image_tokens
from plugins.models.batch import Batch
from plugins.models.noise import add_diffusion_noise, diffusion_alpha_bar
from plugins.registry import create_method, list_methods
from tests.tiny_llava import language_model_passes, pope_style_batch, random_images

CONTRASTIVE = ["icd", "m3id", "pai", "ritual", "sid", "vcd"]
NEG = float("-inf")


@pytest.fixture(scope="module")
def batch():
    return Batch(images=random_images(5, seed=3), prompts=["is there a cat ?", "what color ?", "describe the image .",
                                                           "is the dog left of the cat ?", "a b c"], seed=7)


def all_hooks(adapter):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in adapter.model.modules())


def test_the_family_is_registered():
    assert set(CONTRASTIVE) <= set(list_methods())
    assert all(isinstance(create_method(name), ContrastiveMethod) for name in CONTRASTIVE)


# ---------------------------------------------------------------- formulas on hand-computed tensors

def test_plausibility_cut_keeps_tokens_within_beta_of_the_best():
    logits = torch.tensor([[0.0, math.log(0.5), math.log(0.05)], [1.0, 1.0, -9.0]])
    assert plausible(logits, 0.1).tolist() == [[True, True, False], [True, True, False]]
    assert plausible(logits, 0.0).all()
    assert plausible(logits, 0.6).tolist() == [[True, False, False], [True, True, False]]


def test_vcd_formula():
    l, noised = torch.tensor([[2.0, 1.5, -4.0]]), torch.tensor([[2.0, 0.5, 5.0]])
    # (1 + 1)·l − 1·l': [2, 2.5, −13]; the third token is below log(0.1) + 2 and is cut
    assert create_method("vcd").scores(l, noised, 0).tolist() == [[2.0, 2.5, NEG]]
    assert create_method("vcd", {"alpha": 0.5}).scores(l, noised, 3).tolist() == [[2.0, 2.0, NEG]]


def test_icd_formula():
    l, disturbed = torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, -1.0]])  # cut at log(0.1) + 1 = −1.30
    assert create_method("icd").scores(l, disturbed, 0).tolist() == [[-1.0, NEG]]
    assert create_method("icd", {"beta": 0.0}).scores(l, disturbed, 0).tolist() == [[-1.0, -3.0]]


def test_m3id_weight_grows_with_the_step():
    m3id = create_method("m3id", {"beta": 0.0})
    l, text_only = torch.tensor([[1.0, 0.0]]), torch.tensor([[3.0, -2.0]])
    assert m3id.scores(l, text_only, 0).tolist() == [[1.0, 0.0]]  # γ_0 = 1
    w = (1 - math.exp(-0.02 * 50)) / math.exp(-0.02 * 50)  # 1.718...
    assert torch.allclose(m3id.scores(l, text_only, 50), torch.tensor([[1.0 - 2 * w, 0.0 + 2 * w]]))


def test_ritual_formula_adds_the_transformed_view():
    l, view = torch.tensor([[1.0, 0.5, -6.0]]), torch.tensor([[0.0, 1.0, 4.0]])
    assert create_method("ritual").scores(l, view, 0).tolist() == [[1.0, 3.5, NEG]]


def test_pai_guidance_works_on_log_probabilities():
    pai = create_method("pai", {"gamma": 2.0})
    l, text_only = torch.tensor([[0.0, 0.0, -9.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    ls, lu = torch.log_softmax(l, -1), torch.log_softmax(text_only, -1)
    expected = 2 * (ls - lu) + lu
    expected[0, 2] = NEG  # p = e^-9 / (2 + e^-9) is below 0.1 of the best
    assert torch.allclose(pai.scores(l, text_only, 0), expected)


def test_pai_amplifies_only_the_last_query_on_image_tokens():
    scores = torch.tensor([[[[1.0, 2.0, -3.0], [-1.0, -2.0, 4.0]]]])  # (B=1, H=1, Q=2, K=3)
    out = amplify_image_attention(scores, torch.tensor([[False, True, True]]), 0.2)
    assert torch.allclose(out, torch.tensor([[[[1.0, 2.0, -3.0], [-1.0, -1.6, 4.8]]]]))


def test_sid_hides_all_but_the_least_attended_image_tokens():
    probs = torch.zeros(2, 2, 1, 6)  # (B, H, Q, K); image tokens at keys 1..4
    probs[0, :, 0] = torch.tensor([0.5, 0.1, 0.05, 0.2, 0.15, 0.0])  # keep the two lowest: keys 2 and 1
    probs[1, 0, 0] = torch.tensor([0.1, 0.1, 0.4, 0.1, 0.2, 0.1])
    probs[1, 1, 0] = torch.tensor([0.1, 0.3, 0.1, 0.1, 0.4, 0.0])  # head mean 0.2, 0.25, 0.1, 0.3: keep 3 and 1
    image = torch.tensor([[False, True, True, True, True, False]] * 2)
    hidden = hidden_image_tokens(probs, image, keep_fraction=0.5)
    assert hidden.tolist() == [[False, False, False, True, True, False], [False, False, True, False, True, False]]
    assert not hidden_image_tokens(probs, image, keep_fraction=1.0).any()
    assert hidden_image_tokens(probs, image, keep_fraction=0.01).sum(dim=1).tolist() == [3, 3]  # keeps at least one


def test_vcd_noise_follows_the_official_schedule():
    # sigmoid schedule of VCD's vcd_add_noise.py: β from 1e-5 to 5e-3 over 1,000 steps
    betas = [1e-5 + (5e-3 - 1e-5) / (1 + math.exp(-x)) for x in np.linspace(-6, 6, 1000)]
    assert diffusion_alpha_bar(500) == pytest.approx(np.prod([1 - b for b in betas[:501]]), rel=1e-5)
    pixels = torch.ones(2, 3, 4, 4)
    noised = add_diffusion_noise(pixels, 500, seeds=[1, 2])
    assert torch.equal(noised[0], add_diffusion_noise(pixels[:1], 500, seeds=[1])[0])  # per-image seeds
    assert not torch.equal(noised[0], noised[1])
    big = add_diffusion_noise(torch.zeros(1, 3, 64, 64), 500, seeds=[0])
    assert big.std().item() == pytest.approx((1 - diffusion_alpha_bar(500)) ** 0.5, rel=0.05)
    with pytest.raises(ValueError, match="one per image"):
        add_diffusion_noise(pixels, 500, seeds=[1])


def test_ritual_transforms_are_seeded_and_cover_the_official_six():
    image = random_images(1, seed=1)[0]
    seen = {}
    for seed in range(60):
        name, out = random_transform(image, np.random.default_rng(seed))
        assert out.shape == image.shape and out.dtype == np.uint8
        seen[name] = out
        again = random_transform(image, np.random.default_rng(seed))
        assert again[0] == name and np.array_equal(again[1], out)
    assert set(seen) == set(TRANSFORMS)
    assert np.array_equal(seen["horizontal flip"], image[:, ::-1])
    assert np.array_equal(seen["vertical flip"], image[::-1])
    assert not np.array_equal(seen["gaussian blur"], image)


# ---------------------------------------------------------------- behaviour on a model

class SelfContrast(ContrastiveMethod):
    """Contrast with an identical stream: (1+α)·l − α·l = l, so the answers must be plain greedy.

    Any error in the contrast stream's cache, positions, padding or row pairing would make
    l' differ from l, and with α = 5 change the answers.
    """

    class Config(ContrastiveConfig):
        alpha: float = 5.0  # large, so that a wrong contrast stream shows

    def contrast_inputs(self, model, batch):
        return batch

    def combine(self, logits, contrast, step):
        return (1 + self.config.alpha) * logits - self.config.alpha * contrast


@pytest.mark.parametrize("joint", [True, False])
def test_an_identical_contrast_stream_gives_plain_greedy(adapter, batch, joint):
    method = SelfContrast()
    method.joint_pass = joint
    assert adapter.generate(batch, max_new_tokens=8, method=method) == adapter.generate(batch, max_new_tokens=8)


@pytest.mark.parametrize("name,off", [("vcd", {"alpha": 0}), ("icd", {"alpha": 0}), ("ritual", {"alpha": 0}),
                                      ("m3id", {"lam": 0}), ("pai", {"alpha": 0, "gamma": 1}), ("sid", {"alpha": 0})])
def test_zero_weight_is_plain_greedy(adapter, batch, name, off):
    method = create_method(name, off)
    assert not method.active()
    assert adapter.generate(batch, max_new_tokens=8, method=method) == adapter.generate(batch, max_new_tokens=8)


@pytest.mark.parametrize("joint", [True, False])
def test_an_sid_stream_hiding_nothing_gives_plain_greedy(adapter, batch, joint):
    """keep_fraction = 1: the edited attention path computes the same stream, so SID = greedy."""
    method = create_method("sid", {"keep_fraction": 1.0, "alpha": 3.0})
    method.joint_pass = joint
    assert adapter.generate(batch, max_new_tokens=8, method=method) == adapter.generate(batch, max_new_tokens=8)


def test_pai_amplification_alone_changes_the_logits(adapter, batch):
    """With guidance off (γ = 1) PAI's attention edit alone must change the first-token logits."""
    from plugins.methods.attention import AttentionEdit

    method = create_method("pai", {"alpha": 5.0, "gamma": 1.0, "start_layer": 0})  # the test model has 2 layers
    plain = adapter.next_token_logits(batch)
    with method.attention_edit(adapter, len(batch), joint=False):
        edited = adapter.next_token_logits(batch)
    assert not torch.allclose(plain, edited, atol=1e-4)
    with AttentionEdit(adapter, set(), before=None):  # an edit touching no layer changes nothing
        assert torch.allclose(adapter.next_token_logits(batch), plain, atol=1e-5)


def test_attention_edits_see_the_prompt_image_tokens_at_every_decoding_step(adapter, batch):
    """The image positions found at the prompt pass stay in force while later tokens are decoded.

    A decoding step runs one new token on the key/value cache; if the edit mistook it for a new
    prompt (the cache's keyword was renamed in transformers 5.24) it would see no image token
    after the first step, and PAI's or SID's edits would silently stop after one token.
    """
    from plugins.methods.attention import AttentionEdit

    per_row = [len(p) for p in adapter.encode(batch).image_token_positions()]
    seen: list[list[int]] = []
    with AttentionEdit(adapter, {0}, after=lambda layer, probs, image: seen.append(image.sum(dim=1).tolist())):
        adapter.generate(batch, max_new_tokens=4, method=create_method("baseline"))
    assert len(seen) >= 2, "decoding stopped after the prompt pass: the test needs several steps"
    assert all(counts == per_row for counts in seen), seen


@pytest.mark.parametrize("name", CONTRASTIVE)
def test_joint_and_separate_passes_give_identical_answers(adapter, batch, name):
    method = create_method(name, {"lam": 0.5} if name == "m3id" else None)  # M3ID: a visible weight at step 1
    answers = {}
    for joint in (True, False):
        method.joint_pass = joint
        answers[joint] = adapter.generate(batch, max_new_tokens=8, method=method, batch_size=3)
    assert answers[True] == answers[False]


@pytest.mark.parametrize("name", CONTRASTIVE)
def test_shared_prompt_prefixes_leave_the_answers_unchanged(adapter, name):
    """POPE-style rows (three questions per image): with a separate contrast pass the main stream
    encodes one prefix per image (2 rows), unless an attention edit reads its rows (PAI); so does a
    contrast stream with an image (ICD; VCD and RITUAL, whose noise and views are drawn per image),
    unless an edit reads its rows (SID); a text-only one (M3ID, PAI) one prefix for all six. Answers
    are the joint pass's and each row's alone."""
    batch = pope_style_batch()
    method = create_method(name, {"lam": 0.5} if name == "m3id" else None)
    method.joint_pass = False
    with language_model_passes(adapter) as passes:
        separate = adapter.generate(batch, max_new_tokens=8, method=method, batch_size=len(batch))
    rows = [r for r, _ in passes]
    method.joint_pass = True
    joint = adapter.generate(batch, max_new_tokens=8, method=method, batch_size=len(batch))
    alone = [adapter.generate(batch[i], max_new_tokens=8, method=method)[0] for i in range(len(batch))]
    assert separate == joint == alone
    assert rows.count(2) == (name != "pai") + (name in {"icd", "vcd", "ritual"}), rows
    assert (1 in rows) == (name in {"m3id", "pai"}), rows


@pytest.mark.parametrize("name", CONTRASTIVE)
def test_the_model_is_unchanged_afterwards(adapter, batch, name):
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    hooks = all_hooks(adapter)
    implementation = adapter.model.config.text_config._attn_implementation
    for joint in (True, False):
        method = create_method(name)
        method.joint_pass = joint
        adapter.generate(batch, max_new_tokens=3, method=method)
    assert all_hooks(adapter) == hooks
    assert adapter.model.config.text_config._attn_implementation == implementation
    after = adapter.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_each_method_moves_the_first_token_scores_of_the_default_model():
    """On the committed world model the contrast stream really differs from the main one (not a no-op)."""
    from plugins.models.adapter import LlavaAdapter
    from plugins.models.lookup import TINY_LLAVA_CHECKPOINT
    from plugins.world import WorldConfig
    from plugins.world.render import render
    from plugins.world.scene import SceneSampler

    model = LlavaAdapter.load(TINY_LLAVA_CHECKPOINT, device="cpu")
    sampler = SceneSampler(WorldConfig())
    images = [render(sampler.sample_split("test", i), WorldConfig()) for i in range(4)]
    batch = Batch(images=images, prompts=["is there a red circle in the image ?"] * 4, seed=0)
    logits = model.next_token_logits(batch)  # (4, V)
    for name in ("vcd", "icd", "ritual", "pai", "sid"):
        method = create_method(name, {"beta": 0.0})
        method.joint_pass = False
        method.transform_inputs(model, batch)
        with method.hooks(model, batch):
            scores = method.logits_processors(model, batch)[0](None, logits)
        assert scores.shape == logits.shape and torch.isfinite(scores).all(), name
        assert not torch.allclose(scores, logits, atol=1e-3), f"{name} left the scores unchanged"


def test_a_method_needing_images_says_so(adapter):
    text_only = Batch(images=[None], prompts=["is there a cat ?"])
    with pytest.raises(ValueError, match="VCD needs an image for every item"):
        adapter.generate(text_only, max_new_tokens=2, method=create_method("vcd"))


def test_code_a_method_calls_without_inheriting_enters_its_fingerprint():
    """PAI and SID run the attention edit module; it is in their code identity, found from their imports."""
    from plugins.identity import code_identity

    for name in ("pai", "sid"):
        assert "plugins.methods.attention" in code_identity([type(create_method(name)).__module__])
    assert "plugins.methods.attention" not in code_identity(["plugins.methods.vcd"])
    assert "plugins.world.scene" in code_identity(["plugins.methods.vti"])  # its demo set comes from the world's code
