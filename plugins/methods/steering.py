"""What the activation-steering methods (VTI, ICT) share: directions trained once per model, kept, moved to the model.

Steering methods add to hidden states a direction computed once per model from a small *demo
set* of contrasting inputs (the demo set and the tools that record hidden states are in
:mod:`plugins.trainers.directions`). Training the directions is a **trainer**'s job, a
module-level function of :mod:`plugins.trainers` (:func:`plugins.trainers.vti.vti_directions`,
:func:`plugins.trainers.ict.ict_directions`); a :class:`SteeringMethod` only answers with them.

:class:`SteeringMethod` asks for its directions in :meth:`~SteeringMethod.prepare` (the runner
calls it once per method and model before any cell, outside the timed answering; a caller that
skips it gets them the first time the hooks are asked for), and keeps them twice: in memory per
adapter (hooks are built per chunk of a batch) and on disk through
:func:`plugins.artifacts.model_artifact`, keyed by the config fields that decide the directions,
the checkpoint hash, the dtype, the device type and the code of the trainer's import closure.
Editing how a method *uses* its directions therefore never recomputes them. A model built in
memory (``adapter.source is None``) has no checkpoint hash; its directions are computed per method
instance and never written to disk.
"""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch

from plugins.artifacts import model_artifact
from plugins.methods.base import Method

if TYPE_CHECKING:
    from plugins.models.adapter import LlavaAdapter

__all__ = ["SteeringMethod"]


class SteeringMethod(Method):
    """A method whose hooks need directions computed once per model from a demo set.

    Subclasses set :attr:`artifact_kind` and :attr:`trainer`: a module-level function
    ``trainer(model, **training_values())`` returning a dict of CPU tensors (anything
    :func:`torch.save` stores with ``weights_only`` loading), and list in :attr:`answer_only` the
    config fields that act only while answering (kept out of the trainer's arguments and key).
    """

    artifact_kind: ClassVar[str] = ""  # sub-folder of the cache, e.g. "vti-directions"
    trainer: ClassVar[Callable[..., dict[str, Any]]]  # staticmethod(a plugins.trainers function)
    answer_only: ClassVar[frozenset[str]] = frozenset()  # config fields the directions do not depend on

    def __init__(self, config: Any = None):
        super().__init__(config)
        self._directions: "weakref.WeakKeyDictionary[LlavaAdapter, dict[str, Any]]" = weakref.WeakKeyDictionary()

    def training_values(self) -> dict[str, Any]:
        """The config fields that decide the directions (JSON values): the trainer's keyword arguments and key."""
        return self.config.model_dump(mode="json", exclude=set(self.answer_only))

    def compute_directions(self, model: "LlavaAdapter") -> dict[str, Any]:
        """The directions for ``model``, computed now (no cache)."""
        return self.trainer(model, **self.training_values())

    def prepare(self, model: "LlavaAdapter") -> dict[str, Any]:
        """Compute (or load) the directions for ``model`` up front: once-per-model work, not answering time."""
        return self.directions(model)

    def directions(self, model: "LlavaAdapter") -> dict[str, Any]:
        """This method's directions for ``model``: from memory, else the disk cache, else computed now."""
        if model not in self._directions:
            values = self.training_values()
            value = model_artifact(self.artifact_kind, {"config": values}, self.trainer, model, **values)
            self._directions[model] = _to_device(value, model.device)
        return self._directions[model]


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value
