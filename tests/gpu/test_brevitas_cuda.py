"""Brevitas calibration and QAT on a CUDA GPU (what benchmarks/brevitas_coco.py --device cuda ran on an H100)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from yoloquant.artifacts import ModelInfo, OnnxModel

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
pytest.importorskip("brevitas")
pytest.importorskip("onnxoptimizer")
if not torch.cuda.is_available():
    pytest.skip("PyTorch sees no CUDA GPU", allow_module_level=True)


def test_w4a8_calibrates_and_fine_tunes_on_the_gpu(
    yolov8n_onnx: Path, yolov8n_pt: Path, coco64_images: Path, tmp_path: Path
) -> None:
    onnx = pytest.importorskip("onnx")
    from yoloquant.data.calibration import ImageCalibrator
    from yoloquant.quantize.brevitas import BrevitasConfig, BrevitasQuantizer, QatConfig

    model = OnnxModel(path=yolov8n_onnx, info=ModelInfo.from_onnx(yolov8n_onnx), checkpoint=yolov8n_pt)
    data = ImageCalibrator(source=coco64_images, num_images=8, progress=False).calibrate(model.info)
    config = BrevitasConfig.preset("w4a8", rounding="gptq", rounding_images=8, calibration_device="cuda")
    qat = QatConfig(steps=3, batch_size=4, device="cuda")
    qdq = BrevitasQuantizer(config, qat=qat, progress=False).quantize(model, data, tmp_path)
    assert qdq.config["qat"]["device"].startswith("cuda") and qdq.config["qat"]["steps"] == 3
    assert np.isfinite(qdq.config["qat"]["loss_last"])
    graph = onnx.load(str(qdq.path)).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) == 63  # int8 inputs of every quantized conv


def test_adaround_learns_the_rounding_on_the_gpu(
    yolov8n_onnx: Path, yolov8n_pt: Path, coco64_images: Path, tmp_path: Path
) -> None:
    onnx = pytest.importorskip("onnx")
    from yoloquant.data.calibration import ImageCalibrator
    from yoloquant.quantize.brevitas import BrevitasConfig, BrevitasQuantizer

    model = OnnxModel(path=yolov8n_onnx, info=ModelInfo.from_onnx(yolov8n_onnx), checkpoint=yolov8n_pt)
    data = ImageCalibrator(source=coco64_images, num_images=8, progress=False).calibrate(model.info)
    config = BrevitasConfig.preset("w4a16", rounding="adaround", rounding_iters=20, calibration_device="cuda")
    qdq = BrevitasQuantizer(config, progress=False).quantize(model, data, tmp_path)
    assert qdq.config["rounding"] == "adaround"
    graph = onnx.load(str(qdq.path)).graph
    assert sum(n.op_type == "DequantizeLinear" for n in graph.node) == 63  # every conv but the DFL's
