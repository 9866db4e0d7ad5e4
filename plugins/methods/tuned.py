"""Parameter-tuning methods: the base of DPO, rDPO, HACL, LRV and world-tune, which train once per checkpoint.

The survey's parameter-tuning family changes weights, so unlike every other method here these
train before they answer. Each is a :class:`TunedMethod` in a module of its own
(:mod:`plugins.methods.dpo`, :mod:`~plugins.methods.rdpo`, :mod:`~plugins.methods.hacl`,
:mod:`~plugins.methods.lrv`, :mod:`~plugins.methods.world_tune`):

* **train once, then cache.** The first time a method's hooks are asked for on a model, its
  trainer (a function of :mod:`plugins.trainers.tuned`) builds its data from the synthetic world's
  tuning stream (:mod:`plugins.tuning`), fine-tunes a copy of the model against the frozen original
  and keeps the tensors that changed. The result is cached on disk
  (:func:`plugins.artifacts.model_artifact`, kind ``tuned-<name>``) keyed by the method's config,
  the checkpoint's hash, the dtype, the device type and the code the trainer runs (the
  normalised syntax trees of its import closure and of the adapter's); an unchanged trainer on an
  unchanged checkpoint never trains twice, and editing this module (how the weights are swapped
  in) never retrains. A model built in memory (no checkpoint directory) is trained per method
  instance and nothing is written.
* **swap, answer, restore.** :meth:`TunedMethod.hooks` returns :class:`SwappedWeights`: the tuned
  tensors are copied into the model when the ``with`` block starts and the original values are
  copied back when it ends, whether it ends normally or by an exception. The adapter's model is
  the frozen reference of training and is never left changed.
* **cost on record.** :meth:`TunedMethod.prepare` trains (or loads) up front, so a caller that
  times answering can exclude training; :attr:`TunedMethod.train_seconds` is the wall time of the
  run that produced the weights (data, reference pass and optimisation; from the cache, the time
  it took when it was trained), and :meth:`TunedMethod.training_report` has the full statistics
  (loss curve, loss before and after on a fixed set, data counts, threads).

Common deviations from the papers, each method lists its own: full fine-tuning of the 1.3 M
parameter model instead of LoRA on a 7B one, learning rates scaled up accordingly (1e-6 moves a
tiny model nowhere in a few hundred steps), a few hundred CPU steps instead of an epoch over
tens of thousands of GPT-4-written examples, and data from exact ground truth instead of GPT-4.

>>> TunedConfig().steps, TunedConfig().lr
(300, 5e-05)
"""
from __future__ import annotations

import contextlib
import weakref
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from pydantic import Field

from plugins.artifacts import model_artifact
from plugins.methods.base import Method
from plugins.methods.posthoc import WorldMethodConfig
from plugins.world import WorldConfig, build_world

if TYPE_CHECKING:
    import torch

    from plugins.models.adapter import LlavaAdapter
    from plugins.models.batch import Batch

__all__ = ["TunedMethod", "TunedConfig", "SwappedWeights"]


class SwappedWeights(contextlib.AbstractContextManager):
    """Inside the ``with`` block, ``module``'s state-dict entries named in ``state`` hold those values.

    Every name and shape is checked before anything is copied, so a bad state changes nothing.
    On exit the saved originals are copied back, also when the block raised.

    >>> import torch
    >>> layer = torch.nn.Linear(1, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = layer.weight.fill_(2.0)
    >>> with SwappedWeights(layer, {"weight": torch.tensor([[5.0]])}):
    ...     layer(torch.ones(1, 1)).item()
    5.0
    >>> layer.weight.item()
    2.0
    """

    def __init__(self, module: "torch.nn.Module", state: dict[str, "torch.Tensor"]):
        self.module = module
        self.state = state
        self._saved: dict[str, "torch.Tensor"] = {}

    def __enter__(self) -> "SwappedWeights":
        import torch

        if self._saved:
            raise RuntimeError("SwappedWeights entered twice; use one instance per with block")
        targets = self.module.state_dict(keep_vars=True)
        problems = [f"{k}: not in the model" for k in self.state if k not in targets]
        problems += [f"{k}: tuned {tuple(v.shape)} vs model {tuple(targets[k].shape)}"
                     for k, v in self.state.items() if k in targets and targets[k].shape != v.shape]
        if problems:
            raise ValueError("tuned weights do not fit this model (trained on another checkpoint?): " + "; ".join(problems[:5]))
        try:
            with torch.no_grad():
                for name, value in self.state.items():
                    target = targets[name]
                    self._saved[name] = target.detach().clone()
                    target.copy_(value.to(target.device, target.dtype))
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> Optional[bool]:
        self._restore()
        return None

    def _restore(self) -> None:
        import torch

        targets = self.module.state_dict(keep_vars=True)
        with torch.no_grad():
            while self._saved:
                name, value = self._saved.popitem()
                targets[name].copy_(value)


