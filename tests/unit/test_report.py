from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from yoloquant import ConfigError, PipelineResult, VariantResult
from yoloquant.bench import LatencyResult
from yoloquant.eval.bootstrap import Metric


def _result(out_dir: Path) -> PipelineResult:
    fp32 = VariantResult(
        name="fp32",
        precision="fp32",
        backend="ort-cpu",
        model_path="m-fp32.onnx",
        size_bytes=12_000_000,
        metrics={"map50_95": Metric(value=0.5000), "map50": Metric(value=0.7000)},
        latency=(LatencyResult(1, (40.0, 40.0, 41.0, 39.0, 40.0)),),
        speedup_vs_fp32={1: 1.0},
    )
    int8 = VariantResult(
        name="int8",
        precision="int8",
        backend="ort-cpu",
        model_path="m-int8.onnx",
        size_bytes=3_500_000,
        metrics={"map50_95": Metric(value=0.4925), "map50": Metric(value=0.6950)},
        latency=(LatencyResult(1, (20.0, 20.0, 20.5, 19.5, 20.0)),),
        speedup_vs_fp32={1: 2.0},
        quantization={
            "quantizer": "ort-static",
            "backend": "ort-cpu",
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


def _sensitivity_section() -> dict[str, object]:
    def group(rank: int, name: str, sqnr: float, map_int8: float | None, map_float: float | None) -> dict[str, object]:
        ops = ["Conv", "Sigmoid", "Mul"]
        return {"rank": rank, "group": {"name": name, "nodes": [f"{name}/conv/Conv"], "ops": ops},
                "score_sqnr_db": sqnr, "sqnr_db": [30.0, sqnr], "cosine": [0.9999, 0.998], "float_sqnr_db": [14.5],
                "float_cosine": [0.99], "map50_95": map_int8, "float_map50_95": map_float}  # fmt: skip

    return {
        "model": "runs/x/yolov8n-fp32.onnx",
        "config": {"granularity": "conv", "proxy_images": 8, "top_k": 1},
        "int8_sqnr_db": [25.0, 13.81],
        "fp32_map50_95": 0.5009,
        "int8_map50_95": 0.4933,
        "eval_images": 64,
        "seconds": 174.2,
        "proxy_seconds": 118.0,
        "groups": [group(1, "/model.2/cv1", 17.23, 0.4900, 0.4953), group(2, "/model.1", 18.68, None, None)],
        "files": ["runs/x/sensitivity/sensitivity.md", "runs/x/sensitivity/sensitivity.png"],
    }


def test_decide_sections_are_optional_and_round_trip(tmp_path: Path) -> None:
    plain = _result(tmp_path).to_dict()
    assert "sweep" not in plain and "sensitivity" not in plain  # reports of plain runs are unchanged
    (tmp_path / "report.json").write_text(json.dumps(plain))  # a report written before the sections existed
    assert PipelineResult.load(tmp_path).sensitivity is None
    section = _sensitivity_section()
    result = dataclasses.replace(_result(tmp_path), sensitivity=section)
    result.save()
    again = PipelineResult.load(tmp_path)
    assert again.sensitivity == section and again.sweep is None
    assert again.to_dict() == result.to_dict()
    table = again.table()
    assert "sensitivity (conv groups, SQNR with only the group INT8): most sensitive /model.2/cv1 (17.2 dB)" in table
    md = (tmp_path / "report.md").read_text()
    assert "## INT8 sensitivity of `yolov8n-fp32.onnx` (conv groups)" in md
    assert "`runs/x/sensitivity/sensitivity.png`" in md


def test_sensitivity_markdown_shows_hand_computed_points() -> None:
    from yoloquant.decide.report import render_sensitivity

    text = render_sensitivity(_sensitivity_section(), top=2)
    row1 = next(line for line in text.splitlines() if line.startswith("| 1 |"))
    assert "| `/model.2/cv1` | Conv+Sigmoid+Mul | 17.23 | 0.99800 | 14.50 |" in row1
    assert "0.4900 (-1.09)" in row1  # (0.4900 - 0.5009) * 100 vs FP32
    assert "0.4953 (+0.20)" in row1  # (0.4953 - 0.4933) * 100 vs full INT8
    assert "whole model INT8: SQNR 13.81 dB" in text and "INT8 0.4933 (-0.76)" in text
    row2 = next(line for line in text.splitlines() if line.startswith("| 2 |"))
    assert row2.endswith("|  |  |")  # no mAP measured beyond top-k


def test_budget_outcome_is_in_the_markdown(tmp_path: Path) -> None:
    base = _result(tmp_path)
    quant = {
        "quantizer": "ort-budget",
        "backend": "ort-cpu",
        "seconds": 51.0,
        "config": {
            "budget": {"eval_source": "coco128.json", "num_images": 64, "offset": 0, "max_map_drop": 0.3},
            "result": {
                "max_map_drop": 0.3,
                "float_groups": ["model.0", "model.1"],
                "groups_total": 28,
                "fp32_map50_95": 0.51,
                "int8_map50_95": 0.49,
                "map50_95": 0.508,
                "drop_points": 0.2,
                "within_budget": True,
            },
        },
    }
    budgeted = dataclasses.replace(base.variants[1], name="int8-budget0.3", quantization=quant)
    md = dataclasses.replace(base, variants=(base.variants[0], budgeted)).to_markdown()
    assert (
        "- accuracy budget: drop <= 0.3 points, searched on coco128.json (64 images from #0): 2 of 28 groups "
        "float (`model.0`, `model.1`); there FP32 0.5100, full INT8 0.4900, budgeted 0.5080 (drop +0.20 points, "
        "within budget)"
    ) in md


def test_tensorrt_statement_of_a_variant_is_in_the_markdown(tmp_path: Path) -> None:
    base = _result(tmp_path)
    note = "no GPU speedup: TensorRT has no int4 or weight-only conv kernels"
    quant = {"quantizer": "brevitas", "layout": "qcdq", "seconds": 5.0, "config": {"tensorrt": note}}
    w4 = dataclasses.replace(base.variants[1], name="w4a16", precision="w4a16", quantization=quant)
    md = dataclasses.replace(base, variants=(base.variants[0], w4)).to_markdown()
    section = md.split("### w4a16: brevitas (qcdq layout), 5.0 s", 1)[1].lstrip("\n").split("\n\n", 1)[0]
    assert f"- TensorRT: {note}" in section
    assert "TensorRT:" not in base.to_markdown()  # quantizers without the key add no line


def test_report_renders_the_sections_other_packages_register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """render.py knows no section by name: it renders what is registered (decide's among them), in order."""
    from yoloquant.report import render, sections

    monkeypatch.setattr(sections, "_SECTIONS", dict(sections._SECTIONS))  # leave the registry as it was
    monkeypatch.setattr(sections, "_QUANTIZATION", dict(sections._QUANTIZATION))
    assert [s.name for s in sections.sections()][:2] == ["sweep", "sensitivity"]  # decide's, imported on first use
    sections.register_section(
        sections.Section(
            "double", notes=lambda r: [f"double: {len(r.variants)} variants"], markdown=lambda r: ["## Double", ""]
        )
    )
    sections.register_quantization_lines("double", lambda q: [f"- double saw {q['quantizer']}"])
    result = _result(tmp_path)
    assert "double: 2 variants" in result.table().splitlines()
    md = result.to_markdown()
    assert md.index("## Double") < md.index("## Quantization") and "- double saw ort-static" in md
    source = Path(render.__file__).read_text(encoding="utf-8")
    assert not [word for word in ("sweep", "budget", "sensitivity", "pareto") if word in source.lower()]
