"""Training the tuned methods' weights (dpo, rdpo, hacl, lrv, world-tune), apart from the code that answers with them.

Each ``train_*`` function is the trainer of one method's artifact
(:func:`plugins.artifacts.model_artifact`, kind ``tuned-<name>``): ``trainer(model, config)``
builds the method's data from the world's tuning stream and the model's own answers
(:mod:`plugins.tuning`), fine-tunes a copy of the model against the frozen original
(:mod:`plugins.tuning.trainer`) and returns ``{"state": the tensors that changed (CPU), "stats":
how the run went}``. ``config`` is the method's frozen config; every one of its fields decides the
training, so all of them are in the artifact's key, next to the checkpoint's hash, the dtype, the
device type and the code of this module's import closure (the tuning code, the world, the
adapter whose answers make the preference data). The methods that swap the weights in while
answering are :mod:`plugins.methods.dpo`, :mod:`~plugins.methods.rdpo`,
:mod:`~plugins.methods.hacl`, :mod:`~plugins.methods.lrv` and :mod:`~plugins.methods.world_tune`;
editing them never retrains.

>>> from types import SimpleNamespace
>>> stage_of(SimpleNamespace(steps=300, batch_size=16, lr=5e-5, warmup=0, weight_decay=0.05)).weight_decay
0.05
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from plugins.models.loop import StageConfig
from plugins.world import build_world

if TYPE_CHECKING:
    from plugins.models.adapter import LlavaAdapter
    from plugins.models.data import WorldData
    from plugins.tuning.instructions import Instruction
    from plugins.tuning.trainer import TuningRun
    from plugins.world import WorldConfig

__all__ = ["train_dpo", "train_rdpo", "train_hacl", "train_lrv", "train_world_tune", "stage_of", "world_instructions",
           "reinitialise"]


def stage_of(config: Any) -> StageConfig:
    """The optimisation schedule of :func:`plugins.models.loop.run_stage` from a tuned method's config."""
    c = config
    return StageConfig(steps=c.steps, batch_size=c.batch_size, lr=c.lr, warmup=c.warmup, weight_decay=c.weight_decay)


def _timed(train: Callable[[], "TuningRun"]) -> dict[str, Any]:
    """``{"state", "stats"}`` of the run ``train()`` makes; the stats gain its wall and CPU seconds (data included)."""
    wall, cpu = time.perf_counter(), time.process_time()
    run = train()
    stats = dict(run.stats)
    stats.update(train_seconds=round(time.perf_counter() - wall, 2),
                 train_cpu_seconds=round(time.process_time() - cpu, 2))
    return {"state": run.state, "stats": stats}


# ---------------------------------------------------------------- DPO and rDPO

def _preference_run(model: "LlavaAdapter", config: Any, retrieval: bool, extra: dict[str, Any],
                    progress: bool) -> "TuningRun":
    from plugins.models.data import build_world_data
    from plugins.tuning.preferences import (
        PREFERENCE_SPLIT, PreferenceData, build_preferences, realign_pairs, with_retrieval,
    )
    from plugins.tuning.trainer import train_preference

    c = config
    world = build_world(c.world)
    t0 = time.perf_counter()
    if c.data == "re-align":  # rejected answers carry the retrieved image's content: retrieval comes first
        prefs = with_retrieval(PreferenceData(build_world_data(world, c.scenes, PREFERENCE_SPLIT), ()), model)
        prefs = realign_pairs(prefs, world, seed=c.seed, counts=tuple(c.questions), captions=c.captions)
    else:
        prefs = build_preferences(model, world, c.scenes, seed=c.seed, counts=tuple(c.questions), captions=c.captions)
        if retrieval:
            prefs = with_retrieval(prefs, model)
    data_seconds = time.perf_counter() - t0
    run = train_preference(model, prefs, stage_of(c), beta=c.beta, seed=c.seed, progress=progress, **extra)
    run.stats["data_seconds"] = round(data_seconds, 2)
    return run


def train_dpo(model: "LlavaAdapter", config: Any, progress: bool = True) -> dict[str, Any]:
    """DPO on the model's own hallucinated vs corrected answers (:class:`plugins.methods.dpo.DPO`'s config)."""
    return _timed(lambda: _preference_run(model, config, False, {"sft_weight": config.sft_weight}, progress))


def train_rdpo(model: "LlavaAdapter", config: Any, progress: bool = True) -> dict[str, Any]:
    """rDPO: DPO's pairs plus a retrieved image per image (:class:`plugins.methods.rdpo.RDPO`'s config)."""
    c = config
    extra = {"sft_weight": c.sft_weight, "visual_weight": c.visual_weight, "scoring": c.scoring}
    return _timed(lambda: _preference_run(model, c, c.visual_weight > 0, extra, progress))


# ---------------------------------------------------------------- HACL and LRV

def _instruction_run(model: "LlavaAdapter", config: Any, mix: str,
                     fit: Callable[["WorldData", list, Any], "TuningRun"]) -> dict[str, Any]:
    """Build ``config``'s instruction data on the preference split (timed apart), fit it with ``fit``, time it all."""
    from plugins.models.data import build_world_data
    from plugins.tuning.instructions import instruction_set
    from plugins.tuning.preferences import PREFERENCE_SPLIT

    def run() -> "TuningRun":
        world = build_world(config.world)
        t0 = time.perf_counter()
        data = build_world_data(world, config.scenes, PREFERENCE_SPLIT)
        examples = instruction_set(data, world, mix=mix, counts=tuple(config.questions))
        data_seconds = time.perf_counter() - t0
        tuned = fit(data, examples, world)
        tuned.stats["data_seconds"] = round(data_seconds, 2)
        return tuned

    return _timed(run)


