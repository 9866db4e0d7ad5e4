"""Fine-tune a copy of a LLaVA against its frozen original: DPO / rDPO, contrastive, and instruction tuning.

All three trainers share one recipe (:func:`fine_tune`):

1. the adapter's model is the frozen **reference**: it is only ever run without gradients (for
   DPO its log-probabilities of every answer are computed once, before training, which gives the
   same numbers as recomputing them every step since it never changes and runs without dropout);
2. a deep copy of it is the **policy**, and every parameter of the copy is trained (full
   fine-tuning; the official runs train LoRA adapters on 7B models instead);
3. the optimisation loop is the one the tiny LLaVA itself was trained with
   (:func:`plugins.models.loop.run_stage`: AdamW with weight decay on matrices only, linear
   warm-up then cosine decay to 10 % of the peak rate, gradient norm clipped at 1, a tqdm bar);
   dropout is off, as the official DPO trainers switch it off;
4. the result is the policy's tensors that differ from the reference's (:class:`TuningRun`), on
   the CPU, with the statistics of the run.

Seeded and deterministic on the CPU for a fixed number of threads: the policy copy, any new
parameters (HACL's projection heads) and the batch order are drawn from ``seed`` inside
:func:`torch.random.fork_rng`, so the global random state is left as it was.

Sequences are encoded through the adapter (:class:`SequenceEncoder`): the prompt exactly as
:meth:`LlavaAdapter.encode` formats it for generation (chat template, image tokens), followed by
the answer's tokens and the end-of-sequence token; only the answer and the end token carry loss
(labels :data:`plugins.models.data.IGNORE` elsewhere), as in :mod:`plugins.models.data`. Batches are
right-padded by :func:`plugins.models.data.collate`.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional, Sequence

import numpy as np
import torch

from plugins.models.data import IGNORE, Example, collate
from plugins.models.loop import StageConfig, index_batches, run_stage
from plugins.models.padding import left_pad
from plugins.tuning.losses import contrastive_loss, rdpo_loss, runner_up_logps, sequence_logps, sft_loss

if TYPE_CHECKING:
    from plugins.models.adapter import LlavaAdapter
    from plugins.tuning.instructions import Instruction
    from plugins.tuning.preferences import PreferenceData

__all__ = ["TuningRun", "SequenceEncoder", "fine_tune", "train_preference", "train_contrastive", "train_instructions",
           "changed_tensors", "EVAL_ITEMS", "TEMPERATURE_RANGE"]

EVAL_ITEMS = 64
"""Items (pairs or examples) of the fixed set on which the objective is measured before and after training."""
TEMPERATURE_RANGE = (0.001, 0.5)
"""HACL clamps its learned contrastive temperature to this range after every step (``itc_temp.clamp_``)."""


@dataclass
class TuningRun:
    """What a tuning run leaves behind: the changed tensors and how the run went."""

    state: dict[str, torch.Tensor]  # state-dict key -> tuned tensor (CPU), only the tensors that changed
    stats: dict[str, Any] = field(default_factory=dict)  # steps, seconds, loss curve, loss before/after ...


# ---------------------------------------------------------------- encoding

class SequenceEncoder:
    """Token ids and labels of (prompt, answer) sequences as the adapter's model reads them, and their pixels.

    ``images`` are the (H, W, 3) uint8 images examples refer to by index; they are processed once
    by the adapter's image processor into :attr:`pixels` (N, 3, H', W').
    """

    def __init__(self, model: "LlavaAdapter", images: Sequence[np.ndarray], batch_size: int = 64):
        self.model = model
        self.eos_id = int(model.tokenizer.eos_token_id)
        self.pad_id = int(model.tokenizer.pad_token_id)
        self._any_image = images[0]
        self._prompts: dict[str, list[int]] = {}
        chunks = [model.processor.image_processor(list(images[s:s + batch_size]), return_tensors="pt")["pixel_values"]
                  for s in range(0, len(images), batch_size)]
        self.pixels = torch.cat(chunks).to(model.device, model.dtype)  # (N, 3, H', W')

    def prompt_ids(self, prompt: str) -> list[int]:
        """The prompt's ids as :meth:`LlavaAdapter.encode` makes them (the image count depends only on the model)."""
        if prompt not in self._prompts:
            from plugins.models.batch import Batch

            encoded = self.model.encode(Batch([self._any_image], [prompt]))
            self._prompts[prompt] = encoded.input_ids[0][encoded.attention_mask[0].bool()].tolist()
        return self._prompts[prompt]

    def example(self, image: int, prompt: str, answer: str) -> Example:
        """``prompt`` about image ``image`` answered by ``answer``: loss on the answer's tokens and the end token."""
        head = self.prompt_ids(prompt)
        tail = self.model.tokenizer(answer, add_special_tokens=False)["input_ids"] + [self.eos_id]
        return Example(head + tail, [IGNORE] * len(head) + tail, int(image))

    def batch(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        """Right-padded model inputs and labels on the model's device."""
        out = collate(list(examples), self.pixels, self.pad_id)
        return {k: v.to(self.model.device) for k, v in out.items()}


def _logits(net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
               pixel_values=batch["pixel_values"]).logits  # (B, T, V)


# ---------------------------------------------------------------- the shared loop

def changed_tensors(tuned: torch.nn.Module, original: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state-dict entries of ``tuned`` that differ from ``original``'s, detached copies on the CPU."""
    before = original.state_dict()
    return {k: v.detach().to("cpu", copy=True) for k, v in tuned.state_dict().items() if not torch.equal(v, before[k])}


def fine_tune(model: "LlavaAdapter", name: str, stage: StageConfig, seed: int,
              make_loss: Callable[[torch.nn.Module, Optional[torch.nn.Module]], Callable[[int], torch.Tensor]],
              evaluate: Callable[[torch.nn.Module, Optional[torch.nn.Module]], dict[str, float]], *,
              make_heads: Optional[Callable[[], torch.nn.Module]] = None,
              after_step: Optional[Callable[[Optional[torch.nn.Module]], None]] = None,
              prepare_policy: Optional[Callable[[torch.nn.Module], None]] = None,
              progress: bool = True) -> TuningRun:
    """Train a copy of ``model.model`` for ``stage.steps`` steps of ``make_loss(policy, heads)(step)``.

    ``make_heads`` builds extra trainable modules that are not part of the model (HACL's
    projections); they are trained alongside and discarded. ``prepare_policy(policy)`` may change the
    copy before anything else runs (re-initialise or freeze parts of it; seeded like the rest); only
    parameters that still require grad are trained. ``evaluate(policy, heads)`` is called
    before and after training (without gradients) and its numbers go into the stats as
    ``<key>_before`` / ``<key>_after``. The adapter's own model is never modified.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = copy.deepcopy(model.model)
        policy.requires_grad_(True)
        if prepare_policy is not None:
            prepare_policy(policy)
        heads = make_heads() if make_heads is not None else None
        trainable = torch.nn.ModuleDict({"policy": policy, **({"heads": heads} if heads is not None else {})})
        trainable.eval()
        with torch.no_grad():
            before = evaluate(policy, heads)
        loss_fn = make_loss(policy, heads)

        def step(i: int) -> torch.Tensor:
            trainable.eval()  # run_stage switches to train mode; dropout stays off, as in the official trainers
            return loss_fn(i)

        log = run_stage(name, trainable, stage, step, progress,
                        (lambda: after_step(heads)) if after_step is not None else None)
        trainable.eval()
        with torch.no_grad():
            after = evaluate(policy, heads)
    state = changed_tensors(policy, model.model)
    stats = {k: log[k] for k in ("name", "steps", "batch_size", "lr", "seconds", "trainable_parameters",
                                  "loss_first10", "loss_last10", "losses")}
    stats.update({f"{k}_before": v for k, v in before.items()})
    stats.update({f"{k}_after": v for k, v in after.items()})
    stats.update(warmup=stage.warmup, weight_decay=stage.weight_decay, seed=seed, threads=torch.get_num_threads(),
                 device=str(model.device), changed_tensors=len(state),
                 changed_parameters=int(sum(v.numel() for v in state.values())))
    return TuningRun(state, stats)


# ---------------------------------------------------------------- DPO and rDPO

Scoring = Literal["answer", "official"]


def train_preference(model: "LlavaAdapter", prefs: "PreferenceData", stage: StageConfig, *, beta: float = 0.1,
                     visual_weight: float = 0.0, scoring: Scoring = "answer", sft_weight: float = 0.0, seed: int = 0,
                     progress: bool = True) -> TuningRun:
    """DPO (``visual_weight=0``) or rDPO on ``prefs``; see :func:`plugins.tuning.losses.rdpo_loss`.

    Each step takes ``stage.batch_size`` pairs and runs the policy once over the chosen, the
    rejected and (rDPO) the chosen-with-retrieved-image sequences together. ``scoring="answer"``
    scores every answer by its own tokens' log-probabilities (the paper's equation);
    ``"official"`` scores the rejected answer and the retrieved-image answer as Re-Align's released
    trainer does (:func:`plugins.tuning.losses.runner_up_logps`). ``sft_weight`` adds that much of
    the chosen answers' cross-entropy (Re-Align's optional term). Stats add the preference accuracy
    (share of pairs whose implicit reward prefers the chosen answer) per step.
    """
    visual = visual_weight > 0
    if visual and prefs.retrieved is None:
        raise ValueError("visual_weight > 0 needs retrieved images: build the data with plugins.tuning.preferences.with_retrieval")
    encoder = SequenceEncoder(model, prefs.data.images)
    chosen = [encoder.example(p.image, p.prompt, p.chosen) for p in prefs.pairs]
    rejected = [encoder.example(p.image, p.prompt, p.rejected) for p in prefs.pairs]
    retrieved = ([Example(c.input_ids, c.labels, prefs.retrieved[p.image]) for c, p in zip(chosen, prefs.pairs)]
                 if visual else [])
    other = runner_up_logps if scoring == "official" else sequence_logps
    parts = 3 if visual else 2

    def logps(net: torch.nn.Module, idx: Sequence[int]) -> list[torch.Tensor]:
        seqs = [chosen[i] for i in idx] + [rejected[i] for i in idx] + ([retrieved[i] for i in idx] if visual else [])
        batch = encoder.batch(seqs)
        logits = _logits(net, batch)  # (parts·B, T, V)
        b = len(idx)
        out = [sequence_logps(logits[:b], batch["labels"][:b])]
        out += [other(logits[k * b:(k + 1) * b], batch["labels"][k * b:(k + 1) * b]) for k in range(1, parts)]
        if sft_weight > 0:
            out.append(sft_loss(logits[:b], batch["labels"][:b]))
        return out

    t0 = time.perf_counter()
    reference = _reference_logps(model, logps, len(prefs.pairs), parts)  # (parts, N), computed once
    reference_seconds = time.perf_counter() - t0
    eval_idx = list(range(min(EVAL_ITEMS, len(prefs.pairs))))
    accuracy: list[float] = []

    def objective(values: list[torch.Tensor], idx: Sequence[int]) -> tuple[torch.Tensor, float]:
        ref = reference[:, idx].to(values[0].device)  # (parts, B)
        pc, pr = values[0], values[1]
        pv = values[2] if visual else pc
        losses = rdpo_loss(pc, pr, pv, ref[0], ref[1], ref[2] if visual else ref[0], beta=beta,
                           visual_weight=visual_weight)
        loss = losses.mean()
        if sft_weight > 0:
            loss = loss + sft_weight * values[-1]
        won = float(((pc - ref[0]) > (pr - ref[1])).float().mean())
        return loss, won

    def make_loss(policy: torch.nn.Module, heads: Any) -> Callable[[int], torch.Tensor]:
        order = index_batches(len(prefs.pairs), stage.batch_size, seed)

        def loss_fn(_: int) -> torch.Tensor:
            idx = [int(i) for i in next(order)]
            loss, won = objective(logps(policy, idx), idx)
            accuracy.append(round(won, 4))
            return loss

        return loss_fn

    def evaluate(policy: torch.nn.Module, heads: Any) -> dict[str, float]:
        loss, won = objective(logps(policy, eval_idx), eval_idx)
        return {"eval_loss": round(float(loss), 6), "eval_preference_accuracy": round(won, 4)}

    name = "rDPO" if visual else "DPO"
    run = fine_tune(model, name, stage, seed, make_loss, evaluate, progress=progress)
    run.stats.update(objective=name.lower(), beta=beta, visual_weight=visual_weight, scoring=scoring,
                     sft_weight=sft_weight, preference_accuracy=accuracy,
                     reference_seconds=round(reference_seconds, 2), data=prefs.summary())
    return run


@torch.no_grad()
def _reference_logps(model: "LlavaAdapter", logps: Callable[[torch.nn.Module, Sequence[int]], list[torch.Tensor]],
                     n: int, parts: int, chunk: int = 64) -> torch.Tensor:
    """(parts, n) log-probabilities of every pair's sequences under the frozen reference (the adapter's model)."""
    rows = [torch.stack(logps(model.model, list(range(s, min(s + chunk, n))))[:parts]).float().cpu()
            for s in range(0, n, chunk)]
    return torch.cat(rows, dim=1)


# ---------------------------------------------------------------- HACL: contrastive + language loss

def _image_representation(policy: torch.nn.Module, pixels: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, D): the LM's last hidden state after reading only the image tokens and an end token (HACL's choice)."""
    llava = policy.model  # LlavaModel
    out = llava.get_image_features(pixel_values=pixels)
    feats = out.pooler_output if hasattr(out, "pooler_output") else out
    feats = torch.stack(list(feats))  # (B, P, D)
    eos = llava.get_input_embeddings()(torch.full((len(feats), 1), eos_id, device=feats.device))  # (B, 1, D)
    hidden = llava.language_model(inputs_embeds=torch.cat([feats, eos], dim=1)).last_hidden_state  # (B, P+1, D)
    return hidden[:, -1]


