"""A cell's fingerprint: the SHA-256 of everything that decides its numbers, and nothing else.

The payload a fingerprint hashes (version :data:`FINGERPRINT_VERSION`):

* ``method`` — the plugin's registered name, class and resolved hyper-parameters;
* ``benchmark`` — name, split, options, parser name, answer budget, and the SHA-256 of the split's
  data files (question file and images, or the generated test set);
* ``checkpoint_sha256`` — the model's files (:func:`plugins.models.lookup.checkpoint_hash`);
* ``decoding`` — the cell's protocol: its search (greedy, sampling, beams), prompt suffix and
  answer budget, as the benchmark applies it (:meth:`plugins.benchmarks.base.Benchmark.decoding`);
* ``code`` — one hash over the normalised syntax trees of every project module in the import
  closure of the method's module, the benchmark's module and the adapter
  (:func:`plugins.identity.code_identity`): docstrings, comments and layout do not count, and
  code reached through any import does;
* ``seed`` and ``dtype``.

The batch size is not in it: batched answers equal unbatched ones (a tested property of the
adapter). Neither are package versions; a record's provenance names them.

:class:`Context` builds each benchmark, method and checkpoint hash once per run.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

from plugins.runner.matrix import Cell, ModelSpec, RunnerError, thaw

__all__ = ["FINGERPRINT_VERSION", "ADAPTER_MODULE", "Context", "cell_identity"]

FINGERPRINT_VERSION = 3
"""Bumped when the recipe changes: 1 hashed file bytes of hand-listed modules; 2 hashes normalised
syntax trees of the real import closure; 3 hashes the cell's protocol (suffix and sampling too)."""
ADAPTER_MODULE = "plugins.models.adapter"
"""The module of the adapter every cell answers through; its import closure is part of every cell's code."""


class Context:
    """Per-run caches: benchmark instances, method instances, checkpoint directories and hashes."""

    def __init__(self, data_dir: Optional[Path], dtype: str):
        self.data_dir = data_dir
        self.dtype = dtype
        self._benchmarks: dict[tuple, Any] = {}
        self._checkpoints: dict[tuple, tuple[Path, str]] = {}

    def benchmark(self, cell: Cell) -> Any:
        from plugins.registry import get_benchmark

        key = (cell.benchmark, cell.benchmark_options)
        if key not in self._benchmarks:
            cls = get_benchmark(cell.benchmark)
            try:
                self._benchmarks[key] = cls(thaw(cell.benchmark_options), data_dir=self.data_dir)
            except ValidationError as exc:
                raise RunnerError(f"benchmark {cell.benchmark!r} options: " + "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))) from None
        return self._benchmarks[key]

    def method(self, cell: Cell) -> Any:
        from plugins.methods.base import MethodConfigError
        from plugins.registry import create_method

        try:
            return create_method(cell.plugin, thaw(cell.config))
        except MethodConfigError as exc:
            raise RunnerError(f"cell {cell.name}: {exc}") from None

    def checkpoint(self, model: ModelSpec) -> tuple[Path, str]:
        """(checkpoint directory, its hash), without loading the model."""
        from plugins.config import unknown
        from plugins.models.lookup import checkpoint_hash, resolve_checkpoint
        from plugins.registry import get_model, list_models

        key = (model.name, model.path)
        if key not in self._checkpoints:
            if model.path is not None:
                where = model.path
            elif model.name in list_models():
                where = getattr(get_model(model.name), "default_checkpoint")
            else:
                raise RunnerError(f"model {model.name!r}: {unknown('model', model.name, list_models())}; "
                                  "or give a path: {name: my-model, path: /dir/of/checkpoint}")
            try:
                directory = resolve_checkpoint(where)
            except FileNotFoundError as exc:  # CheckpointNotFoundError: says where it looked and how to get it
                raise RunnerError(f"model {model.name!r}: {exc}") from None
            self._checkpoints[key] = (directory, checkpoint_hash(directory))
        return self._checkpoints[key]


def cell_identity(cell: Cell, ctx: Context) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(fingerprint, the payload it hashes, the inputs a record keeps) of one cell.

    The record keeps ``{"code": {module: tree hash}, "checkpoint_sha256": ..., "data_sha256": ...}``
    (``provenance.identity``), to say later why it went stale.
    """
    from plugins.identity import code_hash, code_identity

    _, ckpt_hash = ctx.checkpoint(cell.model)
    bench = ctx.benchmark(cell)
    method = ctx.method(cell)
    roots = [type(method).__module__, type(bench).__module__, ADAPTER_MODULE]
    code = code_identity(roots)
    bench_payload = bench.fingerprint_payload(cell.split)
    payload = {
        "version": FINGERPRINT_VERSION,
        "method": method.fingerprint_payload(),
        "benchmark": bench_payload,
        "checkpoint_sha256": ckpt_hash,
        "decoding": bench.decoding(cell.protocol_settings),  # the protocol as the benchmark applies it: search, suffix, budget
        "code": code_hash(roots),
        "seed": cell.seed,
        "dtype": ctx.dtype,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    identity = {"code": {name: digest[:16] for name, digest in code.items()}, "checkpoint_sha256": ckpt_hash,
                "data_sha256": bench_payload.get("data_sha256")}
    return hashlib.sha256(blob).hexdigest(), payload, identity
