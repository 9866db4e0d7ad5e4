"""Diagnostics that show *why* a LLaVA-style model answers as it does (the survey's H.2 and 3.2).

For a yes/no question the first answer token decides the answer, so every diagnostic reads the
distribution over that token, with or without a mitigation method applied:

* **visual dependence** — how much the image supports the answer. The answer token ``a`` is the
  top token with the real image; its log-probability is computed again with a *blank* image (a
  uniform mid-grey picture of the same size), a *noised* image (VCD's diffusion forward process
  at step 500 of 1,000, applied to the picture in [-1, 1] and rounded back to 8 bits), and *no
  image* at all (the text-only prompt). The dependence on a reference is
  ``log p(a | real image) − log p(a | reference)`` in nats: 0 when the answer owes nothing to
  what is in the picture; large when the reference makes the answer unlikely. Log-probabilities
  are floored at :data:`LOG_FLOOR` (a contrastive method's plausibility cut gives −inf).
  With a method, the distribution is the method's own (after its input transforms, hooks and
  logits processors), so "does VCD raise visual dependence?" is a direct reading.
* **attention to the image** — per decoder layer, the share of attention that the position
  predicting the answer gives to image tokens (mean over heads), read from the attention
  probabilities after any edit a method makes (:class:`plugins.methods.attention.AttentionEdit`).
* **logit lens** (nostalgebraist 2020) — per layer, the hidden state at that position through
  the final norm and the LM head: the log-probability of the answer token, and whether it is
  already the top token. Layer 0 is the input embedding; the last layer is the model's output.
* **representation alignment per layer** (:func:`plugins.benchmarks.representation.alignment_profile`):
  image-text cosine margin, mutual k-nearest neighbours, linear CKA, for image-caption pairs.

Each yes/no item gets a row (:func:`diagnose`); :func:`summarize` aggregates rows overall and by
correct vs hallucinated answers (the answer token parsed by the official POPE rule against the
label). Diagnostics read the common protocol (greedy: one first-token distribution per item; OPERA
runs with one beam there); post-decoding methods (Woodpecker, LogicCheckGPT) only rewrite text,
so their diagnostics are the model's own.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch

from plugins.methods.attention import AttentionEdit
from plugins.methods.base import Method, MethodConfig
from plugins.models.batch import Batch

if TYPE_CHECKING:
    from plugins.models.adapter import LlavaAdapter

__all__ = ["CONDITIONS", "LOG_FLOOR", "BLANK_GREY", "NOISE_STEP", "blank_image", "noised_image", "reference_batch",
           "first_token_logprobs", "layer_readout", "diagnose", "summarize", "DiagnosticsError"]

CONDITIONS = ("blank", "noise", "none")
"""The reference inputs visual dependence compares the real image with."""
LOG_FLOOR = math.log(1e-9)
"""Log-probabilities below this (−20.7 nats) are raised to it, so a cut-off token counts as very unlikely, not −inf."""
BLANK_GREY = 128
"""Intensity of every channel of the blank image."""
NOISE_STEP = 500
"""Diffusion step of the noised image (VCD's default, of 1,000)."""


class DiagnosticsError(ValueError):
    """A model, method or input the diagnostics cannot read."""


# ---------------------------------------------------------------- reference images

def blank_image(image: np.ndarray) -> np.ndarray:
    """A uniform mid-grey image of ``image``'s shape.

    >>> blank_image(np.zeros((2, 3, 3), np.uint8))[0, 0].tolist()
    [128, 128, 128]
    """
    return np.full_like(np.asarray(image), BLANK_GREY, dtype=np.uint8)


def noised_image(image: np.ndarray, seed: int, step: int = NOISE_STEP) -> np.ndarray:
    """``image`` pushed ``step`` steps along VCD's diffusion schedule, in [-1, 1], back to uint8.

    >>> img = np.full((8, 8, 3), 200, np.uint8)
    >>> a, b = noised_image(img, 1), noised_image(img, 1)
    >>> bool((a == b).all()), bool((a != img).any())
    (True, True)
    """
    from plugins.models.noise import diffusion_alpha_bar

    x = np.asarray(image, dtype=np.float64) / 127.5 - 1.0
    alpha_bar = diffusion_alpha_bar(step)
    noise = np.random.default_rng(seed).standard_normal(x.shape)
    y = math.sqrt(alpha_bar) * x + math.sqrt(1 - alpha_bar) * noise
    return np.clip(np.rint((y + 1.0) * 127.5), 0, 255).astype(np.uint8)


def reference_batch(batch: Batch, condition: str) -> Batch:
    """``batch`` with every image replaced as ``condition`` says (``blank``, ``noise`` or ``none``)."""
    if condition == "blank":
        images = [None if im is None else blank_image(im) for im in batch.images]
    elif condition == "noise":
        images = [None if im is None else noised_image(im, batch.item_seed(i)) for i, im in enumerate(batch.images)]
    elif condition == "none":
        images = [None] * len(batch)
    else:
        raise DiagnosticsError(f"condition {condition!r} is not one of {', '.join(CONDITIONS)}")
    return batch.replace(images=images)


# ---------------------------------------------------------------- the first answer token

class _FirstScores:
    """A logits processor that keeps the first ``n`` rows of the scores it sees first, unchanged."""

    def __init__(self, n: int):
        self.n = n
        self.scores: Optional[torch.Tensor] = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.scores is None:
            self.scores = scores[:self.n].detach().float().cpu()
        return scores


class _Observed(Method):
    """``inner`` with a last logits processor that records the first step's scores of each chunk.

    Everything else is delegated, so the recorded scores are what ``inner`` would decode from.
    Post-processing is skipped: only the first token is read.
    """

    class Config(MethodConfig):
        """No hyper-parameters of its own."""

    def __init__(self, inner: Optional[Method]):
        super().__init__()
        self.inner = inner
        self.recorded: list[torch.Tensor] = []
        self._n = 0

    def transform_inputs(self, model: "LlavaAdapter", batch: Batch) -> Batch:
        self._n = len(batch)
        return self.inner.transform_inputs(model, batch) if self.inner is not None else batch

    def hooks(self, model: "LlavaAdapter", batch: Batch) -> contextlib.AbstractContextManager:
        return self.inner.hooks(model, batch) if self.inner is not None else contextlib.nullcontext()

    def logits_processors(self, model: "LlavaAdapter", batch: Batch) -> list:
        own = list(self.inner.logits_processors(model, batch)) if self.inner is not None else []
        recorder = _FirstScores(self._n)
        self.recorded.append(recorder)  # type: ignore[arg-type]
        return own + [recorder]


def first_token_logprobs(adapter: "LlavaAdapter", batch: Batch, method: Optional[Method] = None,
                         batch_size: int = 64) -> torch.Tensor:
    """(B, V) log-probabilities of the first answer token, as ``method`` would decode it (float32, CPU)."""
    observed = _Observed(method)
    adapter.generate(batch, max_new_tokens=1, method=observed, batch_size=batch_size)
    scores = torch.cat([r.scores for r in observed.recorded])  # type: ignore[attr-defined]
    if scores.shape[0] != len(batch):
        raise DiagnosticsError(f"recorded {scores.shape[0]} score rows for {len(batch)} items")
    return torch.log_softmax(scores, dim=-1).clamp_min(LOG_FLOOR)


# ---------------------------------------------------------------- per-layer readout

def _lm_head_parts(adapter: "LlavaAdapter") -> tuple[torch.nn.Module, torch.nn.Module]:
    model = adapter.model
    head = model.get_output_embeddings()
    norm = getattr(getattr(model.model, "language_model", None), "norm", None)
    if head is None or norm is None:
        raise DiagnosticsError(f"{type(model).__name__} has no LM head or final norm where a LLaVA model keeps them "
                               "(model.lm_head, model.model.language_model.norm); the logit lens cannot read it")
    return head, norm


@torch.inference_mode()
def layer_readout(adapter: "LlavaAdapter", batch: Batch, answer_ids: torch.Tensor,
                  method: Optional[Method] = None) -> dict[str, torch.Tensor]:
    """Per item and decoder layer: the attention share on image tokens and the logit lens of ``answer_ids``.

    One forward pass over the prompt (with ``method``'s input transforms and hooks active); reads
    the position that predicts the first answer token. Returns float32 CPU tensors:
    ``image_attention`` (B, L), ``lens_logp`` and ``lens_top1`` (B, L + 1; index 0 = embeddings).
    """
    n = len(batch)
    run = method.transform_inputs(adapter, batch) if method is not None else batch
    encoded = adapter.encode(run)
    layers = len(adapter.decoder_layers)
    shares = torch.zeros(n, layers)

    def record(layer: int, probs: torch.Tensor, image_mask: torch.Tensor) -> None:
        last = probs[:, :, -1, :].float()  # (n, H, K): the position predicting the answer
        shares[:, layer] = (last * image_mask[:, None, :].float()).sum(-1).mean(-1).cpu()

    head, norm = _lm_head_parts(adapter)
    hooks = method.hooks(adapter, run) if method is not None else contextlib.nullcontext()
    with hooks, AttentionEdit(adapter, set(range(layers)), after=record, main_rows=slice(0, n)):
        out = adapter.model(**encoded.model_inputs(), output_hidden_states=True, logits_to_keep=1)
    states = out.hidden_states  # L + 1 of (B', T, D); the last already went through the final norm
    if len(states) != layers + 1:
        raise DiagnosticsError(f"the model returned {len(states)} hidden states for {layers} layers, expected {layers + 1}")
    logps, top1 = [], []
    index = answer_ids.to(adapter.device).view(-1, 1)
    for depth, hidden in enumerate(states):
        h = hidden[:n, -1]  # (n, D)
        logits = head(h if depth == layers else norm(h)).float()  # (n, V)
        logp = torch.log_softmax(logits, dim=-1)
        logps.append(logp.gather(1, index).squeeze(1).clamp_min(LOG_FLOOR).cpu())
        top1.append((logits.argmax(dim=-1, keepdim=True) == index).squeeze(1).float().cpu())
    return {"image_attention": shares, "lens_logp": torch.stack(logps, dim=1), "lens_top1": torch.stack(top1, dim=1)}


# ---------------------------------------------------------------- per item and aggregated

def diagnose(adapter: "LlavaAdapter", batch: Batch, labels: Optional[Sequence[Optional[str]]] = None,
             method: Optional[Method] = None, batch_size: int = 64,
             progress: Optional[Callable[[int], None]] = None) -> list[dict[str, Any]]:
    """One row per item of ``batch``: answer, correctness, visual dependence, attention and logit lens.

    ``labels`` ("yes"/"no" or None) decide ``correct``; the answer is the top first token parsed
    by the official POPE rule. Items run in chunks of ``batch_size``; ``progress(k)`` is called
    after each chunk with its size.
    """
    from plugins.benchmarks.pope import parse_pope_answer

    if labels is not None and len(labels) != len(batch):
        raise DiagnosticsError(f"{len(labels)} labels for {len(batch)} items, expected one per item")
    if not any(batch.has_images):
        raise DiagnosticsError("no item has an image; visual dependence compares the real image with references")
    rows: list[dict[str, Any]] = []
    for start in range(0, len(batch), batch_size):
        chunk = batch[start:start + batch_size]
        real = first_token_logprobs(adapter, chunk, method, batch_size)  # (b, V)
        answer = real.argmax(dim=-1)  # (b,)
        own = real.gather(1, answer[:, None]).squeeze(1)
        refs = {c: _reference_logp(adapter, chunk, c, answer, method, batch_size) for c in CONDITIONS}
        readout = layer_readout(adapter, chunk, answer, method)
        tokens = adapter.tokenizer.convert_ids_to_tokens(answer.tolist())
        for i in range(len(chunk)):
            text = adapter.tokenizer.convert_tokens_to_string([tokens[i]]).strip()
            label = labels[start + i] if labels is not None else None
            parsed = parse_pope_answer(text)
            row: dict[str, Any] = {
                "id": chunk.ids[i], "answer": text, "parsed": parsed, "label": label,
                "correct": None if label is None else parsed == label,
                "logp": round(float(own[i]), 5),
                **{f"logp_{c}": None if refs[c] is None else round(float(refs[c][i]), 5) for c in CONDITIONS},
                **{f"vd_{c}": None if refs[c] is None else round(float(own[i] - refs[c][i]), 5) for c in CONDITIONS},
                "image_attention": [round(float(v), 5) for v in readout["image_attention"][i]],
                "lens_logp": [round(float(v), 5) for v in readout["lens_logp"][i]],
                "lens_top1": [int(v) for v in readout["lens_top1"][i]],
            }
            if not chunk.has_images[i]:
                row.update({f"vd_{c}": None for c in CONDITIONS})
            rows.append(row)
        if progress is not None:
            progress(len(chunk))
    return rows


def _reference_logp(adapter: "LlavaAdapter", chunk: Batch, condition: str, answer: torch.Tensor,
                    method: Optional[Method], batch_size: int) -> Optional[torch.Tensor]:
    """(b,) log-probability of ``answer`` under ``condition``; None where the method cannot run without an image."""
    try:
        logp = first_token_logprobs(adapter, reference_batch(chunk, condition), method, batch_size)
    except ValueError as exc:
        if condition != "none" or method is None:
            raise
        # VCD and RITUAL transform the image itself; one warning per method (the text names no item)
        warnings.warn(f"{type(method).__qualname__} cannot run without an image ({str(exc).split(';')[0]}): its "
                      "no-image visual dependence is left out", stacklevel=3)
        return None
    return logp.gather(1, answer[:, None]).squeeze(1)


def _mean(values: Iterable[Optional[float]]) -> Optional[float]:
    kept = [float(v) for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Means of :func:`diagnose` rows: overall and, where labels exist, over correct and hallucinated answers.

    Keys: ``accuracy``, ``n_correct``, ``n_hallucinated``; ``vd_<condition>`` (nats);
    ``image_attention_l<k>`` per decoder layer and ``image_attention_mean``; ``lens_logp_l<k>`` and
    ``lens_top1_l<k>`` per hidden state (0 = embeddings); and ``<key>_correct`` /
    ``<key>_hallucinated`` for the visual dependences and the mean attention share. Groups without
    rows are left out.

    >>> rows = [{"correct": True, "vd_blank": 2.0, "vd_noise": 1.0, "vd_none": 3.0, "image_attention": [0.5, 0.1],
    ...          "lens_logp": [-2.0, -1.0, -0.1], "lens_top1": [0, 1, 1]},
    ...         {"correct": False, "vd_blank": 0.0, "vd_noise": 0.0, "vd_none": 1.0, "image_attention": [0.3, 0.1],
    ...          "lens_logp": [-2.0, -2.0, -0.5], "lens_top1": [0, 0, 1]}]
    >>> s = summarize(rows)
    >>> s["accuracy"], s["vd_blank"], s["vd_blank_correct"], s["vd_blank_hallucinated"], s["image_attention_l0"]
    (0.5, 1.0, 2.0, 0.0, 0.4)
    """
    if not rows:
        raise DiagnosticsError("no rows to summarize")
    out: dict[str, float] = {"n_items": float(len(rows))}
    labelled = [r for r in rows if r.get("correct") is not None]
    groups = {"": list(rows)}
    if labelled:
        correct = [r for r in labelled if r["correct"]]
        wrong = [r for r in labelled if not r["correct"]]
        out.update(accuracy=len(correct) / len(labelled), n_correct=float(len(correct)), n_hallucinated=float(len(wrong)))
        groups.update({"_correct": correct, "_hallucinated": wrong})
    for suffix, group in groups.items():
        if not group:
            continue
        for c in CONDITIONS:
            value = _mean(r[f"vd_{c}"] for r in group)
            if value is not None:
                out[f"vd_{c}{suffix}"] = value
        out[f"image_attention_mean{suffix}"] = _mean(sum(r["image_attention"]) / len(r["image_attention"]) for r in group)
    for key in ("image_attention", "lens_logp", "lens_top1"):
        depth = len(rows[0][key])
        for k in range(depth):
            out[f"{key}_l{k}"] = _mean(r[key][k] for r in rows)
    return {k: float(v) for k, v in out.items() if v is not None}
