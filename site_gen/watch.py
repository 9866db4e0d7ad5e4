"""Change detection for the live preview: a cheap snapshot of the files under some folders.

Polling (not inotify) so it works the same on every OS and inside containers.

>>> snapshot([]) == snapshot([])
True
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable


def snapshot(folders: Iterable[Path]) -> frozenset[tuple[str, int, int]]:
    """``(path, mtime_ns, size)`` of every file under ``folders``; equal snapshots mean nothing changed."""
    out = set()
    for folder in folders:
        if not Path(folder).is_dir():
            continue
        for path in Path(folder).rglob("*"):
            if path.is_file():
                st = path.stat()
                out.add((str(path), st.st_mtime_ns, st.st_size))
    return frozenset(out)
