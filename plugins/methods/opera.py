"""OPERA — Over-trust Penalty and Retrospection-Allocation (Huang et al., CVPR 2024; github.com/shikiw/OPERA).

OPERA decodes with beam search and re-scores each beam's best ``C`` candidate tokens by a
penalty read from the last decoder layer's self-attention. Hallucinations tend to follow a
*knowledge-aggregation pattern*: a few summary tokens of the answer soak up the attention of
every token after them, and the model stops looking at the image. For each candidate c of a beam,
the method takes the attention of the generated tokens and of c itself (the maximum over heads,
each row renormalised to sum to 1), keeps the local window from the first generated token on, and
scores every column j of that window::

    φ_j(c) = 1e-7 · Π_{i ≥ j} σ · w_ij          (σ = ``scale_factor``, w the window, i, j ≥ 0)
    φ(c)   = max_j φ_j(c)

and while the answer is at most 10 tokens long (c included) the penalty is instead minus the
attention c pays to the image tokens (a bonus for looking at the image). The candidate's score
is its log-probability minus ``penalty_weight`` · penalty; every other token is excluded, and the
scores are renormalised over the candidates (a log-softmax) before beam search adds them to the
beam's running score — the official ``opera_beam_search`` (transformers 4.29.2 fork,
``generation/utils.py``) does the same on raw logits, which differ from log-probabilities by a
per-row constant.

Official defaults (README, ``pope_eval.py`` and ``chair_eval.py``): 5 beams, σ = 50,
5 candidates per beam, penalty weight 1, rollback threshold 15; answers capped at 10 new tokens
on POPE and 512 on CHAIR. The beams are the protocol's, not the method's
(:mod:`plugins.models.decoding`): OPERA's paper protocol is 5-beam search, and its reference is the
baseline under that protocol — plain 5-beam search. Under the common (greedy) protocol it
re-scores the one beam it keeps.

**Deviations.**

* **No retrospection-allocation (rollback).** When the same column has been the maximum for more
  than ``threshold`` (15) steps at a position ≥ 10, the official loop rewinds to that token and
  bans the tokens chosen there. Rewinding needs control over the generation loop itself, which a
  logits processor does not have and AlignScope does not patch. The condition needs an answer
  longer than 25 tokens, so it never applies to the POPE-style yes/no questions; on long captions
  it can, and there this plugin is OPERA without the rollback.
* The penalty is computed in float64 (the official code stores it in float16, where the product
  overflows to infinity on long answers).

How the attention is read: the last decoder layer runs the attention function of
:mod:`plugins.methods.attention`, which hands the probabilities to a callback. The main passes of
``generate`` give each generated token's row; for the candidates, the processor runs one extra
pass of the language model over all beams × candidates at once, each candidate a single new
token on ``generate``'s key/value cache (restored afterwards) (the official code runs one pass per
candidate). Beams that hold the same tokens and candidates share that pass's row — at the first
step all beams of an item do, so it runs on one row per item. A generated token's row is stored
under the item and the tokens before it, so the history follows the beams through their
reordering without knowing the beam indices.

>>> import torch
>>> w = torch.tensor([[[0.5, 0.0], [0.8, 0.2]]], dtype=torch.float64)  # one beam: 1 generated token + 1 candidate
>>> [round(v, 12) for v in column_scores(w, scale=2.0)[0].tolist()]  # j=0: 1e-7·(2·.5)(2·.8); j=1: 1e-7·(2·.2)
[1.6e-07, 4e-08]
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch
from pydantic import Field

from plugins.methods.attention import AttentionEdit
from plugins.methods.base import Method, MethodConfig
from plugins.models.compat import cache_argument, cache_keyword
from plugins.models.hooks import ForwardHooks
from plugins.registry import register_method

if TYPE_CHECKING:
    from plugins.models.adapter import LlavaAdapter
    from plugins.models.batch import Batch

__all__ = ["OPERA", "BeamSearch", "column_scores", "opera_penalty", "OperaProcessor", "IMAGE_PHASE_TOKENS"]

IMAGE_PHASE_TOKENS = 10
"""While the answer (candidate included) has at most this many tokens, the penalty is minus the
candidate's attention to the image (official constant, ``cur_response_lens <= 10``)."""
EXCLUDED = -999.0  # the official score of every token that is not a candidate


def column_scores(window: torch.Tensor, scale: float) -> torch.Tensor:
    """(..., L) aggregation score of each column of (..., L, L) lower-triangular attention windows.

    ``1e-7 · Π_{i ≥ j} scale · window[i, j]`` for column j: large when every later token attends
    strongly to token j.
    """
    scaled = window * scale
    length = window.shape[-1]
    return torch.stack([1e-7 * scaled[..., j:, j].prod(dim=-1) for j in range(length)], dim=-1)


def opera_penalty(window: torch.Tensor, image_attention: torch.Tensor, scale: float) -> torch.Tensor:
    """(...,) penalty of each candidate from its (..., L, L) window (last row: the candidate).

    With L ≤ :data:`IMAGE_PHASE_TOKENS`: ``−image_attention`` (the candidate's attention to the
    image tokens); after: the largest column score.
    """
    if window.shape[-1] <= IMAGE_PHASE_TOKENS:
        return -image_attention
    return column_scores(window, scale).max(dim=-1).values


