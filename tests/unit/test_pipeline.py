"""The fluent builder: immutable, lazy, and it checks the plan before doing any work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from yoloquant import ConfigError, ExportError, QuantPipeline
from yoloquant.config import Backend, Precision
from yoloquant.quantize.float_scope import FloatScope


def test_each_step_returns_a_new_pipeline_and_leaves_the_base_alone(yolov8n_pt: Path) -> None:
    base = QuantPipeline.from_ultralytics(yolov8n_pt)
    calibrated = base.calibrate("images", num_images=8)
    a = calibrated.quantize("int8")
    b = calibrated.quantize("int8", backend="openvino", calibration_method="entropy")
    assert base.calibration is None
    assert [v.name for v in calibrated.variants] == ["fp32"]
    assert [v.name for v in a.variants] == ["fp32", "int8"]
    assert [v.name for v in b.variants] == ["fp32", "int8-openvino"]
    assert b.variants[1].backend is Backend.OPENVINO
    assert b.variants[1].quantizer is not None
    assert b.variants[1].quantizer.config.calibration_method == "entropy"  # type: ignore[attr-defined]


def test_benchmark_with_a_batch_above_one_exports_a_dynamic_batch(yolov8n_pt: Path) -> None:
    pipe = QuantPipeline.from_ultralytics(yolov8n_pt).benchmark(batch_sizes=(1, 8))
    assert pipe.export_config.dynamic
    assert not QuantPipeline.from_ultralytics(yolov8n_pt).benchmark().export_config.dynamic


def test_describe_lists_every_stage(yolov8n_pt: Path) -> None:
    text = (
        QuantPipeline.from_ultralytics(yolov8n_pt)
        .calibrate("calib", num_images=16)
        .quantize("int8")
        .evaluate("coco.yaml")
        .benchmark()
        .describe()
    )
    for fragment in ("model:", "calibrate: 16 images", "variant int8", "evaluate: coco.yaml", "benchmark:"):
        assert fragment in text


def test_plan_is_json_data(yolov8n_pt: Path) -> None:
    import json

    plan = QuantPipeline.from_ultralytics(yolov8n_pt).calibrate("c").quantize("int8").evaluate("e.yaml")
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["variants"][1]["quantizer"]["name"] == "ort-static"
    assert data["evaluation"]["config"]["iou"] == 0.7


def test_duplicate_variant_and_unknown_options_are_config_errors(yolov8n_pt: Path) -> None:
    pipe = QuantPipeline.from_ultralytics(yolov8n_pt).quantize("int8")
    with pytest.raises(ConfigError, match="already has a variant 'int8'"):
        pipe.quantize("int8", calibration_method="minmax", keep_float="decode", name="int8")
    with pytest.raises(ConfigError, match="unknown precision 'int4'"):
        pipe.quantize("int4")
    with pytest.raises(ConfigError, match="unknown backend 'directml'"):
        pipe.quantize("int8", backend="directml")
    with pytest.raises(ConfigError, match="unknown calibration_method 'median'"):
        QuantPipeline.from_ultralytics(yolov8n_pt).quantize("int8", calibration_method="median")
    with pytest.raises(ConfigError, match="made by the fp16 converter, not 'modelopt'"):
        QuantPipeline.from_ultralytics(yolov8n_pt).quantize(Precision.FP16, quantizer="modelopt")
    with pytest.raises(ConfigError, match="makes int8 only"):
        QuantPipeline.from_ultralytics(yolov8n_pt).quantize("fp8", quantizer="ort")
    with pytest.raises(ConfigError, match="unknown quantizer 'tflite'"):
        QuantPipeline.from_ultralytics(yolov8n_pt).quantize("int8", quantizer="tflite")


def test_adding_the_same_variant_again_is_a_no_op(yolov8n_pt: Path) -> None:
    """A notebook cell ``p = p.quantize("int8")`` run twice leaves one int8 variant."""
    pipe = QuantPipeline.from_ultralytics(yolov8n_pt).quantize("int8")
    again = pipe.quantize("int8")
    assert again is pipe
    assert [v.name for v in again.quantize("int8", backend="ort-cpu").variants] == ["fp32", "int8"]


def test_variant_names_say_what_differs_from_the_defaults(yolov8n_pt: Path) -> None:
    pipe = (
        QuantPipeline.from_ultralytics(yolov8n_pt)
        .quantize("int8")
        .quantize("int8", quantizer="modelopt")
        .quantize("int8", quantizer="modelopt", keep_float="nothing")
        .quantize("fp8")
        .quantize("int8", keep_float="head", backend="openvino")
        .quantize("int8", calibration_method="minmax", name="int8-minmax")
        .quantize("fp16")
    )
    names = [v.name for v in pipe.variants]
    assert names == [
        "fp32", "int8", "int8-modelopt", "int8-modelopt-keep-nothing", "fp8", "int8-keep-head-openvino", "int8-minmax",
        "fp16",
    ]  # fmt: skip
    quantizers = [v.quantizer for v in pipe.variants]
    assert [q.name if q else None for q in quantizers] == [
        None, "ort-static", "modelopt", "modelopt", "modelopt", "ort-static", "ort-static", "fp16"
    ]  # fmt: skip
    assert quantizers[3].config.keep_float == FloatScope.nothing()  # type: ignore[union-attr]
    assert quantizers[4].config.mode == "fp8"  # type: ignore[union-attr]
    assert quantizers[5].config.keep_float.head_convs  # type: ignore[union-attr]
    assert quantizers[6].config.calibration_method == "minmax"  # type: ignore[union-attr]


def test_run_fails_fast_on_a_missing_model(tmp_path: Path) -> None:
    pipe = QuantPipeline.from_ultralytics(tmp_path / "nope.pt")
    with pytest.raises(ExportError, match=r"nope\.pt does not exist"):
        pipe.run(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_run_refuses_quantizing_without_calibration(yolov8n_pt: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"need calibration data: add \.calibrate"):
        QuantPipeline.from_ultralytics(yolov8n_pt).quantize("int8").run(tmp_path / "out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_run_refuses_an_unwritable_output_dir(yolov8n_pt: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(ConfigError, match="is not writable"):
        QuantPipeline.from_ultralytics(yolov8n_pt).run(locked / "out")


def test_run_refuses_an_output_path_that_is_a_file(yolov8n_pt: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="is not writable"):
        QuantPipeline.from_ultralytics(yolov8n_pt).run(blocker / "out")


def test_run_checks_the_calibration_set_size_before_exporting(
    yolov8n_pt: Path, coco64_images: Path, tmp_path: Path
) -> None:
    from yoloquant import DataError

    pipe = QuantPipeline.from_ultralytics(yolov8n_pt).calibrate(coco64_images, num_images=500).quantize("int8")
    with pytest.raises(DataError, match="500"):
        pipe.run(tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.onnx"))


def test_cuda_backend_takes_float_variants_only(yolov8n_pt: Path) -> None:
    pipe = (
        QuantPipeline.from_ultralytics(yolov8n_pt)
        .quantize("fp16", backend="ort-cuda")
        .quantize("fp32", backend="ort-cuda")
    )
    assert [v.name for v in pipe.variants] == ["fp32", "fp16-ort-cuda", "fp32-ort-cuda"]
    assert not pipe.variants[1].needs_calibration
    with pytest.raises(ConfigError, match="CUDA provider has no int8 kernels"):
        pipe.quantize("int8", backend="ort-cuda")


def test_accuracy_budget_needs_the_ort_quantizer_and_an_evaluation(yolov8n_pt: Path, tmp_path: Path) -> None:
    pipe = QuantPipeline.from_ultralytics(yolov8n_pt).calibrate("images").quantize("int8", max_map_drop=0.3)
    assert pipe.variants[1].name == "int8-budget0.3"
    with pytest.raises(ConfigError, match=r"add \.evaluate"):
        pipe.run(tmp_path / "out")
    with pytest.raises(ConfigError, match="max_map_drop needs the ONNX Runtime INT8 quantizer"):
        QuantPipeline.from_ultralytics(yolov8n_pt).quantize("int8", quantizer="modelopt", max_map_drop=0.3)


def test_an_executor_is_where_a_budget_or_analysis_runs_not_what_the_plan_is() -> None:
    from yoloquant.decide.ray_executor import RayExecutor

    ray = RayExecutor(address="auto", env={"OMP_NUM_THREADS": "1"})
    plan = QuantPipeline.from_onnx("m.onnx").quantize("int8", max_map_drop=0.3, executor=ray)
    plan = plan.analyze_sensitivity(executor=ray)
    same = QuantPipeline.from_onnx("m.onnx").quantize("int8", max_map_drop=0.3).analyze_sensitivity()
    assert plan.to_dict() == same.to_dict()  # a sweep ledger's fingerprint: the executor is not in it
    assert hash(plan) == hash(same) and plan != same  # hashable despite the executor's dicts; still compared
    assert plan.variants[1].executor == ray and plan.sensitivity_executor == ray
    with pytest.raises(ConfigError, match=r"executor= spreads the accuracy budget's search .* give max_map_drop="):
        QuantPipeline.from_onnx("m.onnx").quantize("int8", executor=ray)
