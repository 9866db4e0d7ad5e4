"""Artifacts computed once per model and kept on disk: tuned weights, steering directions, detectors.

An artifact is the value of a **trainer**, a module-level function, on some inputs. Its cache key
is what the caller says decides it (a config's values, the checkpoint's hash, a dtype) plus the
identity of the code that runs while it trains: the normalised syntax trees of every module in
the import closure (:func:`plugins.identity.code_hash`) of the trainer's module and of the module
of every project object handed to it (the adapter whose ``generate`` writes the model's own
answers into preference data; configuration objects count by their values, in the key). So a
trainer lives in a module of its own, apart from the code that answers with its result: editing
how a method *uses* tuned weights never retrains them, editing how they are *trained* always
does, and editing a docstring does neither.

Files go to ``<cache>/<kind>/<key hash>.pt`` (:func:`plugins.files.cache_root`: ``$ALIGNSCOPE_CACHE``
or ``build/cache``), with the key beside it as ``.json``; never committed, safe to delete. A
file that does not load (a crash elsewhere, a truncated copy) is computed again.

>>> import tempfile, os
>>> from plugins.artifacts import cached_artifact, _demo_trainer
>>> with tempfile.TemporaryDirectory() as tmp:
...     os.environ["ALIGNSCOPE_CACHE"] = tmp
...     first = cached_artifact("demo", {"a": 1}, _demo_trainer, 2)
...     again = cached_artifact("demo", {"a": 1}, _demo_trainer, 3)  # same key: not recomputed
...     del os.environ["ALIGNSCOPE_CACHE"]
>>> first, again
({'x': 2}, {'x': 2})
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

__all__ = ["cached_artifact", "model_artifact", "artifact_key", "artifact_path", "trainer_identity"]


def _code_of_argument(value: Any) -> str | None:
    """The project module defining ``value``'s class, unless it is configuration (identified by its values)."""
    from pydantic import BaseModel

    from plugins.identity import PROJECT_PACKAGES

    module = type(value).__module__
    if module.split(".")[0] not in PROJECT_PACKAGES or isinstance(value, BaseModel):
        return None
    return module


def trainer_identity(trainer: Callable[..., Any], arguments: Sequence[Any] = ()) -> dict[str, str]:
    """``{"trainer": module:qualname, "code": hash of the code it runs}`` (see the module docstring)."""
    from plugins.identity import code_hash

    module, qualname = getattr(trainer, "__module__", None), getattr(trainer, "__qualname__", "")
    if not module or not qualname or "<" in qualname or "." in qualname:
        raise TypeError(f"trainer {trainer!r} must be a module-level function (not a lambda, a method or a "
                        "partial), so that the code that trains an artifact can be identified")
    roots = {module} | {m for m in map(_code_of_argument, arguments) if m}
    return {"trainer": f"{module}:{qualname}", "code": code_hash(sorted(roots))}


def artifact_key(key: Mapping[str, Any], trainer: Callable[..., Any], arguments: Sequence[Any] = ()) -> dict[str, Any]:
    """The full key of an artifact: the caller's ``key`` plus :func:`trainer_identity`."""
    identity = trainer_identity(trainer, arguments)
    clash = sorted(set(key) & set(identity))
    if clash:
        raise ValueError(f"artifact key uses reserved field(s) {clash}; rename them")
    return {**dict(key), **identity}


def artifact_path(kind: str, full_key: Mapping[str, Any]) -> Path:
    """Where the artifact of ``full_key`` (see :func:`artifact_key`) is kept."""
    from plugins.files import cache_root

    if not kind or not kind.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"artifact kind {kind!r} must be a name of letters, digits, '-' or '_'")
    text = json.dumps(dict(full_key), sort_keys=True, default=str)
    return cache_root() / kind / f"{hashlib.sha256(text.encode('utf-8')).hexdigest()[:32]}.pt"


def cached_artifact(kind: str, key: Mapping[str, Any], trainer: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``trainer(*args, **kwargs)``, computed once per ``key`` and trainer code, kept under the cache.

    ``key`` is JSON: everything besides the trainer's code that decides the value (the config's
    values, the checkpoint's hash, the dtype). The value is anything ``torch.save`` stores
    (tensors, dicts, lists); it is written atomically.
    """
    import torch

    from plugins.files import write_atomic

    full = artifact_key(key, trainer, [*args, *kwargs.values()])
    path = artifact_path(kind, full)
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a corrupt or foreign file: recompute and overwrite it
            pass
    value = trainer(*args, **kwargs)
    buffer = io.BytesIO()
    torch.save(value, buffer)
    write_atomic(path, buffer.getvalue())
    write_atomic(path.with_suffix(".json"), json.dumps(full, sort_keys=True, default=str) + "\n")  # what it was computed from
    return value


def model_artifact(kind: str, key: Mapping[str, Any], trainer: Callable[..., Any], model: Any, *args: Any,
                   **kwargs: Any) -> Any:
    """``trainer(model, *args, **kwargs)`` for a loaded model (an adapter), cached as :func:`cached_artifact` does.

    The model adds its part to ``key``: the checkpoint's hash, the dtype and the device type (a
    GPU's numbers differ from a CPU's in the last bits). A model built in memory
    (``model.source is None``) has no checkpoint to key by: the trainer runs on every call and
    nothing is written, so callers keep the value per model object.
    """
    if model.source is None:
        return trainer(model, *args, **kwargs)
    full = {**dict(key), "checkpoint_sha256": model.checkpoint_hash(), "dtype": str(model.dtype),
            "device": model.device.type}
    return cached_artifact(kind, full, trainer, model, *args, **kwargs)


def _demo_trainer(x: int) -> dict[str, int]:
    """A trainer for the module's example."""
    return {"x": x}
