"""Files the experiment side writes and hashes: atomic writes, content hashes cached by file status.

* :func:`write_atomic` — a temporary file beside the target, then a rename: a crash never leaves
  half a file.
* :func:`exclusive` — one process at a time in a folder (a results directory, a data set being
  generated): an advisory lock that the operating system drops when its holder dies.
* :func:`file_sha256` / :func:`files_sha256` — content hashes of checkpoints and benchmark data.
  Re-reading a 500-image test set and a checkpoint on every run would cost seconds, so a hash is
  remembered per process and on disk (``<cache>/file-hashes.json``), keyed by the file's status:
  path, size, modification and change times, inode. Any write to the file changes that status and
  the file is read again.

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = pathlib.Path(tmp) / "a.txt"
...     write_atomic(path, "hello")
...     file_sha256(path)[:12]
'2cf24dba5fb0'
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

__all__ = ["write_atomic", "file_sha256", "files_sha256", "stat_key", "cache_root", "save_hash_cache", "recording",
           "StatCache", "exclusive", "Busy"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def cache_root() -> Path:
    """Where the experiment side keeps what it can recompute: ``$ALIGNSCOPE_CACHE`` or ``<repo>/build/cache``."""
    return Path(os.environ.get("ALIGNSCOPE_CACHE") or REPO_ROOT / "build" / "cache")


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write text (UTF-8) or bytes via a temporary file and rename, so a crash never leaves half a file.

    The temporary file is ``.<name>.<random>.tmp`` beside ``path``; the runner removes any left by a kill.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stat_key(path: Path) -> Optional[str]:
    """The status of a file that any write changes (size, mtime, ctime, inode), or None when it is too new to trust.

    File times tick in steps of a few milliseconds, so a file written twice within one step keeps
    its status; as git does with "racily clean" files, a file changed in the last two seconds is
    not vouched for by its status and must be read.
    """
    st = os.stat(path)
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < 2_000_000_000:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


class StatCache:
    """Values computed from files, kept in memory and in one JSON file, each valid while its file's status holds.

    ``get(path)`` returns what ``put(path, value)`` stored while ``path`` had the status it has now
    (:func:`stat_key`), else None; a file too new to trust is never served from or put in the
    cache. The JSON file lives under :func:`cache_root` (read again when that moves: tests use
    private caches) and is written by :meth:`save`, atomically; a missing or damaged file only
    means computing afresh.
    """

    def __init__(self, name: str, version: int = 1):
        self.name, self.version = name, version
        self.lock = threading.Lock()
        self.path: Optional[Path] = None
        self.entries: dict[str, list[Any]] = {}  # path -> [status, value]
        self.dirty = False

    def _load(self) -> None:
        path = cache_root() / self.name
        if path == self.path:
            return
        self.path, self.entries = path, {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") == self.version and isinstance(data.get("files"), dict):
                self.entries = data["files"]
        except (OSError, ValueError, AttributeError):
            pass  # none yet, or damaged: compute afresh

    def get(self, path: str, status: Optional[str]) -> Any:
        if status is None:
            return None
        with self.lock:
            self._load()
            entry = self.entries.get(path)
            return entry[1] if isinstance(entry, list) and len(entry) == 2 and entry[0] == status else None

    def put(self, path: str, status: Optional[str], value: Any) -> None:
        if status is None:
            return
        with self.lock:
            self._load()
            self.entries[path] = [status, value]
            self.dirty = True

    def save(self) -> None:
        with self.lock:
            if not self.dirty or self.path is None:
                return
            try:
                write_atomic(self.path, json.dumps({"version": self.version, "files": self.entries},
                                                   sort_keys=True, separators=(",", ":")))
                self.dirty = False
            except OSError:
                pass  # a read-only cache only costs computing again next time


_HASHES = StatCache("file-hashes.json")


def save_hash_cache() -> None:
    """Write the hashes computed in this process to the disk cache (callers do it once per batch of work)."""
    _HASHES.save()


_RECORDERS: list[dict[str, str]] = []


@contextlib.contextmanager
def recording() -> Iterator[dict[str, str]]:
    """Within the block, every file hashed by :func:`file_sha256` is noted in the yielded dict (path → hash).

    The runner keeps that list with a plan it memoises: the plan holds as long as those files do.
    """
    seen: dict[str, str] = {}
    _RECORDERS.append(seen)
    try:
        yield seen
    finally:
        _RECORDERS.remove(seen)


def _note(path: Path, digest: str) -> str:
    for seen in _RECORDERS:
        seen[str(path)] = digest
    return digest


def file_sha256(path: Path) -> str:
    """Content SHA-256 of ``path``, cached by its status (see the module docstring).

    For a Hugging Face cache symlink to an LFS blob, the blob's name *is* that hash and is used as is.
    """
    path = Path(path)
    if path.is_symlink():
        target = path.resolve()
        if target.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", target.name):
            return _note(path, target.name)
    real = str(path.resolve())
    key = stat_key(path)
    cached = _HASHES.get(real, key)
    if cached is not None:
        return _note(path, cached)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    if key is not None and stat_key(path) == key:  # not written to while it was read
        _HASHES.put(real, key, value)
    return _note(path, value)


def files_sha256(paths: Iterable[Path]) -> str:
    """SHA-256 over ``name<TAB>sha256`` lines of ``paths`` in the order given (a repeated path counts once).

    The identity of a checkpoint directory and of a benchmark split's data.
    """
    digest = hashlib.sha256()
    seen: set[Path] = set()
    for path in paths:
        path = Path(path)
        if path in seen:
            continue
        seen.add(path)
        digest.update(f"{path.name}\t{file_sha256(path)}\n".encode("utf-8"))
    return digest.hexdigest()


class Busy(RuntimeError):
    """Another process holds the lock and the caller chose not to wait."""


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str, *, wait: bool = True,
              on_wait: Optional[Callable[[str], None]] = None) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created if needed) for the block.

    When another process holds it, raise :class:`Busy` (``wait=False``) or wait, after telling
    ``on_wait`` who holds it (pid, host, since when, command) and for ``what``. The holder is
    written into the file for that message. The lock is ``flock``'s: the kernel releases it when
    its holder exits, even by ``kill -9``, so a killed run never leaves a stale lock. Where
    ``fcntl`` does not exist (Windows) there is no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            message = f"{what} is in use by {holder}"
            if not wait:
                raise Busy(message) from None
            if on_wait is not None:
                on_wait(f"{message}; waiting for it to finish (Ctrl-C to stop)")
            fcntl.flock(fd, fcntl.LOCK_EX)
        import socket
        import sys

        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since} ({command})\n".encode("utf-8"), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock
