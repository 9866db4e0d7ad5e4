"""LlavaAdapter on a tiny random-weight LLaVA: offline loading, batch invariance, image tokens, methods, hooks.

Nothing here may touch the network: every test runs with HF_HUB_OFFLINE=1 and with sockets
that refuse to connect.
"""
from __future__ import annotations

import contextlib
import hashlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub read it
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import shutil  # noqa: E402
import socket  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")

from plugins.methods.base import Method, MethodConfig  # noqa: E402
from plugins.models.adapter import LlavaAdapter  # noqa: E402
from plugins.models.batch import Batch  # noqa: E402
from plugins.models.lookup import CheckpointNotFoundError, resolve_checkpoint  # noqa: E402
from plugins.models.device import resolve_device, resolve_dtype  # noqa: E402
from plugins.models.prefix import shared_prefix_plan  # noqa: E402
from plugins.models.hooks import ForwardHooks  # noqa: E402
from plugins.registry import create_method, list_methods  # noqa: E402
from tests.tiny_llava import IMAGE_SIZE, NUM_PATCHES, PATCH_SIZE, VOCAB, build_tiny_llava, language_model_passes, random_images  # noqa: E402

# Prompts of different token lengths, so batching needs real (left) padding.
PROMPTS = [
    "is there a cat ?",
    "what",
    "is there a red circle on the left of the big square ?",
    "how many dogs are in this picture ?",
    "describe the image",
]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Offline mode, and a network that fails loudly if anything tries to use it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"a test tried to open a network connection: {args!r}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def batch() -> Batch:
    return Batch(images=random_images(len(PROMPTS), seed=1), prompts=PROMPTS)


def all_hooks(adapter: LlavaAdapter) -> set[tuple[str, str, int]]:
    """Every forward (pre-)hook on the model, by module name, kind and handle id.

    transformers installs a few output-capturing hooks of its own on first use; they stay, so
    tests compare against the set taken after a plain warm-up run rather than against nothing.
    """
    return {(name, kind, hook_id) for name, m in adapter.model.named_modules()
            for kind, table in (("forward", m._forward_hooks), ("pre", m._forward_pre_hooks)) for hook_id in table}


@pytest.fixture
def hooks_before(adapter, batch) -> set:
    adapter.generate(batch[:1], max_new_tokens=1)  # warm-up: lets transformers install its own hooks
    return all_hooks(adapter)


# ---------------------------------------------------------------- loading

def test_load_from_directory(adapter, checkpoint):
    assert adapter.device.type == "cpu" and adapter.dtype == torch.float32  # dtype auto on CPU
    assert adapter.source == checkpoint.resolve()
    assert adapter.tokenizer.padding_side == "left"
    assert adapter.image_token_id == VOCAB.index("<image>")
    assert not adapter.model.training


def test_missing_directory_error_says_where_it_looked(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(CheckpointNotFoundError) as info:
        LlavaAdapter.load(missing, device="cpu")
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointNotFoundError, match=r"empty is a directory but not a checkpoint: it has no config.json"):
        LlavaAdapter.load(empty, device="cpu")


def test_not_a_llava_checkpoint_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match=r"model_type is 'llama', expected 'llava'"):
        LlavaAdapter.load(tmp_path, device="cpu")


