"""LlavaAdapter: any Hugging Face LLaVA-style checkpoint, loaded offline, decoded greedily in batches.

The adapter wraps a ``LlavaForConditionalGeneration`` and its ``AutoProcessor`` and gives methods
and benchmarks one small surface:

* :meth:`LlavaAdapter.load` — a local directory, or a hub id found **only in the local Hugging
  Face cache** (:func:`plugins.models.lookup.resolve_checkpoint`); nothing is ever downloaded.
* :meth:`LlavaAdapter.encode` — questions → chat-formatted, **left-padded** token ids with
  attention masks and the image-token mask (where the image features go: SID, PAI and OPERA
  need those positions).
* :meth:`LlavaAdapter.generate` — batched greedy decoding that gives the same answers as running
  each item alone, with a method's four extension points applied around ``model.generate``.
* :meth:`LlavaAdapter.forward` — logits for next-token scoring.
* :meth:`LlavaAdapter.prompt_cache` — the key/value cache of the prompts (:mod:`plugins.models.prefix`).
* :meth:`LlavaAdapter.checkpoint_hash` — SHA-256 of the checkpoint's files, for the runner.

Its helpers each have a module: :mod:`~plugins.models.lookup` (lookup, hashing),
:mod:`~plugins.models.device` (device, dtype), :mod:`~plugins.models.compat` (transformers
versions), :mod:`~plugins.models.prefix` (shared prompt prefixes), :mod:`~plugins.models.images`
(each distinct image processed and encoded once), :mod:`~plugins.models.decoding` (a method's
search settings); the registered models are in :mod:`~plugins.models.zoo`.

Shapes: B items, T prompt tokens (after left padding), V vocabulary, N images (≤ B), P image
tokens per image (576 for LLaVA-1.5: 336 px / 14 px patches = 24², CLS dropped).

>>> import tempfile, numpy as np
>>> from tests.tiny_llava import build_tiny_llava, random_images
>>> with tempfile.TemporaryDirectory() as tmp:
...     adapter = LlavaAdapter.load(build_tiny_llava(tmp + "/tiny"), device="cpu")
...     batch = Batch(images=random_images(2), prompts=["is there a cat ?", "what color ?"])
...     answers = adapter.generate(batch, max_new_tokens=4)
...     encoded = adapter.encode(batch)
>>> len(answers), [len(p) for p in encoded.image_token_positions()]
(2, [16, 16])
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import torch

from plugins.models import prefix
from plugins.models.batch import Batch
from plugins.models.lookup import checkpoint_hash, read_model_type, resolve_checkpoint
from plugins.models.compat import cache_keyword
from plugins.models.decoding import COMMON, Protocol
from plugins.models.device import resolve_device, resolve_dtype
from plugins.models.images import distinct_image_features, distinct_images

if TYPE_CHECKING:
    from transformers import LogitsProcessor

    from plugins.models.intervention import Intervention

__all__ = ["LlavaAdapter", "EncodedBatch", "PLAIN_TEMPLATE"]

PLAIN_TEMPLATE = "USER: {image}\n{question} ASSISTANT:"
"""The LLaVA-1.5 conversation format, used when neither processor nor tokenizer has a chat template."""
PLAIN_TEMPLATE_TEXT_ONLY = "USER: {question} ASSISTANT:"

# Settings of a stored generation_config.json that would change *greedy* decoding; the adapter drops them.
_GREEDY_CHANGING = {
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "min_length": 0, "min_new_tokens": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "sequence_bias": None, "exponential_decay_length_penalty": None,
    "guidance_scale": None, "remove_invalid_values": False, "num_beams": 1, "do_sample": False,
}


# ---------------------------------------------------------------- encoded inputs

@dataclass(frozen=True)
class EncodedBatch:
    """A batch as the model sees it: left-padded tokens, masks, pixels, and where the image tokens are."""

    input_ids: torch.Tensor  # (B, T) long, left-padded with the pad token
    attention_mask: torch.Tensor  # (B, T) long, 0 on padding
    position_ids: torch.Tensor  # (B, T) long, counting from 0 at each item's first real token
    pixel_values: Optional[torch.Tensor]  # (N, 3, H, W) in the model dtype: items with an image, in order; None if none
    image_token_mask: torch.Tensor  # (B, T) bool, True where an image feature replaces the token
    prompts: tuple[str, ...]  # the formatted prompt strings, for debugging and provenance

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def prompt_length(self) -> int:
        """T: generated tokens start at this index of ``generate``'s output."""
        return self.input_ids.shape[1]

    def image_token_positions(self) -> list[torch.Tensor]:
        """Per item, the (P,) indices into T of its image tokens (empty for a text-only item)."""
        return [row.nonzero().flatten() for row in self.image_token_mask]

    def model_inputs(self, with_position_ids: bool = True) -> dict[str, torch.Tensor]:
        """Keyword arguments for ``LlavaForConditionalGeneration.forward`` (or ``generate``)."""
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if with_position_ids:
            inputs["position_ids"] = self.position_ids
        if self.pixel_values is not None:
            inputs["pixel_values"] = self.pixel_values
        return inputs


