"""Atomic file writes: a crash never leaves a half-written file that looks complete."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = [
    "atomic_open",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "disk_full_cause",
    "replace_durably",
]

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def replace_durably(staged: Path, target: Path) -> None:
    """fsync the finished file ``staged``, then rename it onto ``target`` (same file system) atomically."""
    with staged.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(staged, target)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp path beside ``path`` for a library that writes to a path; it becomes ``path`` on a clean exit.

    On an error the temp file is removed and ``path`` is left as it was.

    Example:
        >>> with atomic_path(Path("model.onnx")) as staged:  # doctest: +SKIP
        ...     onnx.save(model, str(staged))
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # keep the unique name only: the writer creates the file with the usual (umask) permissions
    try:
        yield tmp
        replace_durably(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: Path) -> Iterator[IO[bytes]]:
    """A binary file that replaces ``path`` (fsync, atomic rename) when the block exits cleanly."""
    with atomic_path(path) as tmp, tmp.open("xb") as fh:
        yield fh


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder, fsync and an atomic rename."""
    with atomic_open(path) as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def disk_full_cause(exc: BaseException) -> OSError | None:
    """The out-of-space ``OSError`` behind ``exc`` (itself or a cause / context), or None.

    Libraries wrap it (ONNX Runtime's quantizer re-raises it as a plain Exception whose text is all that is
    left), so the chain and the text are both checked.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return current
        if "No space left on device" in str(current) or "Disk quota exceeded" in str(current):
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        current = current.__cause__ or current.__context__
    return None
