"""Where a checkpoint's files are, and what identifies them: offline lookup and hashing, without torch.

* :func:`resolve_checkpoint` — a local directory, or a hub id found **only in the local Hugging
  Face cache** (:func:`hf_cache_dir`); nothing is ever downloaded. A missing checkpoint raises
  :class:`CheckpointNotFoundError` naming every place it looked and how to get the weights.
* :func:`checkpoint_hash` — SHA-256 over the directory's files (documentation and logs left out),
  for the runner's fingerprints and cached artifacts.
* :func:`read_model_type` — the ``model_type`` of a checkpoint's ``config.json``.
* :data:`TINY_LLAVA_CHECKPOINT` — the embedded default model, committed with the code.

Nothing here imports torch or transformers, so planning a run stays light.

>>> directory = resolve_checkpoint(TINY_LLAVA_CHECKPOINT)
>>> read_model_type(directory), len(checkpoint_hash(directory))
('llava', 64)
>>> resolve_checkpoint("no-such-owner/no-such-model", cache_dir="/nonexistent")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
plugins.models.lookup.CheckpointNotFoundError: checkpoint 'no-such-owner/no-such-model' not found. Looked in: ...
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Optional, Union

from plugins.files import files_sha256

__all__ = ["CheckpointNotFoundError", "hf_cache_dir", "resolve_checkpoint", "checkpoint_hash", "read_model_type",
           "TINY_LLAVA_CHECKPOINT"]

TINY_LLAVA_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "alignscope-tiny-llava"
"""The embedded default: the tiny LLaVA trained on the synthetic world (``alignscope train`` rebuilds it)."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NOT_HASHED = re.compile(r"^(\..*|README.*|LICEN[CS]E.*|.*\.md|training_log\.json)$", re.IGNORECASE)  # documentation and logs, not behaviour


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint at the given path or in the local Hugging Face cache; the message says where it looked."""


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment now (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def resolve_checkpoint(path_or_id: Union[str, Path], *, revision: str = "main",
                       cache_dir: Union[str, Path, None] = None) -> Path:
    """The local directory holding ``path_or_id``: the directory itself, or a snapshot in the HF cache.

    Only the file system is read: a hub id ``owner/name`` is looked up as
    ``<cache>/models--owner--name/refs/<revision>`` → ``snapshots/<commit>/``, the layout
    ``huggingface_hub`` writes. Raises :class:`CheckpointNotFoundError` otherwise.
    """
    text = os.fspath(path_or_id)
    local = Path(text).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise CheckpointNotFoundError(
                f"{local} is a directory but not a checkpoint: it has no config.json. Expected a folder written by "
                "save_pretrained (config.json, model.safetensors, processor and tokenizer files)")
        return local.resolve()
    looked = [f"the local directory {local.resolve()} (does not exist)" if not local.exists()
              else f"{local.resolve()} (a file, not a checkpoint directory)"]
    if isinstance(path_or_id, str) and _HUB_ID.match(text) and not text.startswith("."):
        cache = Path(cache_dir).expanduser() if cache_dir is not None else hf_cache_dir()
        repo = cache / f"models--{text.replace('/', '--')}"
        snapshot, why = _cached_snapshot(repo, revision)
        if snapshot is not None:
            return snapshot
        looked.append(f"the Hugging Face cache {repo} ({why})")
        how = (f"AlignScope never downloads. To get it, run on a machine with network access: "
               f"`hf download {text}` (or `huggingface-cli download {text}`; set HF_HUB_CACHE or HF_HOME to "
               f"use another cache), or pass the path of a local checkpoint directory.")
    else:
        how = ("Expected a directory written by save_pretrained, or a Hugging Face hub id such as "
               "llava-hf/llava-1.5-7b-hf that is in the local cache.")
    raise CheckpointNotFoundError(f"checkpoint {text!r} not found. Looked in: " + "; ".join(looked) + ". " + how)


def _cached_snapshot(repo: Path, revision: str) -> tuple[Optional[Path], str]:
    """(snapshot dir, "") if ``revision`` of the cached ``repo`` is complete enough to load, else (None, why)."""
    if not repo.is_dir():
        return None, "no such folder"
    ref = repo / "refs" / revision
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
    elif re.fullmatch(r"[0-9a-f]{40}", revision):
        commit = revision
    else:
        known = sorted(p.name for p in (repo / "refs").glob("*")) if (repo / "refs").is_dir() else []
        return None, f"no ref {revision!r}; refs present: {', '.join(known) or 'none'}"
    snapshot = repo / "snapshots" / commit
    if not snapshot.is_dir():
        return None, f"revision {revision!r} points to snapshot {commit}, which is missing"
    if not (snapshot / "config.json").is_file():
        return None, f"snapshot {commit} has no config.json (an incomplete download?)"
    return snapshot, ""


def checkpoint_hash(directory: Union[str, Path]) -> str:
    """SHA-256 over a checkpoint directory's files, without loading it.

    Every file in the directory counts except documentation and logs (README, LICENSE, ``*.md``,
    dot files, ``training_log.json``): what loads must match. Hub-cache LFS files are not re-read:
    their blob name is already their SHA-256 (:func:`plugins.files.files_sha256`).
    """
    directory = Path(directory)
    return files_sha256(sorted(p for p in directory.iterdir() if p.is_file() and not _NOT_HASHED.match(p.name)))


def read_model_type(directory: Path) -> Optional[str]:
    """The ``model_type`` in ``directory/config.json`` (None if it names none); a clear error if unreadable."""
    path = directory / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a readable JSON config ({exc}), expected the checkpoint's config.json") from None
