"""Docs that name code: the names must exist and behave as the docs say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from yoloquant import ConfigError, QuantPipeline

ROOT = Path(__file__).resolve().parents[2]


def _protocol_table() -> list[str]:
    text = (ROOT / "docs" / "pipeline.md").read_text(encoding="utf-8")
    section = text.split("## Seams: the Protocols", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def test_protocol_table_names_real_protocols_and_classes() -> None:
    rows = _protocol_table()
    assert len(rows) == 5
    src = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src" / "yoloquant").rglob("*.py"))
    protocols = (ROOT / "src" / "yoloquant" / "protocols.py").read_text(encoding="utf-8")
    listed: set[str] = set()
    for row in rows:
        protocol, _, shipped = (cell.strip() for cell in row.strip("|").split("|"))
        assert f"class {protocol.strip('`')}(Protocol)" in protocols, row
        for name in re.findall(r"`(?:[\w.]+\.)?([A-Z]\w+)`", shipped):
            assert re.search(rf"^class {name}\b", src, re.MULTILINE), f"{name} in the Protocol table is no class"
            listed.add(name)
    shipped_classes = set(re.findall(r"^class (\w+(?:Quantizer|EngineBuilder|Engine|Exporter))\b", src, re.MULTILINE))
    assert shipped_classes - {"Quantizer", "EngineBuilder", "Engine", "Exporter"} <= listed


def test_the_tensorrt_backend_the_docs_warn_about_is_refused(yolov8n_pt: Path) -> None:
    """README / docs/brevitas.md say the pipeline has no backend="tensorrt": it must raise, not run."""
    with pytest.raises(ConfigError, match="TensorRT backend does not run here"):
        QuantPipeline.from_ultralytics(yolov8n_pt).quantize("w8a8", backend="tensorrt")
    for doc in ("README.md", "docs/brevitas.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        assert 'Symmetric W8A8 (`backend="tensorrt"`)' not in text and 'what `backend="tensorrt"`' not in text
