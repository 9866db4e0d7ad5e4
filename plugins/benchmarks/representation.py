"""Representation-level alignment: do a model's image and text embeddings of the same scene agree?

Three scores compare N paired embeddings (row i of both matrices describes item i):

* :func:`cosine_margin` — matched minus mismatched image–text cosine similarity (same space).
* :func:`mutual_knn` — Huh et al. 2024's mutual k-nearest-neighbour alignment: do the two
  spaces agree on which items are neighbours? (spaces may differ in width).
* :func:`linear_cka` — Kornblith et al. 2019's linear centred kernel alignment.

:func:`model_embeddings` reads the embeddings out of a LLaVA-style model, per language-model
layer: an image is the mean hidden state at its image-token positions, a caption the mean hidden
state over its tokens read as text only. :func:`alignment_profile` scores every layer.

Every score is computed in float64 on the CPU, whatever device and dtype the inputs come from,
so a number does not depend on where the model ran.

>>> import tempfile
>>> from plugins.models.adapter import LlavaAdapter
>>> from tests.tiny_llava import build_tiny_llava, random_images
>>> with tempfile.TemporaryDirectory() as tmp:
...     adapter = LlavaAdapter.load(build_tiny_llava(tmp + "/tiny"), device="cpu")
...     profile = alignment_profile(adapter, random_images(4), ["a red circle", "a blue square",
...                                 "a green triangle", "a small dog"], k=2)
>>> profile["layers"], len(profile["linear_cka"]), sorted(k for k in profile if k.endswith("_last"))
([0, 1, 2], 3, ['cosine_margin_last', 'linear_cka_last', 'mutual_knn_last'])
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch
import torch.nn.functional as F

from plugins.models.batch import Batch
from plugins.world.text import CAPTION_PROMPT

if TYPE_CHECKING:
    from plugins.models.adapter import LlavaAdapter

__all__ = ["cosine_margin", "mutual_knn", "linear_cka", "model_embeddings", "alignment_profile", "METRICS"]

METRICS = ("cosine_margin", "mutual_knn", "linear_cka")
"""The per-layer scores :func:`alignment_profile` reports, in order."""


def _matrix(x: Any, name: str) -> torch.Tensor:
    """``x`` as an (N, D) float64 CPU tensor, or a TypeError/ValueError naming the argument."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name} is a {type(x).__name__}, expected an (N, D) tensor") from None
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected a non-empty (N, D) matrix: one row per item")
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64, torch.bool)):
        raise TypeError(f"{name} has dtype {x.dtype}, expected a real-valued tensor")
    return x.detach().to("cpu", torch.float64)


def _paired(a: Any, b: Any, names: tuple[str, str], same_width: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _matrix(a, names[0]), _matrix(b, names[1])
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{names[0]} has {a.shape[0]} rows but {names[1]} has {b.shape[0]}, expected one row per "
                         "item in both, in the same order")
    if same_width and a.shape[1] != b.shape[1]:
        raise ValueError(f"{names[0]} is {a.shape[1]}-dimensional but {names[1]} is {b.shape[1]}-dimensional; a "
                         "cosine needs both in the same space")
    return a, b


def cosine_margin(img: torch.Tensor, txt: torch.Tensor) -> float:
    """Matched minus mismatched image–text cosine similarity; img, txt: (N, D), N ≥ 2.

    With ``c(i, j) = cos(img_i, txt_j)``::

        margin = 1/N Σ_i c(i, i)  −  1/N Σ_i [ 1/(N−1) Σ_{j≠i} c(i, j) ]

    In [−2, 2]; 0 when an image is no closer to its own caption than to the others. A zero
    vector has cosine 0 with everything.

    >>> img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> txt = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    >>> round(cosine_margin(img, txt), 6)  # matched (1 + 1/√2)/2, mismatched (1/√2 + 0)/2
    0.5
    """
    img, txt = _paired(img, txt, ("img", "txt"), same_width=True)
    n = img.shape[0]
    if n < 2:
        raise ValueError("cosine_margin needs at least 2 pairs (the mismatched term compares different items), got 1")
    cos = F.normalize(img, dim=1) @ F.normalize(txt, dim=1).T  # (N, N): cos[i, j] = c(i, j)
    matched = cos.diagonal().sum()
    mismatched = cos.sum() - matched  # every row has N-1 off-diagonal terms, so the mean of row means is this / N(N-1)
    return float(matched / n - mismatched / (n * (n - 1)))


