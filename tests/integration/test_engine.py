"""The ONNX Runtime engine owns its session, validates input and closes idempotently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from yoloquant import EngineBuildError, InferenceError, OnnxModel
from yoloquant.backends.ort import OrtEngineBuilder
from yoloquant.config import Backend

pytest.importorskip("onnxruntime")


def test_engine_runs_validates_and_closes_twice(yolov8n_onnx: Path) -> None:
    engine = OrtEngineBuilder().build(OnnxModel.load(yolov8n_onnx))
    assert engine.providers == ["CPUExecutionProvider"]
    (out,) = engine.infer(np.zeros((1, 3, 640, 640), np.float32))
    assert out.shape == (1, 84, 8400)
    with pytest.raises(InferenceError, match=r"expected a float32 batch of shape \[B, 3, 640, 640\]"):
        engine.infer(np.zeros((1, 3, 320, 320), np.float32))
    with pytest.raises(InferenceError, match="exported for batch 1 but got batch 2; run batches of 1, or re-export"):
        engine.infer(np.zeros((2, 3, 640, 640), np.float32))
    engine.close()
    engine.close()
    assert engine.providers == []
    with pytest.raises(InferenceError, match="engine is closed"):
        engine.infer(np.zeros((1, 3, 640, 640), np.float32))


def test_context_manager_closes(yolov8n_onnx: Path) -> None:
    with OrtEngineBuilder().build(OnnxModel.load(yolov8n_onnx)) as engine:
        pass
    with pytest.raises(InferenceError):
        engine.infer(np.zeros((1, 3, 640, 640), np.float32))


def test_openvino_backend_is_not_an_onnxruntime_session(yolov8n_onnx: Path) -> None:
    with pytest.raises(EngineBuildError, match="OrtEngineBuilder runs onnxruntime, not 'openvino'; for openvino use"):
        OrtEngineBuilder(backend=Backend.OPENVINO).build(OnnxModel.load(yolov8n_onnx))


def test_unloadable_onnx_is_an_engine_build_error(tmp_path: Path, yolov8n_onnx: Path) -> None:
    model = OnnxModel.load(yolov8n_onnx)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(yolov8n_onnx.read_bytes()[:5000])
    with pytest.raises(EngineBuildError, match=r"could not load .*broken\.onnx"):
        OrtEngineBuilder().build(OnnxModel(path=broken, info=model.info))


def test_cuda_backend_without_a_gpu_build_says_how_to_install(yolov8n_onnx: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    from yoloquant.backends import build_engine

    with pytest.raises(EngineBuildError, match=r"yoloquant\[gpu\]|cuda-python"):
        build_engine(OnnxModel.load(yolov8n_onnx), Backend.ORT_CUDA)
