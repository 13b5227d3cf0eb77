"""GPU fixtures: skip (with the reason) where CUDA or onnxruntime-gpu is absent; real models and images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from yoloquant.artifacts import OnnxModel
from yoloquant.data.images import read_image
from yoloquant.data.letterbox import preprocess
from yoloquant.detections import Detections


def _cuda_skip_reason() -> str | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime-gpu (CUDAExecutionProvider) is not installed"
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return "cuda-python (cuda.bindings) is not installed"
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count < 1:
        return "no CUDA device"
    return None


@pytest.fixture(scope="session")
def cuda_ready() -> None:
    reason = _cuda_skip_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def gpu_models(cuda_ready: None, tmp_path_factory: pytest.TempPathFactory, yolov8n_pt: Path) -> dict[str, OnnxModel]:
    """YOLOv8n exported static batch 1 and dynamic batch, and their FP16 conversions."""
    pytest.importorskip("ultralytics")
    from yoloquant.config import ExportConfig
    from yoloquant.export import UltralyticsExporter
    from yoloquant.quantize.fp16 import Fp16Converter

    os.environ.setdefault("YOLO_OFFLINE", "1")
    out = tmp_path_factory.mktemp("gpu-models")
    static = UltralyticsExporter(ExportConfig(simplify=False)).export(yolov8n_pt, out / "static")
    dynamic = UltralyticsExporter(ExportConfig(simplify=False, dynamic=True)).export(yolov8n_pt, out / "dynamic")
    return {
        "static": static,
        "dynamic": dynamic,
        "static_fp16": Fp16Converter().convert(static, out / "static"),
        "dynamic_fp16": Fp16Converter().convert(dynamic, out / "dynamic"),
    }


@pytest.fixture(scope="session")
def coco64_batch(coco64_images: Path) -> np.ndarray:
    """The 64 bundled COCO images, letterboxed like ``yolo val``: float32 [64, 3, 640, 640] in [0, 1]."""
    files = sorted(coco64_images.glob("*.jpg"))
    return np.stack([preprocess(read_image(f), 640)[0] for f in files]).astype(np.float32) / 255.0


@pytest.fixture(scope="session")
def raw_outputs(yolov8n_onnx: Path, coco64_batch: np.ndarray) -> np.ndarray:
    """ONNX Runtime CPU's raw YOLOv8n outputs ``[16, 84, 8400]`` for the first 16 bundled images."""
    pytest.importorskip("onnxruntime")
    from yoloquant.backends.ort import OrtEngineBuilder

    with OrtEngineBuilder().build(OnnxModel.load(yolov8n_onnx)) as engine:
        return np.concatenate([engine.infer(coco64_batch[i : i + 1])[0] for i in range(16)])


@pytest.fixture(scope="session")
def same_detections() -> object:
    return assert_same_detections


def assert_same_detections(a: Detections, b: Detections, *, conf: float, px: float = 1.0, margin: float = 2e-3) -> None:
    """Same classes in the same order and boxes within ``px``; only detections whose score is within
    ``margin`` of the threshold may be present on one side only (they sit on the ``conf`` boundary)."""

    def sure(d: Detections) -> Detections:
        keep = d.scores > conf + margin
        return Detections(d.boxes[keep], d.scores[keep], d.classes[keep])

    sa, sb = sure(a), sure(b)
    assert len(sa) == len(sb), f"{len(sa)} vs {len(sb)} detections"
    assert sa.classes.tolist() == sb.classes.tolist()
    if len(sa):
        assert float(np.abs(sa.boxes - sb.boxes).max()) <= px