def _knn_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N, N) bool, row i True at the k nearest neighbours of i by cosine similarity (never i itself).

    Ties go to the lower index (a stable sort), so the result never depends on the sort kernel.
    """
    x = F.normalize(x, dim=1)
    sim = x @ x.T  # (N, N) cosine similarities
    sim.fill_diagonal_(float("-inf"))  # a point is not its own neighbour
    nearest = torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :k]  # (N, k)
    return torch.zeros_like(sim, dtype=torch.bool).scatter_(1, nearest, True)


def mutual_knn(a: torch.Tensor, b: torch.Tensor, k: int = 10) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024, "The Platonic Representation Hypothesis").

    a: (N, Da), b: (N, Db), 1 ≤ k < N. With kNN_a(i) the k rows of ``a`` most cosine-similar to
    row i, excluding i::

        score = 1/N Σ_i |kNN_a(i) ∩ kNN_b(i)| / k          in [0, 1]

    1 when both spaces agree on every neighbourhood; about k/(N−1) for unrelated spaces.
    Checked against the official code (``minyoungg/platonic-rep``, ``metrics.py``
    ``AlignmentMetrics.mutual_knn`` and ``measure_alignment.compute_score``): rows are
    L2-normalised, neighbours ranked by inner product with the diagonal excluded, and overlaps
    divided by k. Differences: ties here go to the lower index (official: an unstable argsort);
    the official pipeline also clips outliers at the 95th percentile of |feature| before scoring
    (``prepare_features``) and, across models, keeps the best-scoring layer pair — neither is
    done here (pass clipped features yourself; :func:`alignment_profile` compares layer l to
    layer l).

    >>> import math
    >>> angle = lambda *deg: torch.tensor([[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in deg])
    >>> a, b = angle(0, 10, 90, 100), angle(0, 90, 10, 100)  # points 1 and 2 swap places in b
    >>> mutual_knn(a, b, k=1), mutual_knn(a, b, k=2), mutual_knn(a, a, k=3)
    (0.0, 0.75, 1.0)
    """
    a, b = _paired(a, b, ("a", "b"))
    n = a.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k is {k!r}, expected a positive integer")
    if k >= n:
        raise ValueError(f"k={k} but there are only N={n} items, so each has N-1={n - 1} neighbours; "
                         f"use k <= {n - 1} or more items")
    shared = (_knn_mask(a, k) & _knn_mask(b, k)).sum(dim=1)  # (N,) |kNN_a(i) ∩ kNN_b(i)|
    return float(shared.double().mean() / k)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019); x: (N, Dx), y: (N, Dy), N ≥ 2.

    With Xᶜ, Yᶜ the column-centred features::

        CKA = ‖Yᶜᵀ Xᶜ‖_F² / (‖Xᶜᵀ Xᶜ‖_F · ‖Yᶜᵀ Yᶜ‖_F)          in [0, 1]

    Invariant to orthogonal transforms and isotropic scaling of either side, not to arbitrary
    invertible linear maps. Features are used as given (the Platonic-representation code
    L2-normalises rows first; do so yourself to match it). A side with no variance (every row
    the same) shares no structure: the score is 0.0 (the official code's +1e-6 in the
    denominator gives the same). Computed through the N×N Gram matrices when that is cheaper
    (‖Yᶜᵀ Xᶜ‖_F² = ⟨XᶜXᶜᵀ, YᶜYᶜᵀ⟩), which is the same number.

    >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    >>> round(linear_cka(x, x), 6), round(linear_cka(x, 3 * x[:, [1, 0]]), 6), linear_cka(x, torch.ones(3, 4))
    (1.0, 1.0, 0.0)
    """
    x, y = _paired(x, y, ("x", "y"))
    n, dx, dy = x.shape[0], x.shape[1], y.shape[1]
    if n < 2:
        raise ValueError("linear_cka needs at least 2 items to centre the features, got 1")
    xc, yc = x - x.mean(dim=0), y - y.mean(dim=0)  # (N, Dx), (N, Dy)
    if n * (dx + dy) < dx * dy + dx * dx + dy * dy:  # Gram matrices are cheaper
        k, l = xc @ xc.T, yc @ yc.T  # (N, N) each
        num, den = (k * l).sum(), torch.sqrt((k * k).sum() * (l * l).sum())
    else:
        num = (yc.T @ xc).square().sum()  # (Dy, Dx) cross-covariance, squared Frobenius norm
        den = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    return float(num / den) if den > 0 else 0.0


# ---------------------------------------------------------------------- model embeddings


def _layer_indices(layers: Optional[Sequence[int]], n_states: int) -> list[int]:
    if layers is None:
        return list(range(n_states))
    if isinstance(layers, int):
        layers = [layers]
    if not layers:
        raise ValueError("layers is empty, expected at least one hidden-state index (or None for all)")
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n_states <= layer < n_states:
            raise ValueError(f"layer {layer!r} is not a hidden-state index; this model has {n_states} "
                             f"(0 = embeddings, 1..{n_states - 1} = decoder layers; negative counts from the end)")
        out.append(layer % n_states)
    if len(set(out)) != len(out):
        raise ValueError(f"layers {list(layers)} name the same hidden state twice")
    return out


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) hidden states, (B, T) bool → (B, D) mean over the True positions, in float32."""
    weights = mask.to(torch.float32).unsqueeze(-1)  # (B, T, 1)
    return (hidden.float() * weights).sum(dim=1) / weights.sum(dim=1)


