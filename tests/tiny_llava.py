"""A tiny random-weight LLaVA checkpoint for tests: builds a normal Hugging Face directory in seconds.

The model is a real ``LlavaForConditionalGeneration`` (CLIP vision tower → 2-layer MLP projector
→ Llama LM) with toy sizes, saved with ``save_pretrained`` beside a matching ``LlavaProcessor``
(a word-level tokenizer made with the ``tokenizers`` library and a 32-pixel CLIP image
processor). The processor expands ``<image>`` into exactly as many tokens as the vision tower
yields patch features, so nothing needs special-casing downstream:

    image 32 px / patch 8 px → 4 × 4 = 16 patches (+1 CLS, dropped by the "default" strategy)

Reuse it from any test::

    from tests.tiny_llava import build_tiny_llava, random_images
    path = build_tiny_llava(tmp_path / "tiny")

>>> import tempfile, json, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = build_tiny_llava(pathlib.Path(tmp) / "tiny")
...     json.loads((path / "config.json").read_text())["image_seq_length"]
16
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

IMAGE_SIZE = 32  # pixels, square
PATCH_SIZE = 8  # pixels per patch side
NUM_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 16: the number of image tokens per image
HIDDEN = 32  # width of both towers

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
WORDS = [
    "USER", "ASSISTANT", "SYSTEM", ":", "?", ".", ",", "!",
    "is", "there", "a", "an", "the", "in", "on", "of", "and", "this", "what", "describe",
    "image", "picture", "yes", "no", "not", "cat", "dog", "red", "blue", "green", "circle",
    "square", "triangle", "left", "right", "above", "below", "big", "small", "object", "color",
    "shape", "how", "many", "are", "you", "confused", "detector", "answer", "briefly", "one", "two",
]
VOCAB = SPECIAL_TOKENS + WORDS  # token id = position in this list

# A chat template in the style of llava-hf/llava-1.5-7b-hf's, written for this tokenizer.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'].upper() + ': ' }}"
    "{% for item in message['content'] if item['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for item in message['content'] if item['type'] == 'text' %}{{ item['text'] + ' ' }}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def build_tiny_tokenizer():
    """A word-level ``PreTrainedTokenizerFast`` over :data:`VOCAB`; adds ``<s>`` in front like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(VOCAB)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces, glues punctuation
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"}, padding_side="left")
    return tokenizer


def build_tiny_llava(path: str | Path, *, seed: int = 0, chat_template: bool | str = False,
                     generation_overrides: dict | None = None) -> Path:
    """Write a tiny random-weight LLaVA checkpoint (model + processor) to ``path`` and return it.

    ``seed`` fixes the weights; ``chat_template=True`` gives the processor :data:`CHAT_TEMPLATE`
    (a string gives that template; default none, so the adapter falls back to the plain
    ``USER: <image>\\n{q} ASSISTANT:`` format); ``generation_overrides`` are written into
    ``generation_config.json`` (e.g. ``{"repetition_penalty": 1.5}``).
    """
    import torch
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor)
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        from transformers import CLIPImageProcessor
    else:  # the PIL backend; the saved file names CLIPImageProcessor either way
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor

    path = Path(path)
    tokenizer = build_tiny_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    vision = CLIPVisionConfig(
        hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=HIDDEN)
    text = LlamaConfig(
        hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(VOCAB), max_position_embeddings=256,
        pad_token_id=ids["<pad>"], bos_token_id=ids["<s>"], eos_token_id=ids["</s>"])
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=ids["<image>"],
        image_seq_length=NUM_PATCHES, vision_feature_select_strategy="default", vision_feature_layer=-2)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = ids["<pad>"]
    model.generation_config.bos_token_id = ids["<s>"]
    model.generation_config.eos_token_id = ids["</s>"]
    for key, value in (generation_overrides or {}).items():
        setattr(model.generation_config, key, value)
    model.save_pretrained(path)

    if isinstance(chat_template, bool):
        chat_template = CHAT_TEMPLATE if chat_template else None
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=chat_template)
    processor.save_pretrained(path)
    return path


def random_images(n: int, *, seed: int = 0, size: int = IMAGE_SIZE) -> list[np.ndarray]:
    """``n`` seeded random uint8 images, each (size, size, 3)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for _ in range(n)]


def pope_style_batch(seed: int = 11) -> "Batch":
    """Three same-length questions on each of two images: rows that share an image and a prompt prefix."""
    from plugins.models.batch import Batch

    first, second = random_images(2, seed=seed)
    return Batch(images=[first] * 3 + [second] * 3, prompts=["is there a cat ?", "is there a dog ?", "is there a circle ?"] * 2,
                 seed=7)


@contextlib.contextmanager
def language_model_passes(adapter) -> Iterator[list[tuple[int, int]]]:
    """Within the block, the list collects (rows, tokens) of every pass of the language model."""
    passes: list[tuple[int, int]] = []
    handle = adapter.model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: passes.append(tuple(kwargs["inputs_embeds"].shape[:2])), with_kwargs=True)
    try:
        yield passes
    finally:
        handle.remove()
