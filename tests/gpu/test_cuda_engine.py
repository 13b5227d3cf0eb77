"""CudaEngine on real images: the same detections as the CPU engine, streams, CUDA graphs, cleanup."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from yoloquant import InferenceError, OnnxModel
from yoloquant.backends.ort import OrtEngineBuilder
from yoloquant.postprocess.decode import decode

pytestmark = pytest.mark.gpu

CONF = 0.25


def _cuda() -> Any:
    from yoloquant.backends.ort.cuda import CudaEngineBuilder

    return CudaEngineBuilder


def test_cpu_and_cuda_detections_match_on_real_images(
    gpu_models: dict[str, OnnxModel], coco64_batch: np.ndarray, same_detections: Callable[..., None]
) -> None:
    model = gpu_models["static"]
    with OrtEngineBuilder().build(model) as cpu, _cuda()().build(model) as gpu:
        assert gpu.providers[0] == "CUDAExecutionProvider"
        total = 0
        for image in coco64_batch:
            x = image[None]
            (ref,) = cpu.infer(x)
            (out,) = gpu.infer(x)
            assert out.shape == ref.shape == (1, 84, 8400)
            assert float(np.abs(out[:, :4] - ref[:, :4]).max()) < 0.05  # pixels
            assert float(np.abs(out[:, 4:] - ref[:, 4:]).max()) < 1e-3  # scores
            (d_ref,) = decode([ref], model.info, conf=CONF)
            (d_out,) = decode([out], model.info, conf=CONF)
            same_detections(d_out, d_ref, conf=CONF)
            total += len(d_ref)
        assert total > 100  # the images really contain objects


def test_dynamic_batch_16_matches_batch_1(gpu_models: dict[str, OnnxModel], coco64_batch: np.ndarray) -> None:
    model = gpu_models["dynamic"]
    with _cuda()(batch=16).build(model) as engine:
        (batched,) = engine.infer(coco64_batch[:16])
        singles = np.concatenate([engine.infer(coco64_batch[i : i + 1])[0] for i in range(16)])
    np.testing.assert_allclose(batched, singles, atol=2e-2, rtol=1e-3)


def test_uint8_input_equals_float_input(gpu_models: dict[str, OnnxModel], coco64_batch: np.ndarray) -> None:
    model = gpu_models["static"]
    pixels = np.round(coco64_batch[:1] * 255).astype(np.uint8)
    with _cuda()().build(model) as f32, _cuda()(uint8_input=True).build(model) as u8:
        (a,) = f32.infer(pixels.astype(np.float32) / 255.0)
        (b,) = u8.infer(pixels)
    np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-5)


def test_cuda_graph_on_and_off_agree(gpu_models: dict[str, OnnxModel], coco64_batch: np.ndarray) -> None:
    model = gpu_models["static"]
    with _cuda()(cuda_graph=True).build(model) as graph, _cuda()().build(model) as plain:
        for image in coco64_batch[:16]:
            (a,) = graph.infer(image[None])
            (b,) = plain.infer(image[None])
            np.testing.assert_allclose(a, b, atol=1e-2, rtol=1e-4)
        with pytest.raises(InferenceError, match="exported for batch 1"):
            graph.infer(coco64_batch[:2])


def test_async_on_a_foreign_stream_and_overwrite_guard(
    gpu_models: dict[str, OnnxModel], coco64_batch: np.ndarray
) -> None:
    from cuda.bindings import runtime as cudart

    model = gpu_models["static"]
    err, stream = cudart.cudaStreamCreate()
    assert err == cudart.cudaError_t.cudaSuccess
    with _cuda()(depth=2).build(model) as engine:
        reference = [engine.infer(coco64_batch[i : i + 1])[0] for i in range(3)]
        pending = [engine.infer_async(coco64_batch[i : i + 1], stream) for i in range(2)]
        for p, ref in zip(pending, reference, strict=False):
            np.testing.assert_array_equal(p.wait()[0], ref)
        first = engine.infer_async(coco64_batch[:1])
        for i in range(2):  # the ring has 2 slots: the third call reuses the first one's
            engine.infer_async(coco64_batch[i + 1 : i + 2])
        with pytest.raises(InferenceError, match="overwritten"):
            first.wait()
    cudart.cudaStreamDestroy(stream)


def test_eight_engines_on_eight_streams_match_serial_and_do_not_grow_memory(
    gpu_models: dict[str, OnnxModel], coco64_batch: np.ndarray
) -> None:
    from yoloquant.backends.ort.cuda import gpu_memory_used

    model, frames = gpu_models["static"], 200
    with _cuda()().build(model) as serial:
        reference = [serial.infer(coco64_batch[i : i + 1])[0] for i in range(len(coco64_batch))]
    engines = [_cuda()().build(model) for _ in range(8)]
    assert len({e.stream for e in engines}) == 8
    errors: list[str] = []

    def work(k: int, engine: Any, start: int, stop: int) -> None:
        for f in range(start, stop):
            i = (f * 7 + k) % len(coco64_batch)
            (out,) = engine.infer(coco64_batch[i : i + 1])
            if not np.allclose(out, reference[i], atol=2e-2, rtol=1e-4):
                errors.append(f"engine {k} frame {f} image {i}: max diff {np.abs(out - reference[i]).max()}")

    def run(start: int, stop: int) -> None:
        threads = [threading.Thread(target=work, args=(k, e, start, stop)) for k, e in enumerate(engines)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    run(0, 10)  # warm-up: arenas and cuDNN workspaces reach their size
    before = gpu_memory_used()
    run(10, frames)
    growth = gpu_memory_used() - before
    for e in engines:
        e.close()
        e.close()
    assert not errors, errors[:5]
    assert growth <= 4 << 20, f"GPU memory grew by {growth / 2**20:.1f} MiB"


def test_close_is_idempotent_and_closed_engine_refuses(gpu_models: dict[str, OnnxModel]) -> None:
    engine = _cuda()().build(gpu_models["static"])
    with engine:
        pass
    engine.close()
    assert engine.providers == []
    with pytest.raises(InferenceError, match="engine is closed"):
        engine.infer(np.zeros((1, 3, 640, 640), np.float32))