@torch.inference_mode()
def _image_chunk(adapter: "LlavaAdapter", images: Sequence[Any], layers: list[int]) -> torch.Tensor:
    encoded = adapter.encode(Batch(images=list(images), prompts=[CAPTION_PROMPT] * len(images)))
    counts = encoded.image_token_mask.sum(dim=1)
    if (counts == 0).any():
        raise RuntimeError(f"no image tokens in the encoded prompt {encoded.prompts[0]!r}; the processor did not "
                           f"insert {adapter.image_token!r}")
    out = adapter.model(**encoded.model_inputs(), output_hidden_states=True, logits_to_keep=1)
    return torch.stack([_masked_mean(out.hidden_states[l], encoded.image_token_mask) for l in layers]).cpu()  # (L, B, D)


@torch.inference_mode()
def _text_chunk(adapter: "LlavaAdapter", captions: Sequence[str], layers: list[int], offset: int) -> torch.Tensor:
    tokenizer = adapter.tokenizer
    tokens = tokenizer(list(captions), padding=True, return_tensors="pt", add_special_tokens=True)
    input_ids = tokens["input_ids"].to(adapter.device)  # (B, T)
    attention_mask = tokens["attention_mask"].to(adapter.device)  # (B, T)
    if (input_ids == adapter.image_token_id).any():
        raise ValueError(f"a caption contains the image token {adapter.image_token!r}; captions are read as text only")
    keep = attention_mask.bool()
    if tokenizer.bos_token_id is not None:
        keep &= input_ids != tokenizer.bos_token_id  # BOS carries no caption content (and is an attention sink)
    empty = (keep.sum(dim=1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"captions[{offset + empty[0]}] = {captions[empty[0]]!r} has no tokens besides BOS; "
                         "expected a non-empty caption")
    # Positions count from each caption's first real token, so left padding does not shift them.
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    out = adapter.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        output_hidden_states=True, logits_to_keep=1)
    return torch.stack([_masked_mean(out.hidden_states[l], keep) for l in layers]).cpu()  # (L, B, D)