def _normalised_last_row(probs: torch.Tensor) -> torch.Tensor:
    """(B, K) float64: the last query's attention, maximum over heads, renormalised to sum to 1."""
    row = probs[:, :, -1, :].to(torch.float64).amax(dim=1)  # (B, K)
    return row / row.sum(dim=-1, keepdim=True)


class OperaProcessor:
    """Re-scores each beam's top candidates by the over-trust penalty (see the module docstring).

    ``prompt_mask`` (B, T): the chunk's attention mask; ``image_mask`` (B, T): its image tokens.
    Rows of ``input_ids`` are item-major: row ``b·beams + k`` is beam k of item b.
    """

    def __init__(self, method: "OPERA", model: "LlavaAdapter", prompt_mask: torch.Tensor, image_mask: torch.Tensor,
                 edit: AttentionEdit, state: dict[str, Any]):
        beams = model.protocol.num_beams  # the protocol searches; OPERA re-scores whatever beams it keeps
        self.method, self.model, self.edit, self.state = method, model, edit, state
        self.beams = beams
        self.prompt_length = prompt_mask.shape[1]
        self.prompt_mask = prompt_mask.repeat_interleave(beams, dim=0)  # (R, T)
        self.image_mask = image_mask.repeat_interleave(beams, dim=0)  # (R, T)
        self.windows = torch.zeros(self.prompt_mask.shape[0], 0, 0, dtype=torch.float64)  # (R, steps, steps)
        self.index: dict[tuple[int, tuple[int, ...]], int] = {}  # (item, generated tokens) → row of ``windows``

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        config = self.method.config
        rows, length = input_ids.shape
        if rows != self.prompt_mask.shape[0]:
            raise ValueError(f"got {rows} rows, expected {self.prompt_mask.shape[0]} (items x {self.beams} beams)")
        steps = length - self.prompt_length  # tokens generated so far
        T = self.prompt_length
        row = _normalised_last_row(self.state.pop("probs"))  # (R, T + steps): the newest token's attention
        past = self._extend_history(input_ids, row, steps)  # (R, steps, steps)
        k = min(config.num_attn_candidates, scores.shape[-1])
        top = scores.topk(k, dim=-1)  # (R, k): log-probabilities and tokens
        # Beams with the same item, tokens and candidates (all beams of an item at the first step)
        # get the same candidate attention: it is computed once per such group.
        groups: dict[tuple, int] = {}  # (item, generated tokens, candidates) -> group
        first: list[int] = []  # group -> its first row
        member: list[int] = []  # row -> its group
        for r, (tokens, cands) in enumerate(zip(input_ids[:, T:].tolist(), top.indices.tolist())):
            key = (r // self.beams, tuple(tokens), tuple(cands))
            if key not in groups:
                groups[key] = len(first)
                first.append(r)
            member.append(groups[key])
        candidate_rows = self._candidate_rows(input_ids, top.indices, first)[member]  # (R, k, T + steps + 1)
        image = self.image_mask.to(torch.float64)  # (R, T)
        image_attention = (candidate_rows[:, :, :T] * image[:, None, :]).sum(dim=-1)  # (R, k)
        if steps + 1 <= IMAGE_PHASE_TOKENS:
            penalty = -image_attention  # what opera_penalty gives for a short window, without building it
        else:
            window = torch.zeros(rows, k, steps + 1, steps + 1, dtype=torch.float64, device=scores.device)
            window[:, :, :steps, :steps] = past[:, None]
            window[:, :, steps, :] = candidate_rows[:, :, T:]
            penalty = opera_penalty(window, image_attention, config.scale_factor)
        rescored = top.values.to(torch.float64) - config.penalty_weight * penalty  # (R, k)
        out = torch.full_like(scores, EXCLUDED).scatter(-1, top.indices, rescored.to(scores.dtype))
        return torch.log_softmax(out, dim=-1)

    def _extend_history(self, input_ids: torch.Tensor, row: torch.Tensor, steps: int) -> torch.Tensor:
        """(R, steps, steps): per row, the window rows of its generated tokens.

        A row's window is its parent's (the row that held the same item and tokens but the last
        one, a step ago) plus the attention row of its newest token.
        """
        T = self.prompt_length
        keys = [(r // self.beams, tuple(ids)) for r, ids in enumerate(input_ids[:, T:].tolist())]
        windows = torch.zeros(len(keys), steps, steps, dtype=torch.float64, device=row.device)
        if steps:
            parents = torch.tensor([self.index[item, tokens[:-1]] for item, tokens in keys], device=row.device)
            windows[:, :steps - 1, :steps - 1] = self.windows[parents]
            windows[:, steps - 1, :] = row[:, T:]
        self.windows, self.index = windows, {key: r for r, key in enumerate(keys)}
        return windows

    def _candidate_rows(self, input_ids: torch.Tensor, candidates: torch.Tensor,
                        rows_to_run: Optional[list[int]] = None) -> torch.Tensor:
        """(R', k, K + 1): each candidate's last-layer attention as the next token, renormalised.

        ``rows_to_run``: the rows to compute, in this order (R' of them; default all R).

        One pass for all: each row's k candidates are k query tokens at the same position, on
        ``generate``'s key/value cache, with a 4-D mask that lets each see the cache and itself but
        not the other candidates (so each gets exactly the attention it would get alone). Appending
        to generate's cache writes into its free room (:class:`plugins.models.cache.GrowingLayer`) and
        cropping moves the end back, so nothing is copied. With ``rows_to_run``, the pass runs on a
        copy of those rows of the cache instead.
        """
        subset = rows_to_run is not None and len(rows_to_run) < candidates.shape[0]
        pick = torch.tensor(rows_to_run, device=candidates.device) if subset else None
        prompt_mask, image_mask = (self.prompt_mask[pick], self.image_mask[pick]) if subset else \
            (self.prompt_mask, self.image_mask)
        if subset:
            candidates = candidates[pick]
        rows, k = candidates.shape
        keys = input_ids.shape[1]  # K: prompt + generated tokens, all in the cache
        dtype = self.model.dtype
        blocked = torch.finfo(dtype).min
        seen = torch.cat([prompt_mask, prompt_mask.new_ones(rows, keys - self.prompt_length)], dim=1)
        mask = torch.full((rows, 1, k, keys + k), blocked, dtype=dtype, device=candidates.device)
        mask[:, 0, :, :keys] = torch.where(seen.bool(), 0.0, blocked)[:, None, :]
        mask[:, 0, :, keys:].diagonal(dim1=-2, dim2=-1).fill_(0.0)
        position = (seen.sum(dim=1, keepdim=True)).expand(rows, k)  # the next position, for every candidate
        cache = self.state["cache"]  # generate's own: the pass appends the candidates, then they are dropped
        kept = [(layer, layer.get_seq_length()) for layer in cache.layers]
        if subset:  # the pass runs on a copy of those rows; generate's cache is left alone
            from plugins.models.cache import cache_rows

            cache, kept = cache_rows(cache, pick, self.model.model.config), []
        self.edit.image_mask["contrast"] = torch.cat(  # the edit wants every key's image flag
            [image_mask, image_mask.new_zeros(rows, keys + k - self.prompt_length)], dim=1)
        self.state["candidate_pass"] = True
        try:
            with self.edit.contrast_pass():
                self.model.model.model(input_ids=candidates, attention_mask=mask, position_ids=position,
                                       **{cache_keyword(): cache}, use_cache=True)
        finally:
            self.state["candidate_pass"] = False
            for layer, length in kept:  # drop the candidates again (a growing layer only moves its end)
                if layer.get_seq_length() > length:
                    layer.crop(length - layer.get_seq_length())
        probs = self.state.pop("probs").to(torch.float64).amax(dim=1)  # (R, k, K + k), maximum over heads
        own = torch.arange(k, device=probs.device)
        out = torch.cat([probs[:, :, :keys], probs[:, own, keys + own][:, :, None]], dim=-1)  # (R, k, K + 1)
        return out / out.sum(dim=-1, keepdim=True)


@register_method("opera")
class OPERA(Method):
    """Beam search whose candidates pay for attention that piles up on a few answer tokens."""

    # The penalty reads the attention of generated tokens and candidates only, never of the prompt pass.
    shares_prompt_prefixes: ClassVar[bool] = True

    class Config(MethodConfig):
        scale_factor: float = Field(50.0, gt=0)  # σ: attention weights are scaled before the column product
        num_attn_candidates: int = Field(5, ge=1)  # candidates re-scored per beam (official 5; "fast" setting 1)
        penalty_weight: float = Field(1.0, ge=0)  # weight of the penalty on the log-probability (official 1)

    def hooks(self, model: "LlavaAdapter", batch: "Batch"):
        last = len(model.decoder_layers) - 1
        state: dict[str, Any] = {"candidate_pass": False}
        self._state = state

        def keep_row(layer: int, probs: torch.Tensor, image_mask: torch.Tensor) -> None:
            state["probs"] = probs  # (B, H, Q, K)

        def keep_cache(module: Any, args: tuple, kwargs: dict) -> None:
            if not state["candidate_pass"]:
                state["cache"] = cache_argument(kwargs)

        self._edit = edit = AttentionEdit(model, {last}, after=keep_row, main_rows=slice(None), contrast_rows=slice(None))
        cache_hook = ForwardHooks().add(model.model.model, keep_cache, pre=True, with_kwargs=True)

        @contextlib.contextmanager
        def active():
            with edit, cache_hook:
                yield

        return active()

    def logits_processors(self, model: "LlavaAdapter", batch: "Batch") -> list:
        encoded = model.encode(batch)
        return [OperaProcessor(self, model, encoded.attention_mask, encoded.image_token_mask, self._edit, self._state)]
