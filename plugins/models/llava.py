"""LlavaAdapter: any Hugging Face LLaVA-style checkpoint, loaded offline, decoded greedily in batches.

The adapter wraps a ``LlavaForConditionalGeneration`` and its ``AutoProcessor`` and gives methods
and benchmarks one small surface:

* :meth:`LlavaAdapter.load` — a local directory, or a hub id found **only in the local Hugging
  Face cache**; nothing is ever downloaded. A missing checkpoint raises
  :class:`CheckpointNotFoundError` naming every place it looked and how to get the weights.
* :meth:`LlavaAdapter.encode` — questions → chat-formatted, **left-padded** token ids with
  attention masks and the image-token mask (where the image features go: SID, PAI and OPERA
  need those positions).
* :meth:`LlavaAdapter.generate` — batched greedy decoding that gives the same answers as running
  each item alone, with a method's four extension points applied around ``model.generate``.
* :meth:`LlavaAdapter.forward` — logits for next-token scoring.
* :meth:`LlavaAdapter.checkpoint_hash` — SHA-256 of the checkpoint's files, for the runner.

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
import difflib
import functools
import inspect
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import torch

from plugins.api import files_sha256
from plugins.models.batch import Batch
from plugins.registry import register_model

if TYPE_CHECKING:
    from transformers import LogitsProcessor

    from plugins.methods.base import Method

__all__ = ["LlavaAdapter", "EncodedBatch", "Batch", "CheckpointNotFoundError", "resolve_checkpoint",
           "resolve_device", "resolve_dtype", "hf_cache_dir", "PLAIN_TEMPLATE", "checkpoint_hash",
           "TINY_LLAVA_CHECKPOINT"]

PLAIN_TEMPLATE = "USER: {image}\n{question} ASSISTANT:"
"""The LLaVA-1.5 conversation format, used when neither processor nor tokenizer has a chat template."""
PLAIN_TEMPLATE_TEXT_ONLY = "USER: {question} ASSISTANT:"

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NOT_HASHED = re.compile(r"^(\..*|README.*|LICEN[CS]E.*|.*\.md|training_log\.json)$", re.IGNORECASE)  # documentation and logs, not behaviour
# Settings of a stored generation_config.json that would change *greedy* decoding; the adapter drops them.
_GREEDY_CHANGING = {
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "min_length": 0, "min_new_tokens": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "sequence_bias": None, "exponential_decay_length_penalty": None,
    "guidance_scale": None, "remove_invalid_values": False, "num_beams": 1, "do_sample": False,
}


@functools.cache
def cache_keyword() -> str:
    """The keyword under which this transformers release passes the key/value cache to a forward.

    transformers 5.24 renamed ``past_key_values`` to ``cache``: calls still accept the old name
    (with a deprecation warning), but forward hooks see only the name ``generate`` uses.
    """
    from transformers import LlamaModel

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def cache_argument(kwargs: dict) -> Any:
    """The key/value cache among a forward call's keyword arguments (None if absent), under either name."""
    return kwargs.get("cache", kwargs.get("past_key_values"))


def output_cache(output: Any) -> Any:
    """The key/value cache a model output returns, under either name (see :func:`cache_keyword`)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint at the given path or in the local Hugging Face cache; the message says where it looked."""


# ---------------------------------------------------------------- device, dtype, checkpoint lookup

def resolve_device(device: Union[str, torch.device] = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` if available else ``cpu``; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` as given.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device {device!r} is not a torch device, expected auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for CUDA but torch {torch.__version__} sees no GPU "
                         "(torch.cuda.is_available() is False); use --device cpu or --device auto")
    return resolved


