"""Which cells must run, and why: each cell's fingerprint against its record in ``results/``.

Statuses of a :class:`CellPlan`:

========  =====================================================================  ===============
status    meaning                                                                index ``state``
========  =====================================================================  ===============
cached    a record with this fingerprint exists: skipped                          current
stale     a record exists but code, config, checkpoint or data changed since     stale
new       no record yet                                                           missing
failed    no current record; the last run of this fingerprint raised (its         failed
          ``<cell>.error.json`` says what)
error     the cell cannot even be fingerprinted (a missing checkpoint or data)    error
========  =====================================================================  ===============

A stale cell says why (:attr:`CellPlan.reason`): the modules whose code changed, or the
checkpoint, the data, or the settings — or that its record is current but its predictions file
is missing or no longer hashes to what the record says (a damaged result re-runs).

**The index.** :func:`write_index` writes ``results/index.json``: every cell of the matrix with
its state and fingerprint. The site reads it to mark stale and failed results, so building the
site never imports the runner or torch.

**A memoised plan.** Fingerprinting every cell means importing every method (and so torch and
transformers) and hashing every data file: seconds, on every ``make reproduce``. The plan of the
whole matrix is therefore kept in ``<cache>/plan-memo/`` (one file per matrix) with what it was computed from — the
fingerprint version, the matrix file, the options, the identity of every module under
``plugins/``, where each checkpoint resolved to and what its folder holds, and the hash of every
file hashed — and reused while all of these are unchanged, which is checked from file status
alone (:mod:`plugins.files`, :mod:`plugins.identity`).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

from plugins.api import ERROR_SUFFIX, INDEX_NAME, INDEX_VERSION, predictions_problem
from plugins.runner.fingerprint import FINGERPRINT_VERSION, Context, cell_identity
from plugins.runner.matrix import Cell, ModelSpec, RunnerError, expand_all, load_matrix
from plugins.models.decoding import Protocol

__all__ = ["CellPlan", "Planned", "plan", "plan_matrix", "matching", "error_path", "write_index", "INDEX_NAME", "INDEX_VERSION",
           "STATE_OF"]

STATE_OF = {"cached": "current", "stale": "stale", "new": "missing", "failed": "failed", "error": "error"}
"""Plan status → the ``state`` the index gives the site."""
_MEMO_VERSION = 2  # 2: cells carry their protocol
_ENVIRONMENT = ("ALIGNSCOPE_DATA", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")
"""Variables that decide where data and checkpoints are found: part of the memo's key."""


@dataclass
class CellPlan:
    cell: Cell
    fingerprint: str
    status: str  # cached, stale, new, failed, error (see the module docstring)
    error: str = ""  # why the cell cannot run (error) or what its last run raised (failed)
    identity: dict[str, Any] = field(default_factory=dict)  # what the record keeps (fingerprint.cell_identity)
    reason: str = ""  # why a stale cell is stale
    record: Optional[dict[str, Any]] = None  # a cached cell's record, as read when its status was decided


def error_path(results_dir: Path, cell_name: str) -> Path:
    """Where a failed cell's error and traceback are saved: beside where its record would be."""
    return Path(results_dir) / f"{cell_name}{ERROR_SUFFIX}"


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _why_stale(stored: dict[str, Any], identity: dict[str, Any]) -> str:
    """What differs between a record's identity and the cell's now, in words."""
    old = (stored.get("provenance") or {}).get("identity")
    if not isinstance(old, dict):
        return f"recorded under fingerprint version {stored.get('fingerprint_version', 1)}"
    parts = []
    before, now = old.get("code") or {}, identity.get("code") or {}
    changed = sorted(m for m in set(before) | set(now) if before.get(m) != now.get(m))
    if changed:
        shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        parts.append(f"code of {shown}")
    for key, what in (("checkpoint_sha256", "checkpoint"), ("data_sha256", "data")):
        if old.get(key) != identity.get(key):
            parts.append(what)
    return ", ".join(parts) or "settings (config, decoding, seed or dtype)"


def _status(cell: Cell, fingerprint: str, identity: dict[str, Any], results_dir: Path) -> CellPlan:
    record_path = Path(results_dir) / f"{cell.name}.json"
    stored = _read_json(record_path)
    if stored is not None and stored.get("fingerprint") == fingerprint:
        damaged = predictions_problem(record_path, stored)
        if damaged is None:
            return CellPlan(cell, fingerprint, "cached", identity=identity, record=stored)
        return CellPlan(cell, fingerprint, "stale", identity=identity, reason=damaged)
    failure = _read_json(error_path(results_dir, cell.name))
    if failure is not None and failure.get("fingerprint") == fingerprint:
        return CellPlan(cell, fingerprint, "failed", str(failure.get("error", "")), identity)
    if stored is not None:
        return CellPlan(cell, fingerprint, "stale", identity=identity, reason=_why_stale(stored, identity))
    # A record that is not JSON at all (a corrupt file) is re-run like a missing one.
    return CellPlan(cell, fingerprint, "new", identity=identity)