def _text_representation(policy: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, D): the LM's last hidden state at the end token of each (left-padded) caption, no image."""
    positions = (mask.cumsum(-1) - 1).clamp_min(0)  # (B, T): count from each caption's first real token
    hidden = policy.model.language_model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
    return hidden[:, -1]


def _caption_ids(model: "LlavaAdapter", texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids (B, T) and mask of ``<bos> caption </s>`` (the tokenizer's own special tokens, then the end token)."""
    eos, pad = int(model.tokenizer.eos_token_id), int(model.tokenizer.pad_token_id)
    rows = [model.tokenizer(t, add_special_tokens=True)["input_ids"] + [eos] for t in texts]
    ids, mask = left_pad(rows, pad)
    return ids.to(model.device), mask.to(model.device)


def train_contrastive(model: "LlavaAdapter", images: Sequence[np.ndarray], examples: Sequence["Instruction"],
                      captions: Sequence[str], hallucinated: Sequence[str], stage: StageConfig, *,
                      contrastive_weight: float = 1.0, temperature: float = 0.07, seed: int = 0,
                      progress: bool = True) -> TuningRun:
    """HACL: instruction tuning plus ``contrastive_weight`` × the image-caption contrastive loss.

    Each step draws ``stage.batch_size`` different images; the language loss is
    :func:`plugins.tuning.losses.sft_loss` on one instruction example per image (``examples``
    cycle per image), the contrastive loss :func:`plugins.tuning.losses.contrastive_loss` between
    the images, their faithful ``captions`` and their ``hallucinated`` captions (one per image).
    The representations follow the official code: the LM reads the projected image tokens plus an
    end token, or a caption with its end token, alone; the last hidden state goes through a new
    linear projection per modality (trained with the model, then discarded); the temperature is
    learned from ``temperature`` and clamped to :data:`TEMPERATURE_RANGE`.
    """
    if not (len(images) == len(captions) == len(hallucinated)):
        raise ValueError(f"{len(images)} images, {len(captions)} captions and {len(hallucinated)} hallucinated captions; "
                         "expected one of each per image")
    encoder = SequenceEncoder(model, images)
    per_image: list[list[Example]] = [[] for _ in images]
    for e in examples:
        per_image[e.image].append(encoder.example(e.image, e.prompt, e.answer))
    if any(not group for group in per_image):
        raise ValueError("every image needs at least one instruction example")
    width = model.config.text_config.hidden_size
    low, high = TEMPERATURE_RANGE
    eval_idx = list(range(min(EVAL_ITEMS, len(images))))

    def make_heads() -> torch.nn.Module:
        heads = torch.nn.ModuleDict({"vision": torch.nn.Linear(width, width), "text": torch.nn.Linear(width, width)})
        heads.register_parameter("temperature", torch.nn.Parameter(torch.tensor(float(temperature))))
        return heads.to(model.device, model.dtype)

    def losses(policy: torch.nn.Module, heads: Any, idx: Sequence[int], step: int) -> tuple[torch.Tensor, torch.Tensor]:
        picked = [per_image[i][(step + i) % len(per_image[i])] for i in idx]
        batch = encoder.batch(picked)
        language = sft_loss(_logits(policy, batch), batch["labels"])
        pixels = encoder.pixels[torch.as_tensor(list(idx), device=encoder.pixels.device)]
        image = heads["vision"](_image_representation(policy, pixels, encoder.eos_id))  # (B, D)
        ids, mask = _caption_ids(model, [captions[i] for i in idx] + [hallucinated[i] for i in idx])
        text = heads["text"](_text_representation(policy, ids, mask))  # (2B, D)
        b = len(idx)
        return language, contrastive_loss(image, text[:b], text[b:], heads.temperature)

    def make_loss(policy: torch.nn.Module, heads: Any) -> Callable[[int], torch.Tensor]:
        order = index_batches(len(images), stage.batch_size, seed)

        def loss_fn(step: int) -> torch.Tensor:
            language, contrastive = losses(policy, heads, [int(i) for i in next(order)], step)
            return language + contrastive_weight * contrastive

        return loss_fn

    def clamp(heads: Any) -> None:
        with torch.no_grad():
            heads.temperature.clamp_(low, high)

    def evaluate(policy: torch.nn.Module, heads: Any) -> dict[str, float]:
        language, contrastive = losses(policy, heads, eval_idx, 0)
        return {"eval_loss": round(float(language + contrastive_weight * contrastive), 6),
                "eval_language_loss": round(float(language), 6), "eval_contrastive_loss": round(float(contrastive), 6),
                "temperature": round(float(heads.temperature), 6)}

    run = fine_tune(model, "HACL", stage, seed, make_loss, evaluate, make_heads=make_heads, after_step=clamp,
                    progress=progress)
    run.stats.update(objective="hacl", contrastive_weight=contrastive_weight, temperature_init=temperature,
                     examples=len(examples), images=len(images))
    return run


# ---------------------------------------------------------------- LRV: instruction tuning

def train_instructions(model: "LlavaAdapter", images: Sequence[np.ndarray], examples: Sequence["Instruction"],
                       stage: StageConfig, *, seed: int = 0, name: str = "instruction tuning",
                       prepare_policy: Optional[Callable[[torch.nn.Module], None]] = None,
                       progress: bool = True) -> TuningRun:
    """Instruction tuning: :func:`plugins.tuning.losses.sft_loss` on ``stage.batch_size`` shuffled examples per step.

    ``prepare_policy`` is passed to :func:`fine_tune` (re-initialise or freeze parts before training).
    """
    encoder = SequenceEncoder(model, images)
    encoded = [encoder.example(e.image, e.prompt, e.answer) for e in examples]
    eval_set = encoded[:EVAL_ITEMS]

    def make_loss(policy: torch.nn.Module, heads: Any) -> Callable[[int], torch.Tensor]:
        order = index_batches(len(encoded), stage.batch_size, seed)

        def loss_fn(_: int) -> torch.Tensor:
            batch = encoder.batch([encoded[int(i)] for i in next(order)])
            return sft_loss(_logits(policy, batch), batch["labels"])

        return loss_fn

    def evaluate(policy: torch.nn.Module, heads: Any) -> dict[str, float]:
        batch = encoder.batch(eval_set)
        return {"eval_loss": round(float(sft_loss(_logits(policy, batch), batch["labels"])), 6)}

    run = fine_tune(model, name, stage, seed, make_loss, evaluate, prepare_policy=prepare_policy, progress=progress)
    run.stats.update(objective="sft", examples=len(examples), negative_examples=sum(e.negative for e in examples),
                     images=len(images))
    return run
