"""The tiny LLaVA's text and image front end: a closed word-level tokenizer and a LLaVA processor.

The vocabulary is closed: the special tokens, the chat-role words, and every word the world can
write (:func:`plugins.world.vocabulary`). Ids are fixed by that order, so the same
:class:`~plugins.world.WorldConfig` always gives the same ids:

====  ===========  ==========================================================
id    token        role
====  ===========  ==========================================================
0     ``<pad>``    padding (label -100, never predicted)
1     ``<unk>``    any word outside the vocabulary
2     ``<s>``      beginning of sequence, added by the post-processor
3     ``</s>``     end of an assistant turn; generation stops here
4     ``<image>``  image placeholder, expanded to one token per image patch
5..7  ``user``, ``assistant``, ``:``   chat-role words (LLaVA-1.5's ``USER:`` / ``ASSISTANT:``)
8..   the world's words, sorted
====  ===========  ==========================================================

(``</s>`` is deliberately not id 2: ``CLIPTextModel`` treats ``eos_token_id == 2`` as a legacy
config and pools at the *highest* id instead of at ``</s>``.)

The tokenizer is a ``tokenizers`` ``WordLevel`` model behind a ``Lowercase`` normaliser and a
``Whitespace`` pre-tokenizer, so ``"USER: <image>\\nIs there a star in the image?"`` reads as
``user : <image> is there a star in the image ?``. The chat template is LLaVA-1.5's
(``USER: <image>\\n{question} ASSISTANT: {answer}</s>``), so prompts written for
``llava-hf/llava-1.5-7b-hf`` work unchanged.

Images: a ``CLIPImageProcessor`` resizes to exactly ``image_size`` × ``image_size`` (a no-op for
world images; no aspect-preserving resize, no centre crop), rescales to [0, 1] and normalises with
mean 0.5 and std 0.5 per channel, i.e. ``pixel = (uint8 / 255 - 0.5) / 0.5`` in [-1, 1]. It takes
``(H, W, 3)`` uint8 numpy arrays; Pillow is not needed.

The ``LlavaProcessor`` expands ``<image>`` to ``(image_size // patch_size) ** 2`` tokens: the
vision tower emits one token per patch plus CLS (``num_additional_image_tokens=1``) and the
``"default"`` feature-select strategy drops CLS again.

>>> from plugins.world import WorldConfig
>>> tok = build_tokenizer(WorldConfig())
>>> tok.convert_ids_to_tokens(tok("USER: <image>\\nIs there a star? ASSISTANT:").input_ids)
['<s>', 'user', ':', '<image>', 'is', 'there', 'a', 'star', '?', 'assistant', ':']
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

from plugins.world import WorldConfig, vocabulary

PAD, UNK, BOS, EOS, IMAGE = "<pad>", "<unk>", "<s>", "</s>", "<image>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS, IMAGE)
"""Special tokens, ids 0-4 in this order."""
ROLE_WORDS: tuple[str, ...] = ("user", "assistant", ":")
"""The chat-role words (LLaVA-1.5's ``USER:`` and ``ASSISTANT:``, lower-cased by the normaliser)."""

IMAGE_MEAN = (0.5, 0.5, 0.5)  # per-channel mean after rescaling to [0, 1]
IMAGE_STD = (0.5, 0.5, 0.5)  # per-channel std: pixels end up in [-1, 1]

# LLaVA-1.5's conversation format (as in llava-hf/llava-1.5-7b-hf), with the end of each assistant
# turn marked by </s> so multi-turn training text and the template agree token for token.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- 'USER: ' -}}"
    "{%- for part in parts if part['type'] == 'image' -%}{{- '<image>\\n' -}}{%- endfor -%}"
    "{%- for part in parts if part['type'] == 'text' -%}{{- part['text'] + ' ' -}}{%- endfor -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- 'ASSISTANT: ' -}}"
    "{%- for part in parts if part['type'] == 'text' -%}{{- part['text'] -}}{%- endfor -%}"
    "{{- eos_token -}}"
    "{%- else -%}"
    "{{- raise_exception('role ' + message['role'] + ' is not supported: use user and assistant') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)


def build_vocab(world: WorldConfig) -> dict[str, int]:
    """Token -> id: special tokens, role words, then the world's words (see the module table).

    >>> v = build_vocab(WorldConfig())
    >>> v["<pad>"], v["</s>"], v["<image>"], v["user"], len(v)
    (0, 3, 4, 5, 66)
    """
    words = list(SPECIAL_TOKENS) + list(ROLE_WORDS)
    clash = sorted(set(words) & set(vocabulary(world)))
    if clash:
        raise ValueError(f"world words {clash} collide with special or role tokens; rename them in the WorldConfig")
    words += vocabulary(world)
    return {w: i for i, w in enumerate(words)}


def build_tokenizer(world: WorldConfig) -> PreTrainedTokenizerFast:
    """The closed word-level tokenizer of ``world`` (adds ``<s>`` in front of every encoded text)."""
    vocab = build_vocab(world)
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()  # words and runs of punctuation: "star?" -> star, ?
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    # No decoder: tokenizers then joins tokens with single spaces, the world's own text format.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        extra_special_tokens={"image_token": IMAGE}, chat_template=CHAT_TEMPLATE,
        padding_side="left",  # generation appends on the right, so batches pad on the left
        model_max_length=512,
    )
    return tokenizer


