"""TensorRT engines on the GPU: build, save + reload, detections vs ONNX Runtime CPU, profiles, audit.

Skipped where TensorRT is not installed (everywhere in this project so far: see docs/gpu.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yoloquant import OnnxModel
from yoloquant.postprocess.decode import decode

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed")

pytestmark = pytest.mark.gpu

CONF = 0.25


def test_fp16_strongly_typed_engine_matches_cpu_and_reloads(
    gpu_models: dict[str, OnnxModel], coco64_batch: np.ndarray, tmp_path: Path
) -> None:
    from yoloquant.backends.ort import OrtEngineBuilder
    from yoloquant.backends.trt import TrtBuildConfig, TrtEngine, TrtEngineBuilder

    cache = tmp_path / "timing.cache"
    builder = TrtEngineBuilder(TrtBuildConfig(precision="fp16", timing_cache=str(cache)), out_dir=tmp_path)
    engine_file = builder.build_file(gpu_models["static_fp16"])
    assert engine_file.metadata["strongly_typed"] is True
    assert engine_file.metadata["source_sha256"] == gpu_models["static_fp16"].sha256()
    assert cache.is_file()
    info = gpu_models["static"].info
    with TrtEngine.load(engine_file.path) as engine, OrtEngineBuilder().build(gpu_models["static"]) as cpu:
        assert engine.audit().counts().get("fp16", 0) > 50
        found = total = 0
        for image in coco64_batch[:16]:
            (ref,) = decode(cpu.infer(image[None]), info, conf=CONF)
            (got,) = decode(engine.infer(image[None]), info, conf=CONF)
            for box, cls in zip(ref.boxes, ref.classes, strict=True):
                total += 1
                found += bool(((got.classes == cls) & (np.abs(got.boxes - box).max(1, initial=0) <= 2)).any())
        assert found / total >= 0.95


def test_dynamic_batch_profile_runs_every_batch_in_range(
    gpu_models: dict[str, OnnxModel], coco64_batch: np.ndarray, tmp_path: Path
) -> None:
    from yoloquant import InferenceError
    from yoloquant.backends.trt import TrtBuildConfig, TrtEngineBuilder

    cfg = TrtBuildConfig(precision="fp32", min_batch=1, opt_batch=8, max_batch=16)
    with TrtEngineBuilder(cfg, out_dir=tmp_path).build(gpu_models["dynamic"]) as engine:
        (b16,) = engine.infer(coco64_batch[:16])
        (b3,) = engine.infer(coco64_batch[:3])
        np.testing.assert_allclose(b3, b16[:3], atol=1e-2, rtol=1e-3)
        with pytest.raises(InferenceError, match=r"\[1..16, 3, 640, 640\]"):
            engine.infer(coco64_batch[:17])
    engine.close()


# --- TensorRT vs the ONNX Runtime path, INT8 / FP8 Q/DQ, streams -----------------------------------


def test_fp32_engine_matches_onnxruntime_cpu_on_the_bundled_images(
    gpu_models: dict[str, OnnxModel], coco64_batch: np.ndarray, tmp_path: Path, same_detections: Any
) -> None:
    from yoloquant.backends.ort import OrtEngineBuilder
    from yoloquant.backends.trt import TrtBuildConfig, TrtEngineBuilder

    model = gpu_models["dynamic"]
    cfg = TrtBuildConfig(precision="fp32", max_batch=16, tf32=False)  # TF32 off: FP32 within a pixel
    with TrtEngineBuilder(cfg, out_dir=tmp_path).build(model) as engine, OrtEngineBuilder().build(model) as cpu:
        counts = engine.audit().counts()
        assert engine.file.path.name.endswith("-fp32.engine") and max(counts, key=counts.__getitem__) == "fp32"
        for start in range(0, len(coco64_batch), 16):
            images = coco64_batch[start : start + 16]
            got = decode(engine.infer(images), model.info, conf=CONF)
            want = decode(cpu.infer(images), model.info, conf=CONF)
            for g, w in zip(got, want, strict=True):
                same_detections(g, w, conf=CONF, px=1.0)


def test_two_streams_give_the_same_results_as_one(
    gpu_models: dict[str, OnnxModel], coco64_batch: np.ndarray, tmp_path: Path
) -> None:
    from cuda.bindings import runtime as cudart

    from yoloquant.backends.trt import TrtBuildConfig, TrtEngineBuilder

    streams = [cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking)[1] for _ in range(2)]
    cfg = TrtBuildConfig(precision="fp32", max_batch=8, tf32=False)
    with TrtEngineBuilder(cfg, out_dir=tmp_path).build(gpu_models["dynamic"]) as engine:
        a, b = coco64_batch[:8], coco64_batch[8:11]
        (ref_a,), (ref_b,) = engine.infer(a), engine.infer(b)
        pending = [engine.infer_async(x, s) for x, s in zip((a, b), streams, strict=True)]
        (got_a,), (got_b,) = (p.wait() for p in pending)
        assert engine.contexts == 3
        np.testing.assert_allclose(got_a, ref_a, atol=1e-4, rtol=1e-5)  # same kernels, other context
        np.testing.assert_allclose(got_b, ref_b, atol=1e-4, rtol=1e-5)
    for s in streams:
        cudart.cudaStreamDestroy(s)


@pytest.mark.parametrize("mode", ["int8", "fp8"])
def test_modelopt_qdq_engine_runs_its_precision_and_matches_onnxruntime(
    gpu_models: dict[str, OnnxModel], coco64_batch: np.ndarray, tmp_path: Path, mode: str
) -> None:
    pytest.importorskip("modelopt.onnx.quantization", reason="ModelOpt is not installed on this machine")
    from yoloquant.artifacts import CalibrationSet
    from yoloquant.backends.ort import OrtEngineBuilder
    from yoloquant.backends.trt import TrtEngineBuilder
    from yoloquant.quantize.modelopt import ModelOptConfig, ModelOptQuantizer

    calib_images = (coco64_batch[:16] * 255).round().astype(np.uint8)
    calib = CalibrationSet(images=calib_images, files=(), digest="coco64[:16]")
    config = ModelOptConfig(mode=mode, keep_float="head")
    qdq = ModelOptQuantizer(config).quantize(gpu_models["static"], calib, tmp_path)
    with TrtEngineBuilder(out_dir=tmp_path).build(qdq) as engine, OrtEngineBuilder().build(qdq) as cpu:
        assert engine.file.path.name == f"yolov8n-{mode}.engine" and engine.precision == mode
        audit = engine.audit()
        counts = audit.counts()
        # the quantized convs really run in `mode`: it is the most common layer precision
        assert max(counts, key=counts.__getitem__) == mode and counts[mode] >= 20, audit.table()
        assert not any(p.startswith("unknown (") for p in counts), audit.table()  # no type the audit misreads
        found = total = 0
        for image in coco64_batch[32:48]:  # images the calibration never saw
            (ref,) = decode(cpu.infer(image[None]), qdq.info, conf=CONF)
            (got,) = decode(engine.infer(image[None]), qdq.info, conf=CONF)
            for box, cls in zip(ref.boxes, ref.classes, strict=True):
                total += 1
                found += bool(((got.classes == cls) & (np.abs(got.boxes - box).max(1, initial=0) <= 4)).any())
        assert total > 0 and found / total >= 0.9
