"""Plots leave the caller's matplotlib backend and pyplot state alone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")


def test_plotting_keeps_the_notebook_backend_and_never_touches_pyplot(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import matplotlib
        matplotlib.use("svg")  # stands in for a notebook's inline / widget backend
        from yoloquant.decide._files import new_figure, save_figure
        fig, ax = new_figure((4, 3))
        ax.plot([0, 1], [1, 0])
        out = Path({str(tmp_path / "p.png")!r})
        save_figure(fig, out)
        assert out.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n", out.read_bytes()[:8]
        assert matplotlib.rcParams["backend"] == "svg", matplotlib.rcParams["backend"]
        assert "matplotlib.pyplot" not in sys.modules
        """
    )
    env = {**os.environ, "MPLBACKEND": ""}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
