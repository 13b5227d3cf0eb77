"""Brevitas calibration, AdaRound and QAT on a CUDA GPU (run on an H100; benchmarks/brevitas_coco.py --device cuda)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yoloquant.artifacts import CalibrationSet, ModelInfo, OnnxModel

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("brevitas")
pytest.importorskip("onnxoptimizer")
if not torch.cuda.is_available():
    pytest.skip("PyTorch sees no CUDA GPU", allow_module_level=True)

from yoloquant.quantize.brevitas import BrevitasConfig, BrevitasQuantizer, QatConfig  # noqa: E402


@pytest.fixture
def model_and_data(yolov8n_onnx: Path, yolov8n_pt: Path, coco64_images: Path) -> tuple[OnnxModel, CalibrationSet]:
    from yoloquant.data.calibration import ImageCalibrator

    model = OnnxModel(path=yolov8n_onnx, info=ModelInfo.from_onnx(yolov8n_onnx), checkpoint=yolov8n_pt)
    return model, ImageCalibrator(source=coco64_images, num_images=8, progress=False).calibrate(model.info)


def _ops(path: Path) -> list[Any]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_w4a8_calibrates_and_fine_tunes_on_the_gpu(
    model_and_data: tuple[OnnxModel, CalibrationSet], tmp_path: Path
) -> None:
    config = BrevitasConfig.w4a8(rounding="gptq", rounding_images=8, calibration_device="cuda")
    qat = QatConfig(steps=3, batch_size=4, device="cuda")
    qdq = BrevitasQuantizer(config, qat=qat, progress=False).quantize(*model_and_data, tmp_path)
    assert qdq.config["qat"]["device"].startswith("cuda") and qdq.config["qat"]["steps"] == 3
    assert np.isfinite(qdq.config["qat"]["loss_last"])
    assert _ops(qdq.path).count("QuantizeLinear") == 63  # int8 inputs of every quantized conv


def test_adaround_learns_the_rounding_on_the_gpu(
    model_and_data: tuple[OnnxModel, CalibrationSet], tmp_path: Path
) -> None:
    config = BrevitasConfig.w4a16(rounding="adaround", rounding_iters=20, calibration_device="cuda")
    qdq = BrevitasQuantizer(config, progress=False).quantize(*model_and_data, tmp_path)
    assert qdq.config["rounding"] == "adaround"
    assert _ops(qdq.path).count("DequantizeLinear") == 63  # every conv but the DFL's