def model_embeddings(adapter: "LlavaAdapter", images: Sequence[Any], captions: Sequence[str],
                     layers: Optional[Sequence[int]] = None, batch_size: int = 32) -> dict[str, Any]:
    """Per-layer image and caption embeddings of a LLaVA-style model, paired by position.

    * image i: the prompt :data:`~plugins.world.CAPTION_PROMPT` ("describe the image .") with
      image i, in the adapter's chat format; the mean hidden state over its image-token positions.
      (In a causal LM the image tokens see only the template before them, not the instruction.)
    * caption i: the caption alone, tokenized by the adapter's tokenizer (with its BOS, no
      template, no image); the mean hidden state over its tokens, padding and BOS excluded.

    Layers index the LM's ``hidden_states``: 0 is the input embeddings (for image tokens, the
    projector output), l ≥ 1 the output of decoder layer l; transformers returns the last one
    after the final norm. ``layers=None`` takes all; negative indices count from the end.
    Runs in chunks of ``batch_size`` under ``torch.inference_mode`` on the adapter's device.

    Returns ``{"layers": [l, ...], "image": (L, N, D), "text": (L, N, D)}``, float32 on the CPU.
    """
    if isinstance(captions, str):
        raise TypeError("captions is a single string, expected one caption per image (a list of strings)")
    images, captions = list(images), list(captions)
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions, expected one caption per image")
    if not images:
        raise ValueError("no images, expected at least one image-caption pair")
    for i, text in enumerate(captions):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"captions[{i}] is {text!r}, expected a non-empty string")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size is {batch_size!r}, expected a positive integer")
    n_states = adapter.config.text_config.num_hidden_layers + 1  # embeddings + one per decoder layer
    picked = _layer_indices(layers, n_states)
    image_parts, text_parts = [], []
    for start in range(0, len(images), batch_size):
        image_parts.append(_image_chunk(adapter, images[start:start + batch_size], picked))
        text_parts.append(_text_chunk(adapter, captions[start:start + batch_size], picked, start))
    # clone() outside inference mode: callers get ordinary tensors they may modify in place.
    return {"layers": picked, "image": torch.cat(image_parts, dim=1).clone(), "text": torch.cat(text_parts, dim=1).clone()}


def alignment_profile(adapter: "LlavaAdapter", images: Sequence[Any], captions: Sequence[str], k: int = 10,
                      batch_size: int = 32, layers: Optional[Sequence[int]] = None) -> dict[str, Any]:
    """:func:`cosine_margin`, :func:`mutual_knn` and :func:`linear_cka` of image vs caption embeddings, per layer.

    Returns ``layers`` and, per metric in :data:`METRICS`, a list with one score per layer, plus
    ``<metric>_last`` (the last layer asked for) and ``<metric>_mean`` (mean over those layers),
    ``n`` (pairs) and ``k``. Needs more pairs than ``k`` (checked before the model runs).
    """
    n = len(images)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k is {k!r}, expected a positive integer")
    if k >= n:
        raise ValueError(f"k={k} nearest neighbours need more than {k} image-caption pairs, got {n}; "
                         f"use k <= {n - 1} or more pairs")
    emb = model_embeddings(adapter, images, captions, layers=layers, batch_size=batch_size)
    scores: dict[str, list[float]] = {name: [] for name in METRICS}
    for img, txt in zip(emb["image"], emb["text"]):  # (N, D) each, one layer at a time
        scores["cosine_margin"].append(cosine_margin(img, txt))
        scores["mutual_knn"].append(mutual_knn(img, txt, k))
        scores["linear_cka"].append(linear_cka(img, txt))
    out: dict[str, Any] = {"layers": emb["layers"], **scores}
    for name, values in scores.items():
        out[f"{name}_last"] = values[-1]
        out[f"{name}_mean"] = sum(values) / len(values)
    out.update(n=n, k=k)
    return out
