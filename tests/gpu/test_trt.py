"""TensorRT engines on the GPU: build, save + reload, detections vs ONNX Runtime CPU, profiles, audit.

Skipped where TensorRT is not installed (everywhere in this project so far: see docs/gpu.md).
"""

from __future__ import annotations

from pathlib import Path

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
