"""The main job, for real: bundled YOLOv8n -> INT8 ONNX Runtime model -> COCO mAP, latency, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yoloquant import PipelineResult, QuantPipeline
from yoloquant.cli import main

pytest.importorskip("onnxruntime")
pytest.importorskip("ultralytics")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory, assets: Path) -> Path:
    out = tmp_path_factory.mktemp("cli-run")
    rc = main([
        "run", "--model", str(assets / "weights" / "yolov8n.pt"),
        "--calib", str(assets / "coco64" / "images"), "--calib-images", "24",
        "--eval", str(assets / "coco64.yaml"), "--eval-offset", "40",
        "--precision", "fp32,int8", "--backend", "ort-cpu", "--iterations", "10", "--quiet",
        "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    return out


def test_cli_writes_the_report_contract(cli_run: Path) -> None:
    data = json.loads((cli_run / "report.json").read_text())
    assert [v["name"] for v in data["variants"]] == ["fp32", "int8"]
    for v in data["variants"]:
        assert Path(v["model_path"]).is_file()
        assert v["size_bytes"] == Path(v["model_path"]).stat().st_size
        assert set(v["latency_ms"]) >= {"batch", "p50", "p90", "p99"}
        assert v["latency_ms"]["batch"] == 1
        assert v["providers"][0] == "CPUExecutionProvider"
    assert data["variants"][0]["speedup_vs_fp32"] == pytest.approx(1.0)
    assert Path(data["variants"][1]["model_path"]) == cli_run / "int8" / "yolov8n-int8.onnx"
    assert data["inputs"]["calibration"]["images"] == 24
    assert data["inputs"]["evaluation"]["images"] == 24  # 64 bundled images from offset 40
    assert data["versions"]["onnxruntime"]
    assert (cli_run / "report.md").read_text().startswith("# yoloquant report")


def test_int8_is_a_real_int8_model_with_a_small_accuracy_cost(cli_run: Path) -> None:
    result = PipelineResult.load(cli_run)
    fp32, int8 = result.variant("fp32"), result.variant("int8")
    assert fp32.map50_95 is not None and int8.map50_95 is not None
    assert fp32.map50_95 > 0.35  # a real COCO model on real COCO images
    assert fp32.map50_95 - int8.map50_95 < 0.03  # INT8 within 3 points on 24 images
    assert int8.size_bytes < 0.35 * fp32.size_bytes  # int8 weights
    q = int8.quantization
    assert q is not None
    assert q["quantized_counts"]["Conv"] >= 50
    float_names = [n for names in q["float_nodes"].values() for n in names]
    assert any("dfl" in n for n in float_names)  # the decode path stays float


def test_python_api_with_a_coco_json_and_disjoint_sets(tmp_path: Path, assets: Path) -> None:
    result = (
        QuantPipeline.from_ultralytics(assets / "weights" / "yolov8n.pt")
        .calibrate(assets / "coco64.yaml", num_images=8)
        .quantize("int8", calibration_method="minmax")
        .evaluate(assets / "coco64" / "annotations" / "instances_coco64.json", offset=48)
        .with_progress(False)
        .run(tmp_path)
    )
    assert not result.warnings  # calibration 0-7 and evaluation 48-63 do not overlap
    assert result.variant("int8").latency == ()  # no benchmark asked
    assert result.variant("fp32").map50_95 is not None
    assert result.inputs["evaluation"]["first"] == sorted(p.name for p in (assets / "coco64/images").iterdir())[48]


def test_result_engine_serves_the_quantized_model(cli_run: Path, assets: Path) -> None:
    import numpy as np

    result = PipelineResult.load(cli_run)
    with result.engine() as engine:
        (out,) = engine.infer(np.zeros((1, 3, 640, 640), np.float32))
    assert out.shape == (1, 84, 8400)
    assert engine.providers == []  # closed by the context manager


def test_fp16_needs_no_calibration_and_keeps_accuracy(tmp_path: Path, assets: Path) -> None:
    result = (
        QuantPipeline.from_ultralytics(assets / "weights" / "yolov8n.pt")
        .quantize("fp16")
        .evaluate(assets / "coco64.yaml", num_images=12, offset=52)
        .with_progress(False)
        .run(tmp_path)
    )
    fp32, fp16 = result.variant("fp32"), result.variant("fp16")
    assert fp16.precision == "fp16"
    assert fp16.size_bytes < 0.6 * fp32.size_bytes
    assert fp32.map50_95 is not None and fp16.map50_95 is not None
    assert abs(fp16.map50_95 - fp32.map50_95) < 0.005


def test_modelopt_variant_is_measured_on_cpu_and_flagged(tmp_path: Path, assets: Path) -> None:
    pytest.importorskip("modelopt.onnx.quantization")
    result = (
        QuantPipeline.from_ultralytics(assets / "weights" / "yolov8n.pt")
        .calibrate(assets / "coco64" / "images", num_images=8)
        .quantize("int8", quantizer="modelopt", keep_float="head")
        .evaluate(assets / "coco64.yaml", num_images=12, offset=52)
        .with_progress(False)
        .run(tmp_path)
    )
    v = result.variant("int8-modelopt-keep-head")
    assert v.quantization is not None and (v.quantization["backend"], v.quantization["format"]) == ("tensorrt", "qdq")
    assert any("made for TensorRT" in w for w in v.warnings)
    fp32 = result.variant("fp32")
    assert v.map50_95 is not None and fp32.map50_95 is not None
    assert fp32.map50_95 - v.map50_95 < 0.04


def test_budgeted_int8_through_the_fluent_api(tmp_path: Path, assets: Path) -> None:
    result = (
        QuantPipeline.from_ultralytics(assets / "weights" / "yolov8n.pt")
        .calibrate(assets / "coco64" / "images", num_images=8)
        .quantize("int8", max_map_drop=50.0)  # generous: full INT8 fits on the 8 calibration images, no search
        .evaluate(assets / "coco64.yaml", num_images=8, offset=56)
        .with_progress(False)
        .run(tmp_path)
    )
    v = result.variant("int8-budget50")
    assert v.quantization is not None and v.quantization["quantizer"] == "ort-budget"
    assert v.map50_95 is not None


def test_cli_sweep_runs_and_resumes(tmp_path: Path, assets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "sweep", "--model", str(assets / "weights" / "yolov8n.pt"),
        "--calib", str(assets / "coco64" / "images"), "--eval", str(assets / "coco64.yaml"),
        "--eval-images", "6", "--eval-offset", "58", "--calibration-method", "minmax", "--calib-images", "4",
        "--keep-float", "decode,head", "--iterations", "5", "--recommend-max-drop", "5", "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0
    ledger = (tmp_path / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == 3  # fp32 + 2 variants
    assert "int8" in capsys.readouterr().out
    assert main(argv) == 0  # resumed: nothing redone
    assert (tmp_path / "ledger.jsonl").read_text().splitlines() == ledger
    assert main(["show", str(tmp_path)]) == 0  # a sweep folder is a pipeline report folder
    shown = capsys.readouterr().out
    assert "sweep: Pareto front (fastest first)" in shown and "int8-ort-minmax-n4-keep-head" in shown