def resolve_dtype(dtype: Union[str, torch.dtype] = "auto", device: Union[str, torch.device] = "cpu") -> torch.dtype:
    """``"auto"`` → float32 on CPU; bfloat16 on a CUDA GPU that supports it, else float16.

    >>> resolve_dtype("auto", "cpu"), resolve_dtype("bf16")
    (torch.float32, torch.bfloat16)
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        device = torch.device(device)
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        close = difflib.get_close_matches(str(dtype), list(_DTYPES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"dtype {dtype!r} is not known{hint} Expected auto, float32, float16 or bfloat16")
    return _DTYPES[dtype]


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment now (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def resolve_checkpoint(path_or_id: Union[str, Path], *, revision: str = "main",
                       cache_dir: Union[str, Path, None] = None) -> Path:
    """The local directory holding ``path_or_id``: the directory itself, or a snapshot in the HF cache.

    Only the file system is read: a hub id ``owner/name`` is looked up as
    ``<cache>/models--owner--name/refs/<revision>`` → ``snapshots/<commit>/``, the layout
    ``huggingface_hub`` writes. Raises :class:`CheckpointNotFoundError` otherwise.
    """
    text = os.fspath(path_or_id)
    local = Path(text).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise CheckpointNotFoundError(
                f"{local} is a directory but not a checkpoint: it has no config.json. Expected a folder written by "
                "save_pretrained (config.json, model.safetensors, processor and tokenizer files)")
        return local.resolve()
    looked = [f"the local directory {local.resolve()} (does not exist)" if not local.exists()
              else f"{local.resolve()} (a file, not a checkpoint directory)"]
    if isinstance(path_or_id, str) and _HUB_ID.match(text) and not text.startswith("."):
        cache = Path(cache_dir).expanduser() if cache_dir is not None else hf_cache_dir()
        repo = cache / f"models--{text.replace('/', '--')}"
        snapshot, why = _cached_snapshot(repo, revision)
        if snapshot is not None:
            return snapshot
        looked.append(f"the Hugging Face cache {repo} ({why})")
        how = (f"AlignScope never downloads. To get it, run on a machine with network access: "
               f"`hf download {text}` (or `huggingface-cli download {text}`; set HF_HUB_CACHE or HF_HOME to "
               f"use another cache), or pass the path of a local checkpoint directory.")
    else:
        how = ("Expected a directory written by save_pretrained, or a Hugging Face hub id such as "
               "llava-hf/llava-1.5-7b-hf that is in the local cache.")
    raise CheckpointNotFoundError(f"checkpoint {text!r} not found. Looked in: " + "; ".join(looked) + ". " + how)


def _cached_snapshot(repo: Path, revision: str) -> tuple[Optional[Path], str]:
    """(snapshot dir, "") if ``revision`` of the cached ``repo`` is complete enough to load, else (None, why)."""
    if not repo.is_dir():
        return None, "no such folder"
    ref = repo / "refs" / revision
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
    elif re.fullmatch(r"[0-9a-f]{40}", revision):
        commit = revision
    else:
        known = sorted(p.name for p in (repo / "refs").glob("*")) if (repo / "refs").is_dir() else []
        return None, f"no ref {revision!r}; refs present: {', '.join(known) or 'none'}"
    snapshot = repo / "snapshots" / commit
    if not snapshot.is_dir():
        return None, f"revision {revision!r} points to snapshot {commit}, which is missing"
    if not (snapshot / "config.json").is_file():
        return None, f"snapshot {commit} has no config.json (an incomplete download?)"
    return snapshot, ""


def checkpoint_hash(directory: Union[str, Path]) -> str:
    """SHA-256 over a checkpoint directory's files, without loading it (see :meth:`LlavaAdapter.checkpoint_hash`)."""
    directory = Path(directory)
    return files_sha256(sorted(p for p in directory.iterdir() if p.is_file() and not _NOT_HASHED.match(p.name)))


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
        model_type = _read_model_type(directory)
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
        with _distinct_images(self.processor):
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
                 logits_processors: Sequence["LogitsProcessor"] = (), method: Optional["Method"] = None,
                 batch_size: int = 8) -> list[str]:
        """Greedy answers (beam search if the method asks for it), one per item, in order; identical
        whatever ``batch_size`` is.

        Items run in chunks of ``batch_size``. For each chunk, a ``method`` is applied in this order:
        ``transform_inputs`` → ``hooks`` (active during ``model.generate`` only) →
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
        answers: list[str] = []
        for start in range(0, len(batch), batch_size):
            answers.extend(self._generate_chunk(batch[start:start + batch_size], max_new_tokens,
                                                list(logits_processors), method))
        return answers

    def _generate_chunk(self, chunk: Batch, max_new_tokens: int, processors: list[Any],
                        method: Optional["Method"]) -> list[str]:
        from transformers import LogitsProcessorList

        run = chunk
        if method is not None:
            run = method.transform_inputs(self, chunk)
            if not isinstance(run, Batch) or len(run) < len(chunk) or len(run) % len(chunk):
                raise ValueError(f"{type(method).__qualname__}.transform_inputs returned {_describe(run)}, expected a "
                                 f"Batch of the same {len(chunk)} items in the same order (optionally followed by "
                                 f"whole extra streams: a multiple of {len(chunk)} items)")
        encoded = self.encode(run)
        from plugins.methods.base import decoding_of

        num_beams = decoding_of(method)["num_beams"]
        hooks = method.hooks(self, run) if method is not None else contextlib.nullcontext()
        with hooks, self.shared_image_features():  # registered after the method's hooks: sees their pixels
            if method is not None:
                processors = processors + list(method.logits_processors(self, run))
            with torch.inference_mode():
                inputs = encoded.model_inputs(with_position_ids=False)  # generate derives them from the mask
                shares = method is None or method.shares_prompt_prefixes
                if num_beams > 1 and not encoded.image_token_mask[:, -1].any():
                    inputs.pop("pixel_values", None)  # the image is in the prefix cache
                    cache, _ = self.prompt_cache(encoded, encoded.prompt_length - 1, share=shares)
                    cache.batch_repeat_interleave(num_beams)  # beams start from the same prompt
                    inputs[cache_keyword()] = cache
                elif num_beams == 1 and shares:
                    plan = self._shared_prefix_plan(encoded, encoded.prompt_length - 1)
                    if plan is not None:
                        inputs.pop("pixel_values", None)  # every image token is in the shared prefix
                        inputs[cache_keyword()] = self._encode_shared_prefix(encoded, plan)
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
        ``logits`` the (B, V) logits after token ``end − 1``.

        Beam search repeats each prompt once per beam before encoding it, and a separate contrast
        stream encodes its prompts outside ``generate``: both take their cache from here. With
        ``share``, rows that share an image and a prompt prefix encode it once
        (:meth:`_shared_prefix_plan`), then every row runs the rest of its tokens on that cache.
        ``end`` must not cut through the image tokens. Pass ``share=False`` for a method whose
        hooks read or edit rows by position.
        """
        length = encoded.prompt_length
        end = length if end is None else end
        if not 1 <= end <= length:
            raise ValueError(f"end is {end}, expected 1 <= end <= {length} (the prompt length)")
        from plugins.models.cache import GrowingCache

        plan = self._shared_prefix_plan(encoded, end - 1 if logits else end) if share else None
        if plan is None:
            cache = GrowingCache(config=self.model.config)
            start, pixel_values = 0, encoded.pixel_values
        else:
            cache, start, pixel_values = self._encode_shared_prefix(encoded, plan), plan[0], None
        last = None
        if start < end:
            with self._encoding_prefix(end < length):
                out = self.model(input_ids=encoded.input_ids[:, start:end], attention_mask=encoded.attention_mask[:, :end],
                                 position_ids=encoded.position_ids[:, start:end], pixel_values=pixel_values,
                                 **{cache_keyword(): cache}, use_cache=True, logits_to_keep=1)
            last = out.logits[:, -1]
        return cache, (last if logits else None)

    def _shared_prefix_plan(self, encoded: EncodedBatch, limit: int) -> Optional[tuple[int, torch.Tensor]]:
        """(L, group of each row) for the most profitable shared prefix of at most ``limit`` tokens, or None.

        POPE asks six questions about every image, and a follow-up questioner seven that differ in
        one word: rows with the same image and the same first L tokens (padding included) have the
        same keys and values there, so one representative row per group can be encoded and its
        cache copied to the others. With G(L) groups, sharing saves (B − G(L)) × L encoded tokens;
        L maximises that, with every image token inside the prefix. None when no two rows share
        enough to save anything (then prompts are encoded as usual).

        The search sorts the rows' keys (image, then tokens with their mask) once: in that order,
        rows sharing a prefix are neighbours, and G(L) is one plus the number of neighbour pairs
        that differ within the first L tokens.
        """
        ids, mask = encoded.input_ids, encoded.attention_mask  # (B, T)
        rows = ids.shape[0]
        if rows < 2:
            return None
        image_of = torch.full((rows,), -1, dtype=torch.long, device=ids.device)  # distinct image per row, -1: none
        if encoded.pixel_values is not None:
            _, distinct = torch.unique(encoded.pixel_values.flatten(1), dim=0, return_inverse=True)  # (N,)
            image_of[encoded.image_token_mask.any(dim=1)] = distinct.to(ids.device)
        positions = torch.arange(ids.shape[1], device=ids.device)
        first_cut = int(torch.where(encoded.image_token_mask, positions, -1).amax()) + 1  # the prefix holds every image token
        if first_cut > limit:
            return None
        key = torch.cat([image_of[:, None], ids[:, :limit] * 2 + mask[:, :limit]], dim=1)  # (B, 1 + limit)
        ordered = torch.unique(key, dim=0)  # (U, 1 + limit), sorted rows
        differ = (ordered[1:] != ordered[:-1]).long().argmax(dim=1)  # (U − 1,) first column where neighbours differ
        cuts = torch.arange(limit + 1, device=ids.device)  # prefix of L tokens = key columns [0, L]
        groups = 1 + (differ[None, :] <= cuts[:, None]).sum(dim=1)  # (limit + 1,) G(L)
        saved = (rows - groups) * cuts
        saved[:first_cut] = 0
        cut = int(saved.argmax())
        if saved[cut] <= 0:
            return None
        _, inverse = torch.unique(key[:, :cut + 1], dim=0, return_inverse=True)  # (B,) group of each row
        return cut, inverse

    def _encode_shared_prefix(self, encoded: EncodedBatch, plan: tuple[int, torch.Tensor]) -> Any:
        """A key/value cache of the first L tokens of every row: each group's representative encoded, then copied."""
        from plugins.models.cache import GrowingCache

        cut, inverse = plan
        ids, mask = encoded.input_ids, encoded.attention_mask
        rows = ids.shape[0]
        first = torch.full((int(inverse.max()) + 1,), rows, dtype=torch.long, device=ids.device)
        first.scatter_reduce_(0, inverse, torch.arange(rows, device=ids.device), reduce="amin")  # (G,) a row per group
        pixel_values = None
        if encoded.pixel_values is not None:
            has_image = encoded.image_token_mask.any(dim=1)  # (B,)
            pixel_rows = torch.cumsum(has_image.long(), 0) - 1  # row -> its index into pixel_values
            with_image = first[has_image[first]]
            pixel_values = encoded.pixel_values[pixel_rows[with_image]] if len(with_image) else None
        cache = GrowingCache(config=self.model.config)
        with self._encoding_prefix(cut < encoded.prompt_length):
            self.model(input_ids=ids[first, :cut], attention_mask=mask[first, :cut],
                       position_ids=encoded.position_ids[first, :cut], pixel_values=pixel_values,
                       **{cache_keyword(): cache}, use_cache=True, logits_to_keep=1)
        cache.batch_select_indices(inverse)  # cache row g (group g's representative) to every row of group g
        return cache

    def shared_image_features(self) -> contextlib.AbstractContextManager:
        """While active, identical images in one call of the vision tower are encoded once.

        POPE asks six questions about every image, beam search repeats each image once per beam,
        and follow-up questions return to the same image: the vision tower is a third of a
        prompt's cost on the default model. A pre-hook replaces the pixels by their distinct rows
        (after any method's own pre-hooks, which are registered first) and a hook copies each
        output back to every row that had that image; each image's features are computed exactly
        as before, so answers are unchanged.
        """
        from plugins.methods.base import ForwardHooks

        state: dict[str, Optional[torch.Tensor]] = {"inverse": None}

        def encode_distinct(module: Any, args: tuple, kwargs: dict) -> Optional[tuple[tuple, dict]]:
            pixels = kwargs["pixel_values"] if "pixel_values" in kwargs else args[0]
            distinct, inverse = torch.unique(pixels.flatten(1), dim=0, return_inverse=True)
            if len(distinct) == len(pixels):
                state["inverse"] = None
                return None
            state["inverse"] = inverse
            distinct = distinct.view(-1, *pixels.shape[1:])
            if "pixel_values" in kwargs:
                return args, {**kwargs, "pixel_values": distinct}
            return (distinct, *args[1:]), kwargs

        def copy_back(module: Any, args: tuple, output: Any) -> Any:
            inverse, state["inverse"] = state["inverse"], None
            if inverse is None:
                return output
            for key, value in list(output.items()):
                if isinstance(value, torch.Tensor):
                    output[key] = value[inverse]
                elif isinstance(value, tuple):
                    output[key] = tuple(v[inverse] if isinstance(v, torch.Tensor) else v for v in value)
            return output

        return (ForwardHooks().add(self.vision_tower, encode_distinct, pre=True, with_kwargs=True)
                .add(self.vision_tower, copy_back))

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        """(B, L) generated ids → answers, without special tokens or surrounding spaces."""
        return [text.strip() for text in self.tokenizer.batch_decode(token_ids, skip_special_tokens=True)]

    # ------------------------------------------------------------ identity

    def checkpoint_hash(self) -> str:
        """SHA-256 over the checkpoint directory's files (weights, config, tokenizer, processor), cached.

        Every file in the directory counts except documentation (README, LICENSE, ``*.md``, dot
        files): what loads must match. Hub-cache LFS files are not re-read: their blob name is
        already their SHA-256. A model built in memory (no ``source``) has no checkpoint hash.
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


class _DistinctImageProcessor:
    """Stands in for a processor's image processor: identical images of one call are processed once.

    POPE asks six questions about every image and a contrastive stream repeats the chunk's images;
    the image processor (resize, crop, normalise) is a tenth of a greedy POPE answer's cost on the
    default model. Outputs with one row per image are copied back to every item that showed it,
    so the processor sees exactly the features it would have computed.
    """

    def __init__(self, inner: Any):
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __call__(self, images: Any, *args: Any, **kwargs: Any) -> Any:
        import hashlib

        import numpy as np

        if not isinstance(images, (list, tuple)) or not all(isinstance(i, np.ndarray) for i in images):
            return self._inner(images, *args, **kwargs)
        slot: dict[bytes, int] = {}
        inverse = [slot.setdefault(hashlib.blake2b(f"{i.shape}{i.dtype}".encode() + i.tobytes(), digest_size=16)
                                   .digest(), len(slot)) for i in images]
        if len(slot) == len(images):
            return self._inner(images, *args, **kwargs)
        firsts = {k: n for n, k in reversed(list(enumerate(inverse)))}  # distinct image -> its first item
        out = self._inner([images[firsts[k]] for k in range(len(slot))], *args, **kwargs)
        index = torch.tensor(inverse)
        for key, value in list(out.items()):
            if isinstance(value, torch.Tensor) and value.shape[:1] == (len(slot),):
                out[key] = value[index]
            elif isinstance(value, list) and len(value) == len(slot):
                out[key] = [value[k] for k in inverse]
        return out


@contextlib.contextmanager
def _distinct_images(processor: Any):
    """Within the block, ``processor`` processes each distinct image of a call once (:class:`_DistinctImageProcessor`)."""
    inner = getattr(processor, "image_processor", None)
    if inner is None:
        yield
        return
    processor.image_processor = _DistinctImageProcessor(inner)
    try:
        yield
    finally:
        processor.image_processor = inner


def _read_model_type(directory: Path) -> Optional[str]:
    path = directory / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a readable JSON config ({exc}), expected the checkpoint's config.json") from None


def _describe(value: Any) -> str:
    if isinstance(value, (list, tuple, Batch)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


# ---------------------------------------------------------------- registered checkpoints

TINY_LLAVA_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "alignscope-tiny-llava"
"""The embedded default: the tiny LLaVA trained on the synthetic world (``alignscope train`` rebuilds it)."""


@register_model("alignscope-tiny-llava")
def alignscope_tiny_llava(device: str = "auto", dtype: str = "auto", path: Union[str, Path, None] = None) -> LlavaAdapter:
    """The embedded default: a ~1.4 M-parameter LLaVA trained on the synthetic world, committed with the code."""
    return LlavaAdapter.load(path or TINY_LLAVA_CHECKPOINT, device, dtype)


alignscope_tiny_llava.default_checkpoint = TINY_LLAVA_CHECKPOINT


@register_model("llava-1.5-7b")
def llava_1_5_7b(device: str = "auto", dtype: str = "auto", path: Union[str, Path, None] = None) -> LlavaAdapter:
    """LLaVA-1.5-7B (llava-hf/llava-1.5-7b-hf) from a local directory (path=) or the local HF cache; never downloads."""
    return LlavaAdapter.load(path or "llava-hf/llava-1.5-7b-hf", device, dtype)


@register_model("llava-1.5-13b")
def llava_1_5_13b(device: str = "auto", dtype: str = "auto", path: Union[str, Path, None] = None) -> LlavaAdapter:
    """LLaVA-1.5-13B (llava-hf/llava-1.5-13b-hf) from a local directory (path=) or the local HF cache; never downloads."""
    return LlavaAdapter.load(path or "llava-hf/llava-1.5-13b-hf", device, dtype)


llava_1_5_7b.default_checkpoint = "llava-hf/llava-1.5-7b-hf"
llava_1_5_13b.default_checkpoint = "llava-hf/llava-1.5-13b-hf"