class TunedConfig(WorldMethodConfig):
    """What every tuning method has: data size, optimisation schedule, seed (and ``world``)."""

    scenes: int = Field(400, ge=2)  # scenes of the world's "tune" stream the data is built from
    steps: int = Field(300, ge=1)  # optimiser steps
    batch_size: int = Field(16, ge=1)  # pairs (or examples) per step
    lr: float = Field(5e-5, gt=0)  # peak learning rate (AdamW), full fine-tuning
    warmup: int = Field(0, ge=0)  # linear warm-up steps, then cosine decay to 10 % of the peak
    weight_decay: float = Field(0.0, ge=0)  # AdamW weight decay on matrices
    seed: int = Field(0, ge=0)  # seeds injected hallucinations, new parameters and the batch order


class TunedMethod(Method):
    """A method that fine-tunes the model once (cached) and answers with the tuned weights swapped in.

    Subclasses set :attr:`trainer`: a module-level function of :mod:`plugins.trainers.tuned`,
    ``trainer(model, config) -> {"state": changed tensors, "stats": ...}``.
    """

    Config: ClassVar[type[TunedConfig]] = TunedConfig
    trainer: ClassVar[Callable[..., dict[str, Any]]]  # staticmethod(a plugins.trainers.tuned function)
    shares_prompt_prefixes: ClassVar[bool] = True  # its only hook swaps weights in, for the shared prefix too

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.world: WorldConfig = build_world(self.config.world)
        self._tuned: "weakref.WeakKeyDictionary[LlavaAdapter, dict[str, Any]]" = weakref.WeakKeyDictionary()
        self._last_stats: Optional[dict[str, Any]] = None

    @property
    def artifact_kind(self) -> str:
        return f"tuned-{self.name or type(self).__name__.lower()}"

    def train(self, model: "LlavaAdapter") -> dict[str, Any]:
        """``{"state", "stats"}`` of a tuning run on ``model``, trained now (no cache)."""
        return self.trainer(model, self.config)

    def tuned(self, model: "LlavaAdapter") -> dict[str, Any]:
        """``{"state": changed tensors on the model's device, "stats": ...}``: from memory, the cache, or trained now."""
        if model not in self._tuned:
            key = {"config": self.config.model_dump(mode="json")}  # every field decides the training
            value = model_artifact(self.artifact_kind, key, self.trainer, model, self.config)
            state = {k: v.to(model.device) for k, v in value["state"].items()}
            self._tuned[model] = {"state": state, "stats": value["stats"]}
        self._last_stats = self._tuned[model]["stats"]
        return self._tuned[model]

    def prepare(self, model: "LlavaAdapter") -> dict[str, Any]:
        """Train (or load) the tuned weights for ``model`` now; returns :meth:`training_report`."""
        return self.training_report(model)

    def training_report(self, model: "LlavaAdapter") -> dict[str, Any]:
        """The statistics of the run behind ``model``'s tuned weights (a copy)."""
        return dict(self.tuned(model)["stats"])

    @property
    def train_seconds(self) -> Optional[float]:
        """Wall seconds of the tuning run behind the weights last used (``None`` before any)."""
        return None if self._last_stats is None else float(self._last_stats["train_seconds"])

    def hooks(self, model: "LlavaAdapter", batch: "Batch") -> contextlib.AbstractContextManager:
        """The tuned weights, swapped into ``model`` for the ``with`` block (see :class:`SwappedWeights`)."""
        return SwappedWeights(model.model, self.tuned(model)["state"])