def _identify(cell: Cell, ctx: Context) -> tuple[Cell, str, dict[str, Any], str]:
    """``(cell, fingerprint, identity, error)``; a cell that cannot be fingerprinted has an error and no fingerprint."""
    try:
        fp, _, identity = cell_identity(cell, ctx)
    except (RunnerError, ValueError, OSError) as exc:  # says what is missing and where it looked
        return cell, "", {}, str(exc)
    except Exception as exc:  # noqa: BLE001 - any other failure is this cell's alone too
        return cell, "", {}, f"{type(exc).__name__}: {exc}"
    return cell, fp, dict(identity), ""


def _planned(cell: Cell, fingerprint: str, identity: dict[str, Any], error: str, results_dir: Path) -> CellPlan:
    return CellPlan(cell, "", "error", error) if error else _status(cell, fingerprint, identity, results_dir)


def plan(cells: Sequence[Cell], results_dir: Path, ctx: Context) -> list[CellPlan]:
    """Which cells must run: compares each cell's fingerprint with its record in ``results_dir``.

    A cell that cannot even be fingerprinted (missing checkpoint or data) gets status ``error``
    and does not stop the others.
    """
    return [_planned(*_identify(cell, ctx), results_dir) for cell in cells]


# ---------------------------------------------------------------- the memo

