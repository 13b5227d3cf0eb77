"""Atomic file writes: a crash never leaves a half-written file that looks complete."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "disk_full_cause"]

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder, fsync and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