def build_image_processor(image_size: int) -> CLIPImageProcessor:
    """A ``CLIPImageProcessor`` for square ``image_size`` px RGB images (see the module docstring)."""
    side = {"height": image_size, "width": image_size}
    return CLIPImageProcessor(
        do_resize=True, size=side,  # exact square resize: a no-op for world images
        do_center_crop=False, crop_size=side,  # crop_size only tells LlavaProcessor the final size
        do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD),
        do_convert_rgb=True,
    )


def build_processor(world: WorldConfig, patch_size: int) -> LlavaProcessor:
    """The ``LlavaProcessor`` of the tiny LLaVA: tokenizer, image processor, image-token count.

    >>> proc = build_processor(WorldConfig(), patch_size=8)
    >>> num_image_tokens(64, 8), proc.patch_size, proc.num_additional_image_tokens
    (64, 8, 1)
    """
    if world.image_size % patch_size:
        raise ValueError(f"image_size={world.image_size} is not a multiple of patch_size={patch_size}")
    return LlavaProcessor(
        image_processor=build_image_processor(world.image_size),
        tokenizer=build_tokenizer(world),
        patch_size=patch_size,
        vision_feature_select_strategy="default",  # drop CLS: the LM sees patch tokens only
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=CHAT_TEMPLATE,
    )


def num_image_tokens(image_size: int, patch_size: int) -> int:
    """Image tokens per image in the LM's input: one per patch (CLS is dropped)."""
    return (image_size // patch_size) ** 2


def pixel_values(images: np.ndarray) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float32, exactly what the image processor returns.

    Training uses this instead of the processor for speed; a test checks both agree.
    """
    x = images.astype(np.float32) / 255.0  # (N, H, W, 3) in [0, 1]
    x = (x - np.float32(IMAGE_MEAN[0])) / np.float32(IMAGE_STD[0])  # (N, H, W, 3) in [-1, 1]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, 3, H, W)


class WordEncoder:
    """Fast id lookup for the world's own texts (already lower-case, space-separated).

    Equivalent to the tokenizer on such texts without the added ``<s>`` (a test checks it);
    it exists because training builds hundreds of thousands of short sequences.

    >>> enc = WordEncoder(build_vocab(WorldConfig()))
    >>> enc("is there a star ?") == enc.ids(["is", "there", "a", "star", "?"])
    True
    """

    def __init__(self, vocab: dict[str, int]):
        self.vocab = vocab
        self.pad_id, self.unk_id, self.bos_id, self.eos_id, self.image_id = (vocab[t] for t in SPECIAL_TOKENS)

    def ids(self, words: Iterable[str]) -> list[int]:
        return [self.vocab.get(w, self.unk_id) for w in words]

    def __call__(self, text: str) -> list[int]:
        return self.ids(text.split())

    def user_turn(self, text: str, n_image_tokens: int = 0) -> list[int]:
        """``USER: [<image> * n] text ASSISTANT:`` (as the chat template renders it)."""
        return self.ids(["user", ":"]) + [self.image_id] * n_image_tokens + self(text) + self.ids(["assistant", ":"])

    def decode(self, ids: Sequence[int]) -> str:
        inverse = {i: w for w, i in self.vocab.items()}
        return " ".join(inverse[int(i)] for i in ids)
