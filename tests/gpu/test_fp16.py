"""FP16 conversion: FP32 I/O and decode, smaller file, detections close to FP32 (CPU and CUDA)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from yoloquant import Detections, OnnxModel, Precision
from yoloquant.postprocess.decode import decode

CONF = 0.25


def test_fp16_model_keeps_float32_io_and_decode(tmp_path: Path, yolov8n_onnx: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from yoloquant.quantize.fp16 import Fp16Converter

    model = OnnxModel.load(yolov8n_onnx)
    fp16 = Fp16Converter().quantize(model, None, tmp_path)
    assert fp16.precision is Precision.FP16
    assert fp16.path.stat().st_size < 0.6 * model.size_bytes
    proto = onnx.load(str(fp16.path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert "Softmax" in fp16.float_nodes and "Sigmoid" in fp16.float_nodes  # the DFL and class scores
    assert len(fp16.quantized_nodes["Conv"]) == 63  # every feature conv, not the DFL projection
    assert OnnxModel.load(fp16.path).info == model.info


def test_fp16_on_cpu_is_close_to_fp32(
    tmp_path: Path, yolov8n_onnx: Path, coco64_batch: np.ndarray, same_detections: Callable[..., None]
) -> None:
    pytest.importorskip("onnxruntime")
    from yoloquant.backends.ort import OrtEngineBuilder
    from yoloquant.quantize.fp16 import Fp16Converter

    model = OnnxModel.load(yolov8n_onnx)
    fp16 = Fp16Converter().convert(model, tmp_path)
    with OrtEngineBuilder().build(model) as a, OrtEngineBuilder().build(fp16) as b:
        for image in coco64_batch[:8]:
            (ra,) = a.infer(image[None])
            (rb,) = b.infer(image[None])
            assert float(np.abs(ra[:, :4] - rb[:, :4]).max()) < 2.0  # pixels
            (da,) = decode([ra], model.info, conf=CONF)
            (db,) = decode([rb], model.info, conf=CONF)
            same_detections(db, da, conf=CONF, px=2.0, margin=0.02)


def _match_rate(reference: list[Detections], other: list[Detections], *, min_score: float = 0.3) -> float:
    """Share of the reference's confident detections that ``other`` has too (same class, box within 2 px)."""
    found = total = 0
    for ref, oth in zip(reference, other, strict=True):
        for box, score, cls in zip(ref.boxes, ref.scores, ref.classes, strict=True):
            if score < min_score:
                continue
            total += 1
            close = (oth.classes == cls) & (np.abs(oth.boxes - box).max(axis=1, initial=0.0) <= 2.0)
            found += bool(close.any())
    assert total > 100
    return found / total


@pytest.mark.gpu
def test_fp16_on_cuda_is_close_to_fp32(gpu_models: dict[str, OnnxModel], coco64_batch: np.ndarray) -> None:
    from yoloquant.backends.ort.cuda import CudaEngineBuilder

    info = gpu_models["static"].info
    with (
        CudaEngineBuilder().build(gpu_models["static"]) as a,
        CudaEngineBuilder().build(gpu_models["static_fp16"]) as b,
    ):
        fp32 = [decode(a.infer(image[None]), info, conf=CONF)[0] for image in coco64_batch]
        fp16 = [decode(b.infer(image[None]), info, conf=CONF)[0] for image in coco64_batch]
    assert _match_rate(fp32, fp16) >= 0.97
    assert _match_rate(fp16, fp32) >= 0.97
