"""The lifecycle of a run folder: lock it, drop its old report, clean up after a failure, name a full disk.

A run (``QuantPipeline.run``, ``Sweep.run``) holds ``<out>/.yoloquant.lock`` for its whole life: an
``flock`` on the file, with the holder's pid written inside. A second run into the same folder fails at
once with a :class:`ConfigError` naming that pid. The kernel drops the lock of a process that dies, even
by ``kill -9``, so the lock file a killed run leaves behind is simply taken over.

Holding the lock, the run deletes the folder's old ``report.json`` / ``report.md`` (and the temp files of a
killed run) before it writes anything, so a run that fails or is killed never leaves a report that
describes other models; the new report is written last, atomically. On any exception (Ctrl-C included)
it removes its temp files and the folders it created that stayed empty, and turns an out-of-space
``OSError`` into a :class:`DiskFullError` that says how much space the run needs and how much is free.

Example:
    >>> with RunFolder(Path("runs/x")) as folder:  # doctest: +SKIP
    ...     folder.lock()
    ...     ...  # write models, then the report last
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from yoloquant._io import disk_full_cause
from yoloquant.errors import ConfigError, DiskFullError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the lock degrades to a pid file
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "REPORT_FILES", "RunFolder"]

LOCK_NAME = ".yoloquant.lock"
REPORT_FILES = ("report.json", "report.md", "report.html")  # json first: it is what marks a complete run
_TEMP_DIRS = (".yq-", ".export-", ".brevitas-export-")  # the scratch folders stages make inside the run folder
_DEPTH = 3  # <sweep>/<variant>/<int8>/: deeper folders are not the run's own


class RunFolder:
    """A run's output folder, as a context manager: ``lock()`` it, and on an exception it is cleaned up.

    Attributes:
        path: The folder (absolute).
        needed: Estimated bytes the run writes there, quoted when the disk fills up.
    """

    def __init__(self, path: Path) -> None:
        self.path = path.absolute()
        self.needed: int | None = None
        self._created = not self.path.exists()
        self._dirs_before = set(_dirs(self.path))
        self._temps_before = {p for p in _walk(self.path) if _is_temp(p)}  # not ours unless a run left them
        self._fd: int | None = None

    def __enter__(self) -> Self:
        return self

    def lock(self) -> None:
        """Take the folder's lock, then delete its old report and a killed run's temp files.

        Only in a folder that a yoloquant run used (a yoloquant ``report.json``, or the lock file a killed
        run left): ``--out`` pointed at a folder of other files deletes none of them.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        killed = (self.path / LOCK_NAME).exists()
        self._fd = _acquire(self.path / LOCK_NAME)
        if not (killed or _holds_our_report(self.path)):
            return
        _remove_temp_files(self.path)
        self._temps_before = set()
        for name in REPORT_FILES:
            (self.path / name).unlink(missing_ok=True)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc is not None and self._fd is not None:  # never touch a folder another run holds
                _remove_temp_files(self.path, keep=self._temps_before)
                _remove_new_empty_dirs(self.path, self._dirs_before)
        finally:
            self._release()
        if exc is None:
            return
        cause = None if isinstance(exc, DiskFullError) else disk_full_cause(exc)
        full = self._disk_full(cause) if cause is not None else None  # measured before the folder goes
        if self._created:
            with contextlib.suppress(OSError):  # only if empty: a run that failed its checks leaves no folder
                self.path.rmdir()
        if full is not None:
            raise full from exc

    def _release(self) -> None:
        if self._fd is None:
            return
        try:
            (self.path / LOCK_NAME).unlink(missing_ok=True)  # unlinked while still held: see _acquire
        finally:
            os.close(self._fd)
            self._fd = None

    def _disk_full(self, cause: OSError) -> DiskFullError:
        # shutil.copyfile names the source as filename, the destination as filename2: prefer one of ours
        named = [Path(f) for f in (cause.filename2, cause.filename) if isinstance(f, str)]
        ours = [f for f in named if f.is_relative_to(self.path)]
        folder = (ours or named)[0].parent if named else self.path
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free = shutil.disk_usage(folder).free
        need = (
            f"a run of this plan needs about {_mb(self.needed)} there"
            if self.needed and folder.is_relative_to(self.path)
            else "the write needed more than that"
        )
        msg = (
            f"disk full: {folder} has {_mb(free)} free and {need}; free some space there or write the run "
            "elsewhere (another --out / run() folder; YOLOQUANT_CACHE moves the calibration cache); "
            "partial files were removed"
        )
        return DiskFullError(msg, folder=folder, needed=self.needed, free=free)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _acquire(path: Path) -> int:
    """Open and lock ``path``, write our pid into it and return its fd; ConfigError if another run holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:  # pragma: no cover
            return _acquire_pid_file(path, fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            msg = (
                f"{path.parent} is in use by another yoloquant run (pid {holder}, lock file {path}); wait for "
                "it to finish, or write this run to another --out / run() folder"
            )
            raise ConfigError(msg) from None
        try:
            same = os.fstat(fd).st_ino == path.stat().st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder finished and unlinked the file between our open and lock: start again
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd


def _holder(fd: int) -> str:
    """The pid the lock's holder wrote; it locks first and writes next, so an empty file is read again briefly."""
    for _ in range(50):
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if holder:
            return holder
        time.sleep(0.01)
    return "unknown"


def _acquire_pid_file(path: Path, fd: int) -> int:  # pragma: no cover - no flock on this platform
    holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
    if holder.isdigit() and int(holder) != os.getpid() and _alive(int(holder)):
        os.close(fd)
        msg = f"{path.parent} is in use by another yoloquant run (pid {holder}, lock file {path}); wait for it"
        raise ConfigError(msg)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _alive(pid: int) -> bool:  # pragma: no cover
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _walk(root: Path, depth: int = _DEPTH) -> list[Path]:
    """Entries under ``root`` down to ``depth`` levels, without following symlinks."""
    out: list[Path] = []
    try:
        children = list(root.iterdir())
    except OSError:
        return out
    for child in children:
        out.append(child)
        if depth > 1 and child.is_dir() and not child.is_symlink() and not child.name.startswith(_TEMP_DIRS):
            out += _walk(child, depth - 1)
    return out


def _dirs(root: Path) -> list[Path]:
    return [p for p in _walk(root) if p.is_dir() and not p.is_symlink()]


def _is_temp(p: Path) -> bool:
    name = p.name
    if p.is_dir() and not p.is_symlink():
        return name.startswith(_TEMP_DIRS)
    return name.endswith(".onnx.tmp") or (name.startswith(".") and (name.endswith(".tmp") or ".tmp-" in name))


def _holds_our_report(root: Path) -> bool:
    try:
        data = json.loads((root / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "variants" in data


def _remove_temp_files(root: Path, keep: set[Path] | frozenset[Path] = frozenset()) -> None:
    """Delete the temp files and scratch folders that yoloquant's stages write (a killed run's leftovers)."""
    for p in _walk(root):
        if not _is_temp(p) or p in keep:
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _remove_new_empty_dirs(root: Path, before: set[Path]) -> None:
    """Remove the folders made since the run started that hold nothing (an ``int8/`` left by Ctrl-C)."""
    for d in sorted(_dirs(root), key=lambda p: len(p.parts), reverse=True):
        if d not in before:
            with contextlib.suppress(OSError):  # not empty: it holds a finished model
                d.rmdir()
