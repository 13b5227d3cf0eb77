"""Intervals in the report: schema 2 round trip, schema 1 still loads, the table shows and explains them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from yoloquant import PipelineResult, VariantResult
from yoloquant.eval.bootstrap import Metric
from yoloquant.report.result import REPORT_SCHEMA_VERSION


def _result(out_dir: Path, delta: Metric) -> PipelineResult:
    fp32 = VariantResult(
        name="fp32",
        precision="fp32",
        backend="ort-cpu",
        model_path=str(out_dir / "a.onnx"),
        size_bytes=1,
        metrics={"map50_95": Metric(value=0.5, low=0.47, high=0.53, se=0.015), "map50": Metric(value=0.7)},
    )
    int8 = dataclasses.replace(
        fp32,
        name="int8",
        precision="int8",
        metrics={"map50_95": Metric(value=0.4929), "map50": Metric(value=0.69)},
        delta_vs_fp32={"map50_95": delta, "map50": Metric(value=-1.0, low=-1.5, high=-0.5)},
    )
    return PipelineResult(
        variants=(fp32, int8),
        config={},
        versions={},
        inputs={"evaluation": {"images": 252}},
        out_dir=str(out_dir),
        created="2026-12-02T00:00:00+00:00",
    )


def test_table_prints_the_paired_interval_and_flags_an_unresolved_delta(tmp_path: Path) -> None:
    table = _result(tmp_path, Metric(value=-0.71, low=-1.32, high=0.10, se=0.3)).table()
    int8 = next(line for line in table.splitlines() if line.startswith("int8"))
    assert "-0.71 [-1.32, +0.10]" in int8
    assert "bootstrap over the 252 evaluation images" in table
    assert "not distinguishable from fp32 on these images (interval holds 0): int8" in table


def test_a_resolved_delta_is_not_flagged(tmp_path: Path) -> None:
    result = _result(tmp_path, Metric(value=-0.71, low=-1.32, high=-0.10, se=0.3))
    assert "not distinguishable" not in result.table()
    assert "-0.71 [-1.32, -0.10]" in result.to_markdown()
    assert "-0.71 [-1.32, -0.10]" in result._repr_html_()


def test_schema_2_round_trips_the_intervals() -> None:
    result = _result(Path("/tmp"), Metric(value=-0.71, low=-1.32, high=-0.10, se=0.3))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["schema_version"] == REPORT_SCHEMA_VERSION == 2
    assert data["variants"][1]["delta_vs_fp32"]["map50_95"] == {"value": -0.71, "ci95": [-1.32, -0.10], "se": 0.3}
    again = VariantResult.from_dict(data["variants"][1])
    assert again.delta_vs_fp32["map50_95"] == Metric(value=-0.71, low=-1.32, high=-0.10, se=0.3)
    assert VariantResult.from_dict(data["variants"][0]).metrics["map50_95"].low == 0.47


def test_a_schema_1_variant_loads_with_plain_values() -> None:
    old = {
        "name": "int8",
        "precision": "int8",
        "backend": "ort-cpu",
        "model_path": "m.onnx",
        "size_bytes": 3,
        "map50_95": 0.49,
        "map50": 0.69,
    }
    v = VariantResult.from_dict(old)
    assert v.metrics == {"map50_95": Metric(value=0.49), "map50": Metric(value=0.69)}
    assert v.delta_vs_fp32 == {}