def _project_code() -> str:
    """One hash over the normalised tree of every module under ``plugins/`` (new and deleted ones count)."""
    from plugins.identity import REPO_ROOT, code_hash

    names = []
    for path in sorted((REPO_ROOT / "plugins").rglob("*.py")):
        rel = path.relative_to(REPO_ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        names.append(".".join(parts))
    return code_hash(names)  # the closure of every module is every module


def _memo_key(matrix_path: Path, dtype: Optional[str], data_dir: Optional[Path]) -> dict[str, Any]:
    from plugins.files import file_sha256

    return {"memo": _MEMO_VERSION, "fingerprint_version": FINGERPRINT_VERSION,
            "matrix": str(Path(matrix_path).resolve()), "matrix_sha256": file_sha256(Path(matrix_path)),
            "dtype": dtype, "data_dir": str(data_dir) if data_dir is not None else None,
            "environment": {k: os.environ.get(k) for k in _ENVIRONMENT}, "code": _project_code()}


def _memo_path(matrix_path: Path) -> Path:
    """One memo per matrix file (a test's matrix never replaces the checkout's)."""
    from plugins.files import cache_root

    name = hashlib.sha256(str(Path(matrix_path).resolve()).encode("utf-8")).hexdigest()[:16]
    return cache_root() / "plan-memo" / f"{name}.json"


def _listing(directory: Path) -> list[str]:
    try:
        return sorted(p.name for p in Path(directory).iterdir())
    except OSError:
        return []


def _memo_valid(memo: dict[str, Any], key: dict[str, Any]) -> bool:
    from plugins.files import file_sha256
    from plugins.models.lookup import resolve_checkpoint

    if memo.get("key") != key:
        return False
    for where, (directory, listing) in (memo.get("checkpoints") or {}).items():
        try:
            if str(resolve_checkpoint(where)) != directory or _listing(Path(directory)) != listing:
                return False
        except (OSError, ValueError):
            return False
    for path, digest in (memo.get("files") or {}).items():
        try:
            if file_sha256(Path(path)) != digest:
                return False
        except OSError:
            return False
    return True


def _cell_json(cell: Cell) -> dict[str, Any]:
    return {**asdict(cell), "model": cell.model.model_dump(mode="json"),
            "protocol_settings": cell.protocol_settings.model_dump(mode="json")}


def _cell_from_json(data: dict[str, Any]) -> Cell:
    return Cell(data["experiment"], ModelSpec(**data["model"]), data["benchmark"], data["split"],
                tuple(tuple(p) for p in data["benchmark_options"]), data["method"], data["plugin"],
                tuple(tuple(p) for p in data["config"]), data["seed"], data["protocol"],
                Protocol(**data["protocol_settings"]))


def matching(plans: Sequence[CellPlan], only: Optional[str]) -> list[CellPlan]:
    """The plans whose cell name matches the glob ``only`` (anywhere in the name); all without one."""
    import fnmatch

    if not only:
        return list(plans)
    return [p for p in plans if fnmatch.fnmatchcase(p.cell.name, only) or fnmatch.fnmatchcase(p.cell.name, f"*{only}*")]


class Planned(NamedTuple):
    """What :func:`plan_matrix` returns."""

    plans: list[CellPlan]
    ctx: Optional[Context]  # None when the plan came from the memo: a caller that runs cells makes one afresh
    problems: list[str]  # ``file:line: ...`` of what in the matrix cannot run (the rest can)


def plan_matrix(matrix_path: Path, results_dir: Path, *, only: Optional[str] = None, dtype: Optional[str] = None,
                data_dir: Optional[Path] = None, use_memo: bool = True) -> Planned:
    """The plan of every cell of a matrix file (those matching ``only``), memoised as the module docstring says.

    Experiments, methods, benchmarks or splits the matrix gets wrong are ``problems``, located;
    they stop only the cells they name (and keep the plan out of the memo, so it is checked again).
    """
    from plugins.files import recording, save_hash_cache, write_atomic

    matrix_path = Path(matrix_path)
    key = None
    if use_memo:
        key = _memo_key(matrix_path, dtype, data_dir)
        memo = _read_json(_memo_path(matrix_path))
        if memo is not None and _memo_valid(memo, key):
            entries = [(_cell_from_json(e["cell"]), e["fingerprint"], e["identity"]) for e in memo["cells"]]
            save_hash_cache()
            plans = [_status(cell, fp, identity, results_dir) for cell, fp, identity in entries]
            return Planned(matching(plans, only), None, [])
    matrix = load_matrix(matrix_path)
    dtype = dtype or matrix.defaults.dtype
    cells, problems = expand_all(matrix)
    ctx = Context(data_dir, dtype)
    for bench in {(c.benchmark, c.benchmark_options): c for c in cells}.values():
        try:
            ctx.benchmark(bench).prepare()  # generate the world's test sets before hashing them
        except (ValueError, OSError):
            pass  # reported per cell by plan()
    with recording() as hashed:  # what the fingerprints depend on; the results themselves are checked afresh each time
        identified = [_identify(cell, ctx) for cell in cells]
    plans = [_planned(*entry, results_dir) for entry in identified]
    if use_memo and key is not None and not problems and not any(p.status == "error" for p in plans):
        checkpoints = {}
        for (name, path), (directory, _) in ctx._checkpoints.items():
            where = path if path is not None else _registered_checkpoint(name)
            checkpoints[str(where)] = [str(directory), _listing(directory)]
        memo = {"key": key, "checkpoints": checkpoints, "files": dict(sorted(hashed.items())),
                "cells": [{"cell": _cell_json(p.cell), "fingerprint": p.fingerprint, "identity": p.identity}
                          for p in plans]}
        try:
            write_atomic(_memo_path(matrix_path), json.dumps(memo, sort_keys=True, separators=(",", ":")))
        except OSError:
            pass  # a read-only cache: plan afresh next time
    save_hash_cache()
    return Planned(matching(plans, only), ctx, problems)


def _registered_checkpoint(name: str) -> str:
    from plugins.registry import get_model

    return str(getattr(get_model(name), "default_checkpoint"))


# ---------------------------------------------------------------- the index

def write_index(results_dir: Path, plans: Sequence[CellPlan], matrix_path: Path) -> Path:
    """Write ``results/index.json`` (only if its content changed): every cell, its state and fingerprint."""
    from plugins.files import write_atomic
    from plugins.identity import REPO_ROOT

    cells = {}
    for p in sorted(plans, key=lambda p: p.cell.name):
        entry: dict[str, Any] = {"experiment": p.cell.experiment, "state": STATE_OF[p.status],
                                 "fingerprint": p.fingerprint or None}
        if p.status in ("failed", "error"):
            entry["error"] = (p.error.strip().splitlines() or [""])[0][:300]
        if p.status == "stale" and p.reason:
            entry["reason"] = p.reason
        cells[p.cell.name] = entry
    try:
        shown = Path(matrix_path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        shown = str(matrix_path)
    text = json.dumps({"version": INDEX_VERSION, "fingerprint_version": FINGERPRINT_VERSION, "matrix": shown,
                       "cells": cells}, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    path = Path(results_dir) / INDEX_NAME
    try:
        if path.read_text(encoding="utf-8") == text:
            return path
    except OSError:
        pass
    write_atomic(path, text)
    return path
