"""The demo set of the activation-steering trainers (VTI, ICT) and the tools they record hidden states with.

Steering methods add to hidden states a direction computed once per model from a small *demo
set* of contrasting inputs (a faithful and a hallucinated caption, a clear and a blurred image).
The papers draw their demos from COCO; here they come from the synthetic world's own held-out
``"demo"`` scene stream (:func:`demo_scenes`), a seed stream separate from ``train`` (what the
tiny model learned from) and ``test`` (what the benchmarks ask about), so the directions never see
a test image. The same world images serve a real LLaVA checkpoint: the processor resizes the
64 px scenes like any photo.

The trainers themselves are :func:`plugins.trainers.vti.vti_directions` and
:func:`plugins.trainers.ict.ict_directions`; the methods that answer with their directions are
:mod:`plugins.methods.vti` and :mod:`plugins.methods.ict`.

>>> from plugins.world import WorldConfig
>>> [len(s.objects) >= 3 for s in demo_scenes(WorldConfig(), 4, min_objects=3)]
[True, True, True, True]
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from plugins.models.hooks import ForwardHooks
from plugins.models.padding import left_pad
from plugins.world import Scene, SceneSampler, WorldConfig

if TYPE_CHECKING:
    from plugins.models.adapter import EncodedBatch, LlavaAdapter
    from plugins.models.batch import Batch

__all__ = ["DEMO_SPLIT", "DEMO_BATCH", "demo_scenes", "encode_with_answers", "vision_layers", "layer_states"]

DEMO_SPLIT = "demo"
"""The world's scene stream for demonstrations: disjoint seeds from ``train`` and ``test``."""
DEMO_BATCH = 16
"""Demo inputs per forward pass while computing directions (memory only; results do not depend on it)."""


def demo_scenes(world: WorldConfig, n: int, *, min_objects: int = 0) -> list[Scene]:
    """The first ``n`` scenes of the world's ``demo`` stream that hold at least ``min_objects`` objects."""
    sampler = SceneSampler(world)
    scenes: list[Scene] = []
    index = 0
    while len(scenes) < n:
        scene = sampler.sample_split(DEMO_SPLIT, index)
        if len(scene.objects) >= min_objects:
            scenes.append(scene)
        index += 1
    return scenes


def encode_with_answers(model: "LlavaAdapter", batch: "Batch", answers: Sequence[str]) -> "EncodedBatch":
    """``batch`` encoded by the adapter with each item's ``answers[i]`` appended after the assistant turn.

    The prompt goes through :meth:`LlavaAdapter.encode` unchanged (chat template, image tokens);
    the answer's tokens (no special tokens) follow the prompt's last token, and rows are
    left-padded again, so position ``-1`` is every item's last answer token.
    """
    from plugins.models.adapter import EncodedBatch

    if len(answers) != len(batch):
        raise ValueError(f"{len(answers)} answers for a batch of {len(batch)}, expected one per item")
    encoded = model.encode(batch)
    rows = []
    for ids, mask, answer in zip(encoded.input_ids, encoded.attention_mask, answers):
        tail = model.tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        rows.append(torch.cat([ids[mask.bool()], tail.to(ids.device)]))
    input_ids, attention_mask = left_pad(rows, model.tokenizer.pad_token_id, model.device)  # (B, T) each
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)  # (B, T), as LlavaAdapter.encode computes them
    prompts = tuple(f"{p} {a}" for p, a in zip(encoded.prompts, answers))
    return EncodedBatch(input_ids, attention_mask, position_ids, encoded.pixel_values,
                        input_ids == model.image_token_id, prompts)


def vision_layers(model: "LlavaAdapter") -> Any:
    """The vision tower's encoder layers (its longest ``nn.ModuleList``, e.g. CLIP's ``encoder.layers``)."""
    lists = [m for m in model.vision_tower.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise TypeError(f"the vision tower {type(model.vision_tower).__name__} has no nn.ModuleList of encoder layers")
    return max(lists, key=len)


@contextlib.contextmanager
def layer_states(layers: Sequence[Any], select: Callable[[torch.Tensor], torch.Tensor] = lambda h: h
                 ) -> Iterator[list[torch.Tensor]]:
    """While active, collect ``select(h)`` (float32, CPU) for the first layer's input and every layer's output.

    One forward pass fills the list with L + 1 tensors, embedding output first, like a model's
    ``hidden_states`` except that the last one is the raw layer output (before any final norm).
    Forward hooks do the recording: asking transformers for ``output_hidden_states`` would install
    capturing hooks of its own that stay on the model.
    """
    states: list[torch.Tensor] = []

    def keep(hidden: torch.Tensor) -> None:
        states.append(select(hidden).float().cpu())

    hooks = ForwardHooks().add(layers[0], lambda module, args, kwargs: keep(args[0] if args else kwargs["hidden_states"]),
                               pre=True, with_kwargs=True)
    for layer in layers:
        hooks.add(layer, lambda module, args, output: keep(output[0] if isinstance(output, tuple) else output))
    with hooks:
        yield states