def make_hub_cache(cache: Path, repo_id: str, checkpoint: Path, commit: str = "a" * 40) -> Path:
    """The layout huggingface_hub writes: refs/main → snapshots/<commit>/ with weights symlinked to LFS blobs."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for path in checkpoint.iterdir():
        if path.suffix == ".safetensors":  # an LFS file: the blob is named by its SHA-256
            blob = repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
            shutil.copy(path, blob)
            (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
        else:
            shutil.copy(path, snapshot / path.name)
    return snapshot


def test_hub_id_resolves_from_the_local_cache_only(tmp_path, monkeypatch, checkpoint, adapter, batch):
    cache = tmp_path / "hf-cache"
    snapshot = make_hub_cache(cache, "alignscope/tiny-llava", checkpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)  # so "alignscope/tiny-llava" is not also a relative directory
    assert resolve_checkpoint("alignscope/tiny-llava") == snapshot
    cached = LlavaAdapter.load("alignscope/tiny-llava", device="cpu")
    assert cached.source == snapshot
    assert cached.generate(batch, max_new_tokens=4) == adapter.generate(batch, max_new_tokens=4)
    # The LFS blob name stands in for the weights' hash, and gives the same answer as reading them.
    assert cached.checkpoint_hash() == adapter.checkpoint_hash()


def test_missing_hub_id_names_the_cache_path_and_how_to_get_it(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointNotFoundError) as info:
        LlavaAdapter.load("llava-hf/llava-1.5-7b-hf", device="cpu")
    message = str(info.value)
    assert str(cache / "models--llava-hf--llava-1.5-7b-hf") in message and "no such folder" in message
    assert str(tmp_path / "llava-hf" / "llava-1.5-7b-hf") in message  # the directory it also checked
    assert "hf download llava-hf/llava-1.5-7b-hf" in message and "never downloads" in message


def test_missing_revision_lists_the_refs_present(tmp_path, monkeypatch, checkpoint):
    cache = tmp_path / "hf-cache"
    make_hub_cache(cache, "alignscope/tiny-llava", checkpoint)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match=r"no ref 'v2'; refs present: main"):
        resolve_checkpoint("alignscope/tiny-llava", revision="v2", cache_dir=cache)


def test_device_and_dtype_resolution():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("fp16") == torch.float16 and resolve_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(ValueError, match=r"dtype 'bfloat61' is not known; did you mean 'bfloat16'\?"):
        resolve_dtype("bfloat61")
    with pytest.raises(ValueError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no GPU.*--device cpu"):
            resolve_device("cuda")


# ---------------------------------------------------------------- batching

def test_batched_greedy_equals_one_at_a_time(adapter, batch):
    encoded = adapter.encode(batch)
    lengths = encoded.attention_mask.sum(1)
    assert len(set(lengths.tolist())) > 2, "prompts must differ in length for this test to mean anything"
    assert (encoded.attention_mask[:, 0] == 0).any() and (encoded.attention_mask[:, -1] == 1).all()  # left padding
    alone = [adapter.generate(batch[i], max_new_tokens=8)[0] for i in range(len(batch))]
    assert adapter.generate(batch, max_new_tokens=8, batch_size=16) == alone
    assert adapter.generate(batch, max_new_tokens=8, batch_size=2) == alone
    assert all(alone) and len(set(alone)) > 1  # non-empty and not trivially identical


def test_a_repeated_image_is_encoded_once_with_the_same_answers(adapter, batch):
    """Several questions on one image: the vision tower sees each distinct image once, answers are as alone."""
    repeated = Batch(images=[batch.images[0]] * 3 + [batch.images[1]] * 2, prompts=list(batch.prompts[:5]))
    seen = []
    handle = adapter.vision_tower.embeddings.register_forward_hook(
        lambda module, args, output: seen.append(len(output)))
    try:
        together = adapter.generate(repeated, max_new_tokens=8, batch_size=5)
    finally:
        handle.remove()
    assert seen == [2]
    assert together == [adapter.generate(repeated[i], max_new_tokens=8)[0] for i in range(5)]


def test_a_repeated_image_is_processed_once_with_the_same_pixels(adapter, batch):
    """The image processor sees each distinct image of a batch once; every item still gets its pixels."""
    repeated = Batch(images=[batch.images[0]] * 3 + [batch.images[1], batch.images[0].copy()],
                     prompts=list(batch.prompts[:5]))
    inner, calls = adapter.processor.image_processor, []

    class Spy:
        def __getattr__(self, name):
            return getattr(inner, name)

        def __call__(self, images, **kwargs):
            calls.append(len(images))
            return inner(images, **kwargs)

    adapter.processor.image_processor = Spy()
    try:
        encoded = adapter.encode(repeated)
    finally:
        adapter.processor.image_processor = inner
    assert calls == [2]  # two distinct images (a copy counts as the same image)
    alone = torch.cat([adapter.encode(repeated[i]).pixel_values for i in range(5)])
    assert torch.equal(encoded.pixel_values, alone)
    assert adapter.processor.image_processor is inner  # the stand-in is gone after encoding


def test_a_shared_prompt_prefix_is_encoded_once_with_the_same_answers(adapter, batch):
    """POPE-style questions (same image, prompts that differ at the end) and padded rows of their own:
    the prompt pass encodes each shared prefix once, and every answer is what the row gets alone."""
    images = [batch.images[0]] * 3 + [batch.images[1]] * 2 + [batch.images[2], None]
    prompts = ["is there a cat ?", "is there a dog ?", "is there a circle ?",  # same length: same padding
               "is there a cat ?", "is the square red ?", "is the cat red ?", "is there a cat ?"]
    mixed = Batch(images=images, prompts=prompts)
    with language_model_passes(adapter) as calls:
        shared = adapter.generate(mixed, max_new_tokens=6, batch_size=len(mixed))

    class PromptPassHook(Method):  # shares_prompt_prefixes is False: the prompt pass runs whole
        pass

    plain = adapter.generate(mixed, max_new_tokens=6, batch_size=len(mixed), method=PromptPassHook())
    alone = [adapter.generate(mixed[i], max_new_tokens=6)[0] for i in range(len(mixed))]
    assert shared == plain == alone
    width = adapter.encode(mixed).prompt_length
    (groups, prefix), (rows, rest) = calls[0], calls[1]
    # The cheapest cut ends at "is": then image 0's three rows and image 1's two share a prefix (4 groups).
    assert rows == len(mixed) and groups == 4
    assert prefix + rest == width and rest == len("is there a cat ? ASSISTANT :".split()) - 1
    distinct = Batch(images=random_images(2, seed=5), prompts=["what", "describe the image"])  # padded: no shared cut
    encoded = adapter.encode(distinct)
    assert shared_prefix_plan(encoded, encoded.prompt_length - 1) is None  # nothing to share: the usual pass


def test_forward_logits_do_not_depend_on_padding(adapter, batch):
    logits = adapter.forward(batch)  # (B, T, V)
    assert logits.shape[:2] == adapter.encode(batch).input_ids.shape and logits.shape[2] == len(VOCAB)
    together = adapter.next_token_logits(batch)  # (B, V)
    for i in range(len(batch)):
        torch.testing.assert_close(adapter.next_token_logits(batch[i])[0], together[i], atol=1e-5, rtol=1e-5)


def test_text_only_items_mix_with_image_items(adapter):
    mixed = Batch(images=[None, *random_images(2, seed=3)], prompts=PROMPTS[:3])
    encoded = adapter.encode(mixed)
    assert encoded.pixel_values.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert [len(p) for p in encoded.image_token_positions()] == [0, NUM_PATCHES, NUM_PATCHES]
    alone = [adapter.generate(mixed[i], max_new_tokens=6)[0] for i in range(3)]
    assert adapter.generate(mixed, max_new_tokens=6) == alone


def test_image_token_positions_match_the_vision_tower(adapter, batch):
    encoded = adapter.encode(batch)
    vision = adapter.config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    assert patches == (IMAGE_SIZE // PATCH_SIZE) ** 2 == NUM_PATCHES
    with torch.inference_mode():
        features = adapter.model.get_image_features(pixel_values=encoded.pixel_values).pooler_output
    assert [f.shape[0] for f in features] == [patches] * len(batch)  # CLS dropped: one feature per patch
    for row, positions in enumerate(encoded.image_token_positions()):
        assert len(positions) == patches
        assert (encoded.input_ids[row, positions] == adapter.image_token_id).all()
        assert (positions.diff() == 1).all()  # one contiguous block per image
    assert encoded.image_token_mask.sum().item() == patches * len(batch)


def test_chat_template_is_used_when_present(tmp_path):
    template = "SYSTEM : answer briefly . {% for m in messages %}USER: {% for c in m['content'] if c['type'] == 'image' %}<image>\n{% endfor %}{% for c in m['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %}{% endfor %} ASSISTANT:"
    chat = LlavaAdapter.load(build_tiny_llava(tmp_path / "chat", chat_template=template), device="cpu")
    assert chat.format_prompt("is there a cat ?") == "SYSTEM : answer briefly . USER: <image>\nis there a cat ? ASSISTANT:"
    plain = LlavaAdapter.load(build_tiny_llava(tmp_path / "plain"), device="cpu")
    assert plain.format_prompt("is there a cat ?") == "USER: <image>\nis there a cat ? ASSISTANT:"
    assert plain.format_prompt("is there a cat ?", has_image=False) == "USER: is there a cat ? ASSISTANT:"
    with pytest.raises(ValueError, match="contains the image token"):
        plain.format_prompt("<image> is there a cat ?")


def test_tokenizer_chat_template_is_the_second_choice(checkpoint):
    adapter = LlavaAdapter.load(checkpoint, device="cpu")  # a fresh copy: the template is set on its tokenizer
    adapter.tokenizer.chat_template = "{% for m in messages %}USER : {{ m['content'] }}{% endfor %} ASSISTANT :"
    assert adapter.format_prompt("is there a cat ?") == "USER : <image>\nis there a cat ? ASSISTANT :"


def test_pil_images_give_the_same_answers_as_arrays(adapter, batch):
    image_module = pytest.importorskip("PIL.Image")
    as_pil = batch.replace(images=[image_module.fromarray(im) for im in batch.images])
    assert all(np.array_equal(a, b) for a, b in zip(as_pil.images, batch.images))  # stored as arrays
    assert adapter.generate(as_pil[:2], max_new_tokens=4) == adapter.generate(batch[:2], max_new_tokens=4)


def test_stored_generation_settings_do_not_change_greedy(tmp_path, adapter, batch):
    with pytest.warns(UserWarning, match="repetition_penalty"):
        odd = LlavaAdapter.load(build_tiny_llava(tmp_path / "odd", generation_overrides={"repetition_penalty": 3.0}),
                                device="cpu")
    assert odd.stored_generation_config.repetition_penalty == 3.0
    assert odd.generate(batch, max_new_tokens=8) == adapter.generate(batch, max_new_tokens=8)


def test_argument_errors(adapter, batch):
    with pytest.raises(ValueError, match="max_new_tokens is 0"):
        adapter.generate(batch, max_new_tokens=0)
    with pytest.raises(ValueError, match="batch_size is 0"):
        adapter.generate(batch, batch_size=0)
    with pytest.raises(TypeError, match="expected plugins.models.batch.Batch"):
        adapter.encode(["is there a cat ?"])
    with pytest.raises(TypeError, match=r"images\[0\] is an array of shape \(32, 32, 4\)"):
        Batch(images=[np.zeros((32, 32, 4), np.uint8)], prompts=["q"])
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        Batch(images=random_images(2), prompts=["q"])


# ---------------------------------------------------------------- methods

def test_baseline_through_the_registry_equals_plain_generate(adapter, batch):
    plain = adapter.generate(batch, max_new_tokens=8)
    assert adapter.generate(batch, max_new_tokens=8, method=create_method("baseline")) == plain


@pytest.mark.parametrize("name", list_methods())
def test_every_registered_method_runs_and_is_batch_invariant(adapter, batch, name, hooks_before):
    """Registry-wide smoke test: each method answers every item, the same alone as batched."""
    from plugins.methods.tuned import TunedMethod
    from tests.test_tuning_methods import TINY

    method = create_method(name)
    if isinstance(method, TunedMethod):  # a few training steps, not the default minutes
        method = create_method(name, TINY)
    batched = adapter.generate(batch, max_new_tokens=4, method=method, batch_size=16)
    assert len(batched) == len(batch) and all(isinstance(t, str) for t in batched)
    assert batched == [adapter.generate(batch[i], max_new_tokens=4, method=method)[0] for i in range(len(batch))]
    assert all_hooks(adapter) == hooks_before


def test_logits_processors_are_applied(adapter, batch):
    cat = adapter.tokenizer.convert_tokens_to_ids("cat")

    def only_cat(input_ids, scores):  # (B, L), (B, V) -> (B, V)
        forced = torch.full_like(scores, -float("inf"))
        forced[:, cat] = 0.0
        return forced

    assert adapter.generate(batch, max_new_tokens=3, logits_processors=[only_cat]) == ["cat cat cat"] * len(batch)


class Recording(Method):
    """Records the order in which the adapter calls the extension points; changes nothing else."""

    class Config(MethodConfig):
        prefix: str = "describe"  # word put in front of every question by transform_inputs

    def __init__(self, config=None):
        super().__init__(config)
        self.calls: list[tuple[str, int]] = []
        self.forward_calls = 0

    def transform_inputs(self, model, batch):
        self.calls.append(("transform_inputs", len(batch)))
        return batch.replace(prompts=[f"{self.config.prefix} {q}" for q in batch.prompts])

    def hooks(self, model, batch):
        method = self

        @contextlib.contextmanager
        def recorded():
            method.calls.append(("hooks-enter", len(batch)))
            with ForwardHooks().add(model.decoder_layers[0], method._count).add(model.vision_tower, method._count, pre=True):
                yield
            method.calls.append(("hooks-exit", len(batch)))

        return recorded()

    def _count(self, module, *args):
        self.forward_calls += 1

    def logits_processors(self, model, batch):
        self.calls.append(("logits_processors", len(batch)))
        return []

    def postprocess(self, model, batch, texts):
        self.calls.append(("postprocess", len(batch)))
        assert all(not q.startswith(self.config.prefix) for q in batch.prompts)  # sees the questions as asked
        return [t.upper() for t in texts]


def test_method_extension_points_run_in_order_per_chunk_and_hooks_are_removed(adapter, batch, hooks_before):
    method = Recording()
    three = batch[:3]
    answers = adapter.generate(three, max_new_tokens=4, method=method, batch_size=2)
    chunk = ["transform_inputs", "hooks-enter", "logits_processors", "hooks-exit", "postprocess"]
    assert method.calls == [(step, 2) for step in chunk] + [(step, 1) for step in chunk]
    assert method.forward_calls > 0  # the hooks were live during generation
    assert all_hooks(adapter) == hooks_before  # ... and are gone now
    transformed = three.replace(prompts=[f"describe {q}" for q in three.prompts])
    assert answers == [t.upper() for t in adapter.generate(transformed, max_new_tokens=4)]


def test_hooks_are_removed_when_generation_fails(adapter, batch, hooks_before):
    class Failing(Recording):
        def logits_processors(self, model, batch):
            def explode(input_ids, scores):
                raise RuntimeError("boom")
            return [explode]

    with pytest.raises(RuntimeError, match="boom"):
        adapter.generate(batch, max_new_tokens=2, method=Failing())
    assert all_hooks(adapter) == hooks_before


def test_method_returning_the_wrong_number_of_items_is_caught(adapter, batch):
    class Dropping(Method):
        """Drops an item: a bug the adapter must report."""

        def transform_inputs(self, model, batch):
            return batch[1:]

    with pytest.raises(ValueError, match=r"Dropping.transform_inputs returned a Batch of 4, expected a Batch of the same 5"):
        adapter.generate(batch, method=Dropping())


# ---------------------------------------------------------------- identity

def test_checkpoint_hash_is_stable_and_tracks_files(tmp_path, checkpoint, adapter):
    digest = adapter.checkpoint_hash()
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert adapter.checkpoint_hash() is digest  # cached
    copy = tmp_path / "copy"
    shutil.copytree(checkpoint, copy)
    (copy / "README.md").write_text("documentation does not count")
    assert LlavaAdapter.load(copy, device="cpu").checkpoint_hash() == digest
    config = (copy / "config.json").read_text()
    (copy / "config.json").write_text(config.replace('"projector_hidden_act": "gelu"', '"projector_hidden_act": "relu"'))
    assert "relu" in (copy / "config.json").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert LlavaAdapter.load(copy, device="cpu").checkpoint_hash() != digest
