"""What the site is made from, and change detection for the live preview.

Polling (not inotify) so it works the same on every OS and inside containers.

>>> snapshot([]) == snapshot([])
True
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

SITE_INPUTS = ("taxonomy", "papers", "results", "plugins/reproduce.yaml", "plugins/models/checkpoints", "mkdocs.yml")
"""The data the pages are made from, relative to a checkout: records, results, the matrix, model cards, the site config."""
WATCHED = SITE_INPUTS + ("site_gen/pages", "site_gen/templates")
"""What the live preview watches: the data and the page sources."""
_NOT_READ = ("*.safetensors", "*.tmp", "*.lock", "__pycache__")  # weights, half-written files, a run's lock


def copy_site_inputs(src: Path, dest: Path, results: bool = True) -> Path:
    """Copy what the site reads from checkout ``src`` into ``dest`` (no weights; predictions, whose hashes it checks).

    A checkout to build a site in without touching ``src``: for benchmarks and tests.
    """
    for rel in SITE_INPUTS:
        path = Path(src) / rel
        if rel == "results" and not results or not path.exists():
            continue
        (Path(dest) / rel).parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, Path(dest) / rel, ignore=shutil.ignore_patterns(*_NOT_READ))
        else:
            shutil.copy(path, Path(dest) / rel)
    return Path(dest)


def snapshot(folders: Iterable[Path]) -> frozenset[tuple[str, int, int]]:
    """``(path, mtime_ns, size)`` of every file under ``folders`` (or of a file named directly); equal snapshots mean nothing changed."""
    out = set()
    for folder in folders:
        if Path(folder).is_file():
            st = Path(folder).stat()
            out.add((str(folder), st.st_mtime_ns, st.st_size))
        if not Path(folder).is_dir():
            continue
        for path in Path(folder).rglob("*"):
            if path.is_file():
                st = path.stat()
                out.add((str(path), st.st_mtime_ns, st.st_size))
    return frozenset(out)
