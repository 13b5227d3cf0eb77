"""The TensorRT backend on the real bundled YOLOv8n, against the test doubles FakeTensorRT + FakeCudart.

What this checks: the precision label and file name of engines built from real FP32, FP16 (Fp16Converter),
ModelOpt INT8 / FP8 Q/DQ and ORT-static (uint8 activations: refused) models; the per-layer audit; and that
a dynamic-shape YOLO engine's buffers, shapes and copies hand back what ONNX Runtime computes (the double
"executes" with ONNX Runtime, so this tests the plumbing, not TensorRT's numerics: tests/gpu/test_trt.py
does that where TensorRT exists). Real TensorRT has never run in this project (docs/gpu.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from doubles import FakeCudart, FakeTensorRT, fake_gpu
from yoloquant.artifacts import CalibrationSet, OnnxModel, QdqModel
from yoloquant.errors import ConfigError

pytest.importorskip("ultralytics")
pytest.importorskip("onnxruntime")

from yoloquant.backends.trt import TrtBuildConfig, TrtEngineBuilder
from yoloquant.postprocess.decode import decode

ROOT = Path(__file__).resolve().parents[2]
CONF = 0.25


@pytest.fixture
def gpu() -> Iterator[tuple[FakeTensorRT, FakeCudart]]:
    with fake_gpu() as doubles:
        yield doubles


@pytest.fixture(scope="module")
def fp32(yolov8n_onnx: Path) -> OnnxModel:
    return OnnxModel.load(yolov8n_onnx)


@pytest.fixture(scope="module")
def calib(fp32: OnnxModel, tmp_path_factory: pytest.TempPathFactory) -> CalibrationSet:
    from yoloquant.data.calibration import ImageCalibrator

    source = ROOT / "assets" / "coco64" / "images"
    cache = tmp_path_factory.mktemp("calib")
    return ImageCalibrator(source=source, num_images=8, cache_dir=cache, progress=False).calibrate(fp32.info)


def test_fp32_and_fp16_engines_are_labelled_by_their_graph(
    gpu: tuple[FakeTensorRT, FakeCudart], fp32: OnnxModel, tmp_path: Path
) -> None:
    from yoloquant.quantize.fp16 import Fp16Converter

    fp16 = Fp16Converter().convert(fp32, tmp_path / "fp16")
    assert TrtEngineBuilder(out_dir=tmp_path).build_file(fp32).path.name == "yolov8n-fp32.engine"
    built = TrtEngineBuilder(out_dir=tmp_path).build_file(fp16)
    assert built.path.name == "yolov8n-fp16.engine" and built.metadata["strongly_typed"] is True
    assert built.metadata["network_types"]["float_type"] == "fp16"


def test_ort_static_int8_is_refused_uint8_activations(
    gpu: tuple[FakeTensorRT, FakeCudart], fp32: OnnxModel, calib: CalibrationSet, tmp_path: Path
) -> None:
    from yoloquant.quantize.ort_static import OrtQuantConfig, OrtStaticQuantizer

    qdq = OrtStaticQuantizer(OrtQuantConfig(reduce_range=False)).quantize(fp32, calib, tmp_path)
    with pytest.raises(ConfigError, match=r"uint8 Q/DQ nodes; TensorRT quantizes to fp4, fp8, int4, int8"):
        TrtEngineBuilder(out_dir=tmp_path).build_file(qdq)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["int8", "fp8"])
def test_modelopt_qdq_engines_are_labelled_and_audited(
    gpu: tuple[FakeTensorRT, FakeCudart], fp32: OnnxModel, calib: CalibrationSet, tmp_path: Path, mode: str
) -> None:
    pytest.importorskip("modelopt.onnx.quantization")
    from yoloquant.quantize.modelopt import ModelOptConfig, ModelOptQuantizer

    qdq: QdqModel = ModelOptQuantizer(ModelOptConfig(mode=mode, keep_float="head")).quantize(fp32, calib, tmp_path)
    with TrtEngineBuilder(out_dir=tmp_path / "engines").build(qdq) as engine:
        assert engine.file.path.name == f"yolov8n-{mode}.engine" and engine.precision == mode
        counts = engine.audit().counts()
        assert counts.get(mode, 0) > 40 and counts.get("fp32", 0) > 0  # the head stays float
        assert set(counts) <= {mode, "fp32"}


def test_dynamic_yolo_engine_hands_back_what_onnxruntime_computes(
    gpu: tuple[FakeTensorRT, FakeCudart], yolov8n_pt: Path, tmp_path: Path
) -> None:
    from yoloquant.backends.ort import OrtEngineBuilder
    from yoloquant.config import ExportConfig
    from yoloquant.data.images import read_image
    from yoloquant.data.letterbox import preprocess
    from yoloquant.export import UltralyticsExporter

    os.environ.setdefault("YOLO_OFFLINE", "1")
    dynamic = UltralyticsExporter(ExportConfig(simplify=False, dynamic=True)).export(yolov8n_pt, tmp_path)
    files = sorted((ROOT / "assets" / "coco64" / "images").glob("*.jpg"))[:3]
    images = np.stack([preprocess(read_image(f), 640)[0] for f in files]).astype(np.float32) / 255.0
    trt, _ = gpu
    cfg = TrtBuildConfig(min_batch=1, opt_batch=2, max_batch=4)
    with TrtEngineBuilder(cfg, out_dir=tmp_path).build(dynamic) as engine, OrtEngineBuilder().build(dynamic) as ref:
        assert trt.builds[-1]["profiles"][0]["images"][2] == [4, 3, 640, 640]
        got = decode(engine.infer(images), dynamic.info, conf=CONF)
        want = decode(ref.infer(images), dynamic.info, conf=CONF)
        for g, w in zip(got, want, strict=True):
            assert len(w) > 0 and g.classes.tolist() == w.classes.tolist()
            assert float(np.abs(g.boxes - w.boxes).max()) <= 1.0
