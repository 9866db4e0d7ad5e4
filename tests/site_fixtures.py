"""Checkouts for the site tests: the repository's records, matrix, model card and result records, and a runner index.

Only what the site reads is copied (no weights, no per-sample predictions), so a copy is quick.
"""
from __future__ import annotations

import json
from pathlib import Path

from site_gen.watch import copy_site_inputs

from .conftest import REPO

MODEL = "alignscope-tiny-llava"


def copy_checkout(root: Path, results: bool = True) -> Path:
    """The repository's records, matrix, model card data and (optionally) result records, in ``root``."""
    return copy_site_inputs(REPO, root, results=results)


def record_cells(results_dir: Path) -> dict[str, str]:
    """cell → fingerprint of every record under ``results_dir``."""
    out = {}
    for path in sorted(Path(results_dir).rglob("seed*.json")):
        if path.name.endswith(".error.json"):
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        out[path.relative_to(results_dir).as_posix()[: -len(".json")]] = data["fingerprint"]
    return out


def write_index(results_dir: Path, cells: dict[str, dict], version: int = 1) -> Path:
    """``results_dir/index.json`` as the runner writes it (sorted keys, indent 1, trailing newline)."""
    path = Path(results_dir) / "index.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"version": version, "fingerprint_version": 2, "matrix": "plugins/reproduce.yaml", "cells": cells}
    path.write_text(json.dumps(data, sort_keys=True, indent=1) + "\n", encoding="utf-8")
    return path


def current_index(results_dir: Path, experiment: str = "default") -> dict[str, dict]:
    """Index entries saying every record under ``results_dir`` is current."""
    return {cell: {"experiment": experiment, "state": "current", "fingerprint": fp}
            for cell, fp in record_cells(results_dir).items()}
