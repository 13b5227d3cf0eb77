"""The examples run as written, on the bundled assets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("script", "variants", "needs"),
    [
        ("quickstart.py", ["fp32", "int8"], ()),
        pytest.param(  # ~2 min on 2 cores: `make test-all`
            "brevitas_w4.py", ["fp32", "w8a8", "w4a16"], ("brevitas", "onnxoptimizer"), marks=pytest.mark.slow
        ),
        pytest.param(  # ~1 min on 2 cores (a Ray instance of its own): `make test-all`
            "ray_sweep.py",
            ["fp32", *(f"int8-ort-{m}-keep-{k}" for m in ("minmax", "entropy") for k in ("decode", "head"))],
            ("ray",),
            marks=pytest.mark.slow,
        ),
    ],
)
def test_example_runs_and_writes_a_report(
    script: str, variants: list[str], needs: tuple[str, ...], tmp_path: Path
) -> None:
    for module in ("ultralytics", *needs):
        pytest.importorskip(module)
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(name in proc.stdout for name in variants)
    report = json.loads((tmp_path / "report.json").read_text())
    assert [v["name"] for v in report["variants"]] == variants
