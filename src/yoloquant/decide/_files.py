"""Figures without pyplot (the caller's matplotlib backend is left alone), written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from yoloquant._io import atomic_write_bytes
from yoloquant._optional import require

__all__ = ["new_figure", "save_figure"]


def new_figure(figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A ``matplotlib.figure.Figure`` and its one Axes, outside pyplot: no global backend switch, no figure registry.

    A notebook that uses an interactive backend keeps it; the figure renders through Agg when saved.
    """
    fig = require("matplotlib.figure").Figure(figsize=figsize)
    return fig, fig.subplots()


def save_figure(fig: Any, path: Path) -> None:
    """Render ``fig`` to PNG in memory and write it atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
