"""A lazily imported, headless matplotlib, and figures written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from yoloquant._io import atomic_write_bytes
from yoloquant._optional import require

__all__ = ["pyplot", "save_figure"]


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