# ---------------------------------------------------------------- the adapter

class LlavaAdapter:
    """One loaded LLaVA-style model with its processor, on one device, in eval mode.

    ``model`` is the ``LlavaForConditionalGeneration``; ``processor`` its ``LlavaProcessor``. The
    adapter takes both over: the tokenizer is switched to left padding, and the model's
    generation config is reduced to its token ids, so that decoding is plain greedy whatever the
    checkpoint's ``generation_config.json`` says (the original stays in
    :attr:`stored_generation_config`; a warning names any setting that would have changed greedy
    output). Methods reach the layers they hook through :attr:`decoder_layers`,
    :attr:`vision_tower` and :attr:`projector`. Nothing here computes gradients.
    """

    def __init__(self, model: Any, processor: Any, *, source: Union[str, Path, None] = None):
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or getattr(processor, "image_processor", None) is None:
            raise TypeError(f"processor is a {type(processor).__name__}, expected a LLaVA processor with a tokenizer "
                            "and an image processor (AutoProcessor of a LLaVA checkpoint)")
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = tokenizer
        self.source = Path(source) if source is not None else None  # the directory the weights came from
        tokenizer.padding_side = "left"  # generated tokens must follow every prompt directly
        if tokenizer.pad_token_id is None:  # Llama tokenizers may have none; padding is masked out anyway
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self.image_token = getattr(processor, "image_token", "<image>")
        self.image_token_id = int(model.config.image_token_id)
        tokenized = tokenizer.convert_tokens_to_ids(self.image_token)
        if tokenized != self.image_token_id:
            raise ValueError(f"the processor's image token {self.image_token!r} has id {tokenized} but the model "
                             f"expects image_token_id {self.image_token_id}; processor and model do not match")
        self.stored_generation_config = model.generation_config  # kept for provenance
        self._neutralise_generation_config()
        self._checkpoint_hash: Optional[str] = None
        self._protocol: Protocol = COMMON  # the protocol of the generate call in progress
        self._prefix_pass = False

    @classmethod
    def load(cls, path_or_id: Union[str, Path], device: Union[str, torch.device] = "auto",
             dtype: Union[str, torch.dtype] = "auto", *, revision: str = "main",
             cache_dir: Union[str, Path, None] = None, attn_implementation: Optional[str] = None) -> "LlavaAdapter":
        """Load a checkpoint from a local directory or the local HF cache; never downloads.

        ``device``: auto, cpu, cuda, cuda:N. ``dtype``: auto (float32 on CPU, bfloat16/float16 on
        CUDA), float32, float16, bfloat16. ``attn_implementation``: ``"eager"`` when a method needs
        attention weights (``output_attentions``); default lets transformers choose (sdpa).
        """
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        directory = resolve_checkpoint(path_or_id, revision=revision, cache_dir=cache_dir)
        model_type = read_model_type(directory)
        if model_type != "llava":
            raise ValueError(f"{directory / 'config.json'}: model_type is {model_type!r}, expected 'llava' "
                             "(a LlavaForConditionalGeneration checkpoint such as llava-hf/llava-1.5-7b-hf)")
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a "Loading weights" bar per load would drown the runner's own bars
        try:
            model = LlavaForConditionalGeneration.from_pretrained(directory, dtype=torch_dtype, local_files_only=True,
                                                                  **extra)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        processor = AutoProcessor.from_pretrained(directory, local_files_only=True)
        return cls(model.to(torch_device), processor, source=directory)

    # ------------------------------------------------------------ properties methods use

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def decoder_layers(self) -> Any:
        """The language model's decoder layers (an ``nn.ModuleList``), e.g. for attention hooks."""
        return self.model.model.language_model.layers

    @property
    def in_prefix_pass(self) -> bool:
        """True while the adapter encodes part of a prompt that ends before the prompt's last token.

        A shared prompt prefix (:meth:`prompt_cache`) is encoded in passes of its own. A hook that
        acts on "the last position of a pass" — the answer position — must leave such a pass alone
        (ICT's shift does), so that it acts exactly where it would in one pass over the whole prompt.
        """
        return self._prefix_pass

    @contextlib.contextmanager
    def _encoding_prefix(self, ends_before_last: bool):
        """Within the block, :attr:`in_prefix_pass` is ``ends_before_last`` (for :mod:`plugins.models.prefix`)."""
        previous, self._prefix_pass = self._prefix_pass, ends_before_last
        try:
            yield
        finally:
            self._prefix_pass = previous

    @property
    def vision_tower(self) -> Any:
        return self.model.model.vision_tower

    @property
    def projector(self) -> Any:
        return self.model.model.multi_modal_projector

    @property
    def eos_token_id(self) -> Union[int, list[int]]:
        eos = self.model.generation_config.eos_token_id
        return eos if eos is not None else self.tokenizer.eos_token_id

    # ------------------------------------------------------------ prompts and encoding

    def format_prompt(self, question: str, has_image: bool = True) -> str:
        """The full prompt for one question: the checkpoint's chat template, else :data:`PLAIN_TEMPLATE`."""
        if self.image_token in question:
            raise ValueError(f"question {question[:60]!r} contains the image token {self.image_token!r}; pass the "
                             "bare question, the adapter inserts the image token itself")
        if getattr(self.processor, "chat_template", None):
            content = ([{"type": "image"}] if has_image else []) + [{"type": "text", "text": question}]
            return self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                      add_generation_prompt=True, tokenize=False)
        if getattr(self.tokenizer, "chat_template", None):
            text = f"{self.image_token}\n{question}" if has_image else question
            return self.tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                      add_generation_prompt=True, tokenize=False)
        if has_image:
            return PLAIN_TEMPLATE.format(image=self.image_token, question=question)
        return PLAIN_TEMPLATE_TEXT_ONLY.format(question=question)

    def encode(self, batch: Batch) -> EncodedBatch:
        """Format, tokenize (left padding) and move one batch to the model's device."""
        if not isinstance(batch, Batch):
            raise TypeError(f"batch is a {type(batch).__name__}, expected plugins.models.batch.Batch")
        if len(batch) == 0:
            raise ValueError("empty batch, expected at least one item")
        prompts = tuple(self.format_prompt(q, has) for q, has in zip(batch.prompts, batch.has_images))
        images = [image for image in batch.images if image is not None]
        bos = self.tokenizer.bos_token
        # A chat template that writes the BOS token itself must not get a second one from the tokenizer.
        add_special_tokens = not (bos and all(p.startswith(bos) for p in prompts))
        with distinct_images(self.processor):
            features = self.processor(text=list(prompts), images=images or None, padding=True, return_tensors="pt",
                                      add_special_tokens=add_special_tokens)
        input_ids = features["input_ids"].to(self.device)  # (B, T)
        attention_mask = features["attention_mask"].to(self.device)  # (B, T)
        if attention_mask[:, -1].eq(0).any():
            raise RuntimeError("the tokenizer padded on the right; the adapter needs left padding for batched generation")
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)  # (B, T), as generate computes them
        pixel_values = features.get("pixel_values")
        if pixel_values is not None:
            pixel_values = pixel_values.to(self.device, self.dtype)  # (N, 3, H, W)
        return EncodedBatch(input_ids, attention_mask, position_ids, pixel_values,
                            input_ids == self.image_token_id, prompts)

    # ------------------------------------------------------------ scoring and generation

    @torch.inference_mode()
    def forward(self, batch: Union[Batch, EncodedBatch], **kwargs: Any) -> torch.Tensor:
        """Logits (B, T, V) over the left-padded prompt; ``[:, -1]`` scores every item's next token.

        Extra keyword arguments go to the model's forward (e.g. ``output_attentions=True`` with
        ``attn_implementation="eager"``); use :meth:`encode` for the matching image-token positions.
        """
        encoded = batch if isinstance(batch, EncodedBatch) else self.encode(batch)
        return self.model(**encoded.model_inputs(), **kwargs).logits  # (B, T, V)

    def next_token_logits(self, batch: Union[Batch, EncodedBatch]) -> torch.Tensor:
        """(B, V) logits of the first answer token."""
        return self.forward(batch, logits_to_keep=1)[:, -1]

    def generate(self, batch: Batch, max_new_tokens: int = 32,
                 logits_processors: Sequence["LogitsProcessor"] = (), method: Optional["Intervention"] = None,
                 batch_size: int = 8, protocol: Optional[Protocol] = None) -> list[str]:
        """Answers decoded as ``protocol`` says (default: greedy), one per item, in order; identical
        whatever ``batch_size`` is.

        The protocol's search is used (greedy, beam search, or sampling made reproducible by
        :class:`plugins.models.sampling.GumbelSampler` with per-item seeds, added after every other
        logits processor); its suffix and answer budget are the benchmark's to apply. While the call
        runs, :attr:`protocol` is the one in use (a method's processor may read the beam count).

        Items run in chunks of ``batch_size``. For each chunk, a ``method`` (any
        :class:`~plugins.models.intervention.Intervention`, such as a registered method) is applied
        in this order: ``transform_inputs`` → ``hooks`` (active during ``model.generate`` only) →
        ``logits_processors`` (after the ones passed here) → ``postprocess``. Hooks, logits
        processors and ``transform_inputs`` see the transformed chunk; ``postprocess`` sees the
        chunk as asked (original questions and images) with the decoded answers.

        ``transform_inputs`` may append whole extra streams after the chunk's own items (a batch
        of k × len(chunk) items): they are decoded in the same forward passes, and only the first
        len(chunk) rows are answers. Contrastive methods use this to run their contrast stream in
        the main stream's forward pass (:mod:`plugins.methods.contrastive`); their logits
        processor must keep every stream on the same tokens.
        """
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens is {max_new_tokens!r}, expected a positive integer")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size is {batch_size!r}, expected a positive integer")
        protocol = COMMON if protocol is None else protocol
        if not isinstance(protocol, Protocol):
            raise TypeError(f"protocol is {_describe(protocol)}, expected a plugins.models.decoding.Protocol")
        answers: list[str] = []
        outer, self._protocol = self._protocol, protocol
        try:
            for start in range(0, len(batch), batch_size):
                answers.extend(self._generate_chunk(batch[start:start + batch_size], max_new_tokens,
                                                    list(logits_processors), method))
        finally:
            self._protocol = outer
        return answers

    @property
    def protocol(self) -> Protocol:
        """The protocol of the ``generate`` call in progress (the common one outside a call)."""
        return self._protocol

    def _generate_chunk(self, chunk: Batch, max_new_tokens: int, processors: list[Any],
                        method: Optional["Intervention"]) -> list[str]:
        from transformers import LogitsProcessorList

        run = chunk
        if method is not None:
            run = method.transform_inputs(self, chunk)
            if not isinstance(run, Batch) or len(run) < len(chunk) or len(run) % len(chunk):
                raise ValueError(f"{type(method).__qualname__}.transform_inputs returned {_describe(run)}, expected a "
                                 f"Batch of the same {len(chunk)} items in the same order (optionally followed by "
                                 f"whole extra streams: a multiple of {len(chunk)} items)")
        encoded = self.encode(run)
        protocol = self._protocol
        num_beams = protocol.num_beams
        hooks = method.hooks(self, run) if method is not None else contextlib.nullcontext()
        with hooks, self.shared_image_features():  # registered after the method's hooks: sees their pixels
            if method is not None:
                processors = processors + list(method.logits_processors(self, run))
            if protocol.stochastic:  # last: it turns the final scores into a draw that greedy search picks
                from plugins.models.sampling import GumbelSampler

                processors.append(GumbelSampler([chunk.item_seed(i) for i in range(len(chunk))],
                                                protocol.temperature, protocol.top_p))
            with torch.inference_mode():
                inputs = encoded.model_inputs(with_position_ids=False)  # generate derives them from the mask
                shares = method is None or method.shares_prompt_prefixes
                if num_beams > 1 and not encoded.image_token_mask[:, -1].any():
                    inputs.pop("pixel_values", None)  # the image is in the prefix cache
                    cache, _ = self.prompt_cache(encoded, encoded.prompt_length - 1, share=shares)
                    cache.batch_repeat_interleave(num_beams)  # beams start from the same prompt
                    inputs[cache_keyword()] = cache
                elif num_beams == 1 and shares:
                    plan = prefix.shared_prefix_plan(encoded, encoded.prompt_length - 1)
                    if plan is not None:
                        inputs.pop("pixel_values", None)  # every image token is in the shared prefix
                        inputs[cache_keyword()] = prefix.encode_shared_prefix(self, encoded, plan)
                from plugins.models.cache import GrowingCache

                inputs.setdefault(cache_keyword(), GrowingCache(config=self.model.config))  # appends in place
                output = self.model.generate(
                    **inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams,
                    pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.eos_token_id,
                    logits_processor=LogitsProcessorList(processors))  # (B, T + new)
        texts = self.decode(output[:len(chunk), encoded.prompt_length:])  # extra streams' rows are not answers
        if method is not None:
            texts = list(method.postprocess(self, chunk, texts))
            if len(texts) != len(chunk) or not all(isinstance(t, str) for t in texts):
                raise ValueError(f"{type(method).__qualname__}.postprocess returned {_describe(texts)}, expected "
                                 f"{len(chunk)} strings")
        return texts

    def prompt_cache(self, encoded: EncodedBatch, end: Optional[int] = None, *, share: bool = True,
                     logits: bool = False) -> tuple[Any, Optional[torch.Tensor]]:
        """The key/value cache of every row's prompt tokens ``[0, end)`` (default: all T), and with
        ``logits`` the (B, V) logits after token ``end − 1`` (:func:`plugins.models.prefix.prompt_cache`).

        Beam search repeats each prompt once per beam before encoding it, and a separate contrast
        stream encodes its prompts outside ``generate``: both take their cache from here. With
        ``share``, rows that share an image and a prompt prefix encode it once, then every row
        runs the rest of its tokens on that cache. ``end`` must not cut through the image tokens.
        Pass ``share=False`` for a method whose hooks read or edit rows by position.
        """
        return prefix.prompt_cache(self, encoded, end, share=share, logits=logits)

    def shared_image_features(self) -> contextlib.AbstractContextManager:
        """While active, identical images in one call of the vision tower are encoded once.

        POPE asks six questions about every image, beam search repeats each image once per beam,
        and follow-up questions return to the same image. Enter it after any method's own hooks
        (:func:`plugins.models.images.distinct_image_features`): the de-duplication then sees the
        pixels those hooks leave, and each image's features are computed exactly as before.
        """
        return distinct_image_features(self.vision_tower)

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        """(B, L) generated ids → answers, without special tokens or surrounding spaces."""
        return [text.strip() for text in self.tokenizer.batch_decode(token_ids, skip_special_tokens=True)]

    # ------------------------------------------------------------ identity

    def checkpoint_hash(self) -> str:
        """SHA-256 over the checkpoint directory's files (weights, config, tokenizer, processor), cached.

        See :func:`plugins.models.lookup.checkpoint_hash`: every file that loads counts,
        documentation and logs do not. A model built in memory (no ``source``) has no checkpoint hash.
        """
        if self._checkpoint_hash is None:
            if self.source is None:
                raise ValueError("this adapter was built from objects in memory, not loaded from a directory; "
                                 "save it with save_pretrained and load it to get a checkpoint hash")
            self._checkpoint_hash = checkpoint_hash(self.source)
        return self._checkpoint_hash

    def _neutralise_generation_config(self) -> None:
        """Keep only token ids from the stored generation config, so decoding is plain greedy."""
        from transformers import GenerationConfig

        stored = self.model.generation_config
        changed = {key: getattr(stored, key) for key, neutral in _GREEDY_CHANGING.items()
                   if getattr(stored, key, neutral) not in (neutral, None)}
        if changed:
            warnings.warn(f"the checkpoint's generation_config.json sets {changed}; AlignScope decodes greedily "
                          "without them so that every method starts from the same baseline", stacklevel=3)
        self.model.generation_config = GenerationConfig(
            bos_token_id=stored.bos_token_id, eos_token_id=stored.eos_token_id,
            pad_token_id=stored.pad_token_id if stored.pad_token_id is not None else self.tokenizer.pad_token_id)

    def __repr__(self) -> str:
        return f"LlavaAdapter({str(self.source or 'in-memory')!r}, device={str(self.device)!r}, dtype={self.dtype})"


def _describe(value: Any) -> str:
    if isinstance(value, (list, tuple, Batch)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"

