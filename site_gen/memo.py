"""Nothing is made twice from the same inputs: memoised pages and plots, and a stamp that skips ``mkdocs build``.

A run of ``alignscope site`` where nothing changed must take about a second, so each expensive
step is keyed by a hash of what it reads, and its output is kept under ``build/cache/site/``
(never committed; deleting it only makes the next run cold):

- a **plot** by its drawing function, its arguments and the code salt (a plot whose table did
  not change is not drawn again when another result changes);
- the **whole docs tree** by the knowledge base, the result records, the runner's index, the
  hand-written pages' data and the code salt;
- the **graph explorer's data** by the knowledge base.

The *code salt* hashes ``site_gen``'s sources, templates and pages and the versions of the
packages that render (Jinja, matplotlib, networkx): editing any of them invalidates everything.
Outputs are the same bytes a cold run writes, because a key covers every input of its step.

``mkdocs build`` is skipped when the stamp ``build/site-stamp.json`` says that the docs tree,
``mkdocs.yml``, the templates and the mkdocs packages are those of the last successful build and
``site/`` still holds exactly the files that build wrote (paths, sizes, modification times).

>>> digest({"b": 1, "a": (1.5, "x")}) == digest({"a": [1.5, "x"], "b": 1})
True
"""
from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Optional

from plugins.files import write_atomic

MEMO_DIR = Path("build/cache/site")
BUILD_STAMP = Path("build/site-stamp.json")
SITE_GEN = Path(__file__).resolve().parent
RENDER_PACKAGES = ("jinja2", "markupsafe", "matplotlib", "networkx", "pydantic")
BUILD_PACKAGES = ("mkdocs", "mkdocs-material", "markdown", "pymdown-extensions")


def digest(*parts: Any) -> str:
    """SHA-256 of JSON-able ``parts`` (sorted keys; tuples as lists; floats exactly as ``repr`` writes them)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return value.as_posix()
    if hasattr(value, "model_dump"):  # a pydantic record
        return value.model_dump(mode="json")
    raise TypeError(f"cannot hash a {type(value).__name__} for the site cache")


def versions(packages: Iterable[str]) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def tree_digest(folder: Path, suffixes: Optional[tuple[str, ...]] = None) -> str:
    """SHA-256 over the relative paths and bytes of every file under ``folder`` (optionally of some suffixes)."""
    h = hashlib.sha256()
    folder = Path(folder)
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and (suffixes is None or path.name.endswith(suffixes)):
                h.update(f"{path.relative_to(folder).as_posix()}\0{path.stat().st_size}\0".encode())
                h.update(path.read_bytes())
    return h.hexdigest()


def code_salt() -> str:
    """What every memoised output also depends on: site_gen's code, templates, pages and the rendering packages."""
    return digest(tree_digest(SITE_GEN, (".py", ".j2", ".css", ".js")), versions(RENDER_PACKAGES))


class Memo:
    """Outputs by kind and key under ``folder``; ``Memo(None)`` remembers nothing (every lookup misses).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     memo = Memo(Path(folder))
    ...     memo.get("plots", "k") is None, memo.put("plots", "k", b"<svg/>"), memo.get("plots", "k")
    (True, None, b'<svg/>')
    """

    def __init__(self, folder: Optional[Path]):
        self.folder = Path(folder) if folder is not None else None
        self.used: dict[str, set[str]] = {}
        self.salt = code_salt()  # read now: a long-running preview sees template edits

    def _path(self, kind: str, key: str) -> Path:
        assert self.folder is not None
        return self.folder / kind / key

    def get(self, kind: str, key: str) -> Optional[bytes]:
        self.used.setdefault(kind, set()).add(key)
        if self.folder is None:
            return None
        try:
            return self._path(kind, key).read_bytes()
        except OSError:
            return None

    def put(self, kind: str, key: str, data: bytes) -> None:
        self.used.setdefault(kind, set()).add(key)
        if self.folder is not None:
            write_atomic(self._path(kind, key), data)

    def prune(self, kind: str) -> None:
        """Forget the entries of ``kind`` this run did not use, so the cache holds one site's worth."""
        if self.folder is None or not (self.folder / kind).is_dir():
            return
        keep = self.used.get(kind, set())
        for path in (self.folder / kind).iterdir():
            if path.is_file() and path.name not in keep:
                path.unlink()


# ---------------------------------------------------------------- the mkdocs build stamp

def site_manifest(site_dir: Path) -> str:
    """Hash of the paths, sizes and modification times of every file under ``site_dir`` (cheap: no content read)."""
    h = hashlib.sha256()
    if Path(site_dir).is_dir():
        for dirpath, dirnames, filenames in os.walk(site_dir):
            dirnames.sort()
            for name in sorted(filenames):
                st = os.stat(os.path.join(dirpath, name))
                h.update(f"{os.path.relpath(os.path.join(dirpath, name), site_dir)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def build_inputs(docs_dir: Path, config: Path) -> str:
    """Everything ``mkdocs build`` reads: the docs tree, its config, our templates and the mkdocs packages."""
    return digest(tree_digest(docs_dir), Path(config).read_bytes().decode("utf-8", "replace") if Path(config).is_file() else None,
                  tree_digest(SITE_GEN / "templates"), versions(BUILD_PACKAGES))


def stamp_matches(stamp: Path, inputs: str, site_dir: Path) -> bool:
    try:
        data = json.loads(Path(stamp).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("inputs") == inputs and data.get("site") == site_manifest(site_dir)


def write_stamp(stamp: Path, inputs: str, site_dir: Path) -> None:
    write_atomic(Path(stamp), (json.dumps({"inputs": inputs, "site": site_manifest(site_dir)}, sort_keys=True) + "\n").encode())
