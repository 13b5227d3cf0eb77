"""Atomic binary writes and a lazily imported, headless matplotlib."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

from yoloquant._optional import require

__all__ = ["atomic_write_bytes", "pyplot", "save_figure"]


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


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display; set before pyplot is first imported)."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot")


def save_figure(fig: Any, path: Path) -> None:
    """Render ``fig`` to PNG in memory, write it atomically and close it."""
    plt = pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
