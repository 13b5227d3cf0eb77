from __future__ import annotations

import json
from pathlib import Path

import pytest

from yoloquant import ConfigError, PipelineResult, VariantResult
from yoloquant.bench import LatencyResult


def _result(out_dir: Path) -> PipelineResult:
    fp32 = VariantResult(
        name="fp32",
        precision="fp32",
        backend="onnxruntime",
        model_path="m-fp32.onnx",
        size_bytes=12_000_000,
        map50_95=0.5000,
        map50=0.7000,
        latency=(LatencyResult(1, (40.0, 40.0, 41.0, 39.0, 40.0)),),
        speedup_vs_fp32={1: 1.0},
    )
    int8 = VariantResult(
        name="int8",
        precision="int8",
        backend="onnxruntime",
        model_path="m-int8.onnx",
        size_bytes=3_500_000,
        map50_95=0.4925,
        map50=0.6950,
        latency=(LatencyResult(1, (20.0, 20.0, 20.5, 19.5, 20.0)),),
        speedup_vs_fp32={1: 2.0},
        quantization={
            "quantizer": "ort-static",
            "layout": "onnxruntime",
            "seconds": 3.0,
            "quantized_nodes": {"Conv": ["a", "b"]},
            "float_nodes": {"Conv": ["head"]},
        },
    )
    return PipelineResult(
        variants=(fp32, int8),
        config={"model": "m.pt"},
        versions={"python": "3.11"},
        inputs={"model": {}},
        out_dir=str(out_dir),
        created="2026-11-24T00:00:00+00:00",
    )


def test_table_shows_hand_computed_deltas_and_speedup(tmp_path: Path) -> None:
    table = _result(tmp_path).table()
    int8_line = next(line for line in table.splitlines() if line.startswith("int8"))
    assert "-0.75" in int8_line  # (0.4925 - 0.5) * 100 points
    assert "-0.50" in int8_line  # mAP50
    assert "2.00x" in int8_line
    assert "20.00" in int8_line  # p50 ms
    assert "3.50" in int8_line  # MB


def test_report_json_contract_and_round_trip(tmp_path: Path) -> None:
    path = _result(tmp_path).save()
    data = json.loads(path.read_text())
    v = data["variants"][1]
    for key in ("name", "precision", "backend", "map50_95", "map50", "speedup_vs_fp32", "size_bytes", "model_path"):
        assert key in v
    assert set(v["latency_ms"]) >= {"batch", "p50", "p90", "p99"}
    assert v["speedup_vs_fp32"] == 2.0
    assert {"config", "versions", "inputs"} <= set(data)
    again = PipelineResult.load(tmp_path)
    assert again.variant("int8").latency[0].samples_ms == (20.0, 20.0, 20.5, 19.5, 20.0)
    assert again.table() == _result(tmp_path).table()
    assert "| int8 |" in (tmp_path / "report.md").read_text()
    assert "`head`" in (tmp_path / "report.md").read_text()
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temp files


def test_html_and_repr(tmp_path: Path) -> None:
    result = _result(tmp_path)
    assert "<table>" in result._repr_html_()
    assert repr(result) == f"PipelineResult(variants=[fp32, int8], out_dir={str(tmp_path)!r})"


def test_load_of_a_missing_report_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"report\.json written by yoloquant"):
        PipelineResult.load(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="no variant named 'fp8'"):
        _result(tmp_path).variant("fp8")
