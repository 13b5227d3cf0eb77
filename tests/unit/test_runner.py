"""The runner gives each quantized variant its own file and shares one between equal quantizers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yoloquant.artifacts import CalibrationSet, ModelInfo, OnnxModel, QdqModel
from yoloquant.config import Backend, Precision
from yoloquant.pipeline import VariantPlan
from yoloquant.runner import _make_variants


@dataclass(frozen=True)
class FakeQuantizer:
    tag: str
    name: str = "fake"
    calls: list[Path] = field(default_factory=list, compare=False)

    def quantize(self, model: OnnxModel, data: CalibrationSet, out_dir: Path) -> QdqModel:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "model-int8.onnx"
        path.write_text(self.tag)
        self.calls.append(out_dir)
        return QdqModel(path=path, info=model.info, precision=Precision.INT8, source=model, quantizer="fake",
                        layout="x")  # fmt: skip


def _inputs(tmp_path: Path) -> tuple[OnnxModel, CalibrationSet]:
    fp32 = tmp_path / "m-fp32.onnx"
    fp32.write_text("fp32")
    model = OnnxModel(path=fp32, info=ModelInfo(names={0: "a"}))
    calib = CalibrationSet(images=np.zeros((1, 3, 4, 4), np.uint8), files=(fp32,), digest="d")
    return model, calib


def test_different_quantizers_write_different_files(tmp_path: Path) -> None:
    model, calib = _inputs(tmp_path)
    plans = (
        VariantPlan(precision=Precision.FP32),
        VariantPlan(precision=Precision.INT8, quantizer=FakeQuantizer("cpu")),
        VariantPlan(precision=Precision.INT8, backend=Backend.OPENVINO, quantizer=FakeQuantizer("ov")),
    )
    built = _make_variants(plans, model, calib, tmp_path)
    assert built[0].model is model
    assert built[1].model.path.read_text() == "cpu"
    assert built[2].model.path.read_text() == "ov"
    assert built[1].model.path.parent.name == "int8"
    assert built[2].model.path.parent.name == "int8-openvino"


def test_equal_quantizers_share_one_model(tmp_path: Path) -> None:
    model, calib = _inputs(tmp_path)
    quantizer = FakeQuantizer("same")
    plans = (
        VariantPlan(precision=Precision.INT8, quantizer=quantizer),
        VariantPlan(precision=Precision.INT8, backend=Backend.OPENVINO, quantizer=FakeQuantizer("same")),
    )
    built = _make_variants(plans, model, calib, tmp_path)
    assert built[0].model is built[1].model
    assert len(quantizer.calls) == 1
