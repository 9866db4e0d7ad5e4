"""What the activation-steering methods (VTI, ICT) share: a demo set, answer-appended prompts, cached directions.

Steering methods add to hidden states a direction computed once per model from a small *demo
set* of contrasting inputs (a faithful and a hallucinated caption, a clear and a blurred image).
The papers draw their demos from COCO; here they come from the synthetic world's own held-out
``"demo"`` scene stream (:func:`demo_scenes`), a seed stream separate from ``train`` (what the
tiny model learned from) and ``test`` (what the benchmarks ask about), so the directions never see
a test image. The same world images serve a real LLaVA checkpoint: the processor resizes the
64 px scenes like any photo.

:class:`SteeringMethod` computes a method's directions in :meth:`~SteeringMethod.prepare` (the runner
calls it once per method and model before any cell, outside the timed answering; a caller that
skips it gets them the first time the hooks are asked for), and keeps them twice: in memory per adapter (hooks are built per chunk of a batch)
and on disk through :func:`plugins.methods.base.cached_artifact`, keyed by the method's
fingerprint (name, config, code), the checkpoint hash and the dtype. A model built in memory
(``adapter.source is None``) has no checkpoint hash; its directions are computed per method
instance and never written to disk.

>>> from plugins.world import WorldConfig
>>> [len(s.objects) >= 3 for s in demo_scenes(WorldConfig(), 4, min_objects=3)]
[True, True, True, True]
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch

from plugins.methods.base import ForwardHooks, Method, cached_artifact
from plugins.world import SOURCE_MODULES, Scene, SceneSampler, WorldConfig

if TYPE_CHECKING:
    from plugins.models.batch import Batch
    from plugins.models.llava import EncodedBatch, LlavaAdapter

__all__ = ["DEMO_SPLIT", "DEMO_BATCH", "SteeringMethod", "demo_scenes", "encode_with_answers", "vision_layers",
           "layer_states"]

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
    from plugins.models.llava import EncodedBatch

    if len(answers) != len(batch):
        raise ValueError(f"{len(answers)} answers for a batch of {len(batch)}, expected one per item")
    encoded = model.encode(batch)
    rows = []
    for ids, mask, answer in zip(encoded.input_ids, encoded.attention_mask, answers):
        tail = model.tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        rows.append(torch.cat([ids[mask.bool()], tail.to(ids.device)]))
    length = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), length), model.tokenizer.pad_token_id, dtype=torch.long, device=model.device)
    attention_mask = torch.zeros_like(input_ids)  # (B, T)
    for i, row in enumerate(rows):
        input_ids[i, length - len(row):] = row
        attention_mask[i, length - len(row):] = 1
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


class SteeringMethod(Method):
    """A method whose hooks need directions computed once per model from a demo set.

    Subclasses set :attr:`artifact_kind` and implement :meth:`compute_directions`, returning a
    dict of CPU tensors (anything :func:`torch.save` stores with ``weights_only`` loading).
    """

    artifact_kind: ClassVar[str] = ""  # sub-folder of the cache, e.g. "vti-directions"
    uses_modules: ClassVar[tuple[str, ...]] = SOURCE_MODULES  # the demo scenes, images and captions come from the world

    def __init__(self, config: Any = None):
        super().__init__(config)
        self._directions: "weakref.WeakKeyDictionary[LlavaAdapter, dict[str, Any]]" = weakref.WeakKeyDictionary()

    @property
    def world(self) -> WorldConfig:
        """The world whose ``demo`` scenes make the demo set (``config.world``, default: the default world)."""
        return WorldConfig(**(self.config.world or {}))

    def compute_directions(self, model: "LlavaAdapter") -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__qualname__} must implement compute_directions(model)")

    def cache_key(self, model: "LlavaAdapter") -> Optional[dict[str, Any]]:
        """What the directions depend on, or ``None`` for a model without a checkpoint directory."""
        if model.source is None:
            return None
        return {"method": self.fingerprint_payload(), "checkpoint_sha256": model.checkpoint_hash(),
                "dtype": str(model.dtype)}

    def prepare(self, model: "LlavaAdapter") -> dict[str, Any]:
        """Compute (or load) the directions for ``model`` up front: once-per-model work, not answering time."""
        return self.directions(model)

    def directions(self, model: "LlavaAdapter") -> dict[str, Any]:
        """This method's directions for ``model``: from memory, else the disk cache, else computed now."""
        if model not in self._directions:
            key = self.cache_key(model)
            if key is None:
                value = self.compute_directions(model)
            else:
                value = cached_artifact(self.artifact_kind, key, lambda: self.compute_directions(model))
            self._directions[model] = _to_device(value, model.device)
        return self._directions[model]


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value