def train_hacl(model: "LlavaAdapter", config: Any, progress: bool = True) -> dict[str, Any]:
    """Instruction loss plus image-caption contrast (:class:`plugins.methods.hacl.HACL`'s config)."""
    from plugins.tuning.instructions import hallucinated_captions
    from plugins.tuning.trainer import train_contrastive

    c = config

    def fit(data: "WorldData", examples: list, world: Any) -> "TuningRun":
        negatives = hallucinated_captions(data, world, c.seed)  # HACL's hard negatives: counted as training time
        return train_contrastive(model, data.images, examples, data.captions, negatives, stage_of(c),
                                 contrastive_weight=c.contrastive_weight, temperature=c.temperature, seed=c.seed,
                                 progress=progress)

    return _instruction_run(model, c, "plain", fit)


def train_lrv(model: "LlavaAdapter", config: Any, progress: bool = True) -> dict[str, Any]:
    """Instruction tuning with balanced hard negative questions (:class:`plugins.methods.lrv.LRV`'s config)."""
    from plugins.tuning.trainer import train_instructions

    return _instruction_run(model, config, "negative",
                            lambda data, examples, world: train_instructions(model, data.images, examples,
                                                                             stage_of(config), seed=config.seed,
                                                                             progress=progress))


# ---------------------------------------------------------------- world-tune: the cause arms

def world_instructions(data: "WorldData", world: "WorldConfig", counts: tuple[int, int, int], caption_share: float,
                       seed: int) -> list["Instruction"]:
    """Per scene of ``data``: its noisy caption (probability ``caption_share``) or ``counts`` yes/no questions
    (object, attribute, relation; the attribute count asks that many colour and that many size questions).

    Questions use random negatives and the world's ``yes_ratio``; captions the world's caption noise.

    >>> from plugins.models.data import build_world_data
    >>> from plugins.world import WorldConfig
    >>> world = WorldConfig(yes_ratio=1.0)
    >>> examples = world_instructions(build_world_data(world, 20, "tune"), world, (2, 0, 0), 0.0, 0)
    >>> {e.answer for e in examples}
    {'yes'}
    """
    from plugins.tuning.instructions import Instruction
    from plugins.world import (
        CAPTION_PROMPT, attribute_questions, existence_questions, noisy_caption, relation_questions, size_questions,
    )

    rng = np.random.default_rng(seed)
    out: list[Instruction] = []
    n_obj, n_attr, n_rel = counts
    for i, scene in enumerate(data.scenes):
        if rng.random() < caption_share:
            noisy = noisy_caption(scene, world, rng=rng)
            out.append(Instruction(i, CAPTION_PROMPT, noisy.text, "caption", bool(noisy.inserted)))
            continue
        questions = (existence_questions(scene, world, strategy="random", n=n_obj)
                     + attribute_questions(scene, world, strategy="random", n=n_attr)
                     + size_questions(scene, world, strategy="random", n=n_attr)
                     + relation_questions(scene, world, n=n_rel))
        out += [Instruction(i, q.text, q.answer, q.kind, q.answer == "no") for q in questions]
    return out


def reinitialise(module: torch.nn.Module) -> int:
    """Draw fresh weights for every sub-module of ``module`` that can (``reset_parameters``); returns how many.

    CLIP's class embedding, a bare parameter, is redrawn from N(0, 1) as CLIP initialises it.
    """
    count = 0
    for sub in module.modules():
        if sub is not module and hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
            count += 1
        embedding = getattr(sub, "class_embedding", None)
        if isinstance(embedding, torch.nn.Parameter):
            with torch.no_grad():
                embedding.normal_()
    return count


def _reset_and_freeze(policy: torch.nn.Module, config: Any) -> None:
    """The arm's changes to the policy before tuning: re-initialised and frozen towers (see the config)."""
    c = config
    tower, projector = policy.model.vision_tower, policy.model.multi_modal_projector
    if c.reset_projector:
        reinitialise(projector)
    if c.reset_vision:
        reinitialise(tower)
    if c.freeze_vision:
        tower.requires_grad_(False)
    if c.freeze_lm:
        policy.model.language_model.requires_grad_(False)
        policy.get_output_embeddings().requires_grad_(False)


def _describe(config: Any) -> str:
    c = config
    parts = [f"seed {c.seed}"] + [k for k in ("reset_projector", "reset_vision", "freeze_vision", "freeze_lm")
                                  if getattr(c, k)]
    return ", ".join(parts)


def train_world_tune(model: "LlavaAdapter", config: Any, progress: bool = True) -> dict[str, Any]:
    """Continued end-to-end tuning on a controlled world (:class:`plugins.methods.world_tune.WorldTune`'s config)."""
    from plugins.models.data import build_world_data
    from plugins.tuning import trainer
    from plugins.tuning.preferences import PREFERENCE_SPLIT

    def run() -> "TuningRun":
        c, world = config, build_world(config.world)
        t0 = time.perf_counter()
        data = build_world_data(world, c.scenes, PREFERENCE_SPLIT)
        examples = world_instructions(data, world, tuple(c.questions), c.caption_share, c.seed)
        data_seconds = time.perf_counter() - t0
        tuned = trainer.train_instructions(model, data.images, examples, stage_of(c), seed=c.seed,
                                           name=f"world-tune ({_describe(c)})",
                                           prepare_policy=lambda policy: _reset_and_freeze(policy, c),
                                           progress=progress)
        yes = [e for e in examples if e.kind != "caption"]
        tuned.stats.update(data_seconds=round(data_seconds, 2), world_fingerprint=world.fingerprint(),
                           yes_share=round(sum(e.answer == "yes" for e in yes) / max(1, len(yes)), 4),
                           captions=sum(e.kind == "caption" for e in examples))
        return tuned

    return _timed(run)
