"""The TensorRT engine's CUDA side (streams, pinned slots, events, async copies, frees) on a real GPU,
with FakeTensorRT (a TEST DOUBLE of TensorRT: tests/doubles) in place of TensorRT, which cannot be
installed here. The double "executes" with ONNX Runtime on the CPU, reading and writing the engine's real
device buffers (tests/doubles/fake_tensorrt.py ``CudaMemory``). Needs cuda-python and a CUDA device only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
cudart: Any = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (cuda.bindings) is not installed")

from doubles import FakeTensorRT  # noqa: E402
from doubles.fake_tensorrt import CudaMemory  # noqa: E402
from doubles.tiny import model, reference  # noqa: E402
from yoloquant._optional import substitute  # noqa: E402
from yoloquant.backends._cuda import gpu_memory_used  # noqa: E402
from yoloquant.backends.trt import TrtBuildConfig, TrtEngineBuilder  # noqa: E402
from yoloquant.errors import InferenceError  # noqa: E402

pytestmark = pytest.mark.gpu
RNG = np.random.default_rng(2)


@pytest.fixture
def fake_trt_on_cuda() -> Iterator[FakeTensorRT]:
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count < 1:
        pytest.skip("no CUDA device")
    trt = FakeTensorRT("10.16.1", memory=CudaMemory(cudart))
    with substitute({"tensorrt": trt}):  # cuda.bindings.runtime stays the real one
        yield trt


def test_engine_runs_on_real_device_buffers_and_streams(fake_trt_on_cuda: FakeTensorRT, tmp_path: Path) -> None:
    tiny = model(tmp_path / "tiny.onnx", batch="batch")
    cfg = TrtBuildConfig(max_batch=8)
    before = gpu_memory_used()
    streams = [int(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking)[1]) for _ in range(2)]
    with TrtEngineBuilder(cfg, out_dir=tmp_path).build(tiny) as engine:
        assert engine.file.metadata["gpu"]  # the real GPU's name
        for n in (1, 5, 8):
            x = RNG.random((n, 3, 32, 32), dtype=np.float32)
            np.testing.assert_allclose(engine.infer(x)[0], reference(x), rtol=1e-5, atol=1e-5)
        xs = [RNG.random((n, 3, 32, 32), dtype=np.float32) for n in (8, 2, 3, 7)]
        pending = [engine.infer_async(x, streams[i % 2]) for i, x in enumerate(xs[:2])]  # depth 2 per stream
        pending += [engine.infer_async(x, streams[i % 2]) for i, x in enumerate(xs[2:])]
        for p, x in zip(pending, xs, strict=True):
            np.testing.assert_allclose(p.wait()[0], reference(x), rtol=1e-5, atol=1e-5)
        assert engine.contexts == 3
        with pytest.raises(InferenceError, match=r"\[1..8, 3, 32, 32\]"):
            engine.infer(RNG.random((9, 3, 32, 32), dtype=np.float32))
    for s in streams:
        cudart.cudaStreamDestroy(s)
    assert gpu_memory_used() - before < 8 << 20  # the buffers were freed (allocator granularity aside)
