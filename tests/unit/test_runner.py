"""The runner gives each quantized variant its own file and shares one between equal quantizers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

from yoloquant.artifacts import CalibrationSet, ModelInfo, OnnxModel, QdqModel
from yoloquant.config import Backend, Precision
from yoloquant.pipeline import VariantPlan
from yoloquant.runner import _make_variants


@dataclass(frozen=True)
class FakeConfig:
    def to_dict(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class FakeQuantizer:
    """A quantizer with no ``progress`` field: the runner asks ``with_progress`` and rewrites nothing."""

    tag: str
    name: str = "fake"
    needs_calibration: bool = True
    config: FakeConfig = FakeConfig()
    calls: list[Path] = field(default_factory=list, compare=False)
    images: list[int] = field(default_factory=list, compare=False)  # calibration images each call got
    quiet: list[bool] = field(default_factory=list, compare=False)  # with_progress(False) calls

    def with_progress(self, enabled: bool) -> Self:
        self.quiet.append(not enabled)
        return self

    def quantize(self, model: OnnxModel, data: CalibrationSet, out_dir: Path) -> QdqModel:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "model-int8.onnx"
        path.write_text(self.tag)
        self.calls.append(out_dir)
        self.images.append(len(data))
        return QdqModel(path=path, info=model.info, precision=Precision.INT8, source=model, quantizer="fake")


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


def test_a_quantizer_that_needs_no_calibration_gets_no_images(tmp_path: Path) -> None:
    model, calib = _inputs(tmp_path)
    converter, quantizer = FakeQuantizer("fp16", needs_calibration=False), FakeQuantizer("int8")
    plans = (
        VariantPlan(precision=Precision.FP16, quantizer=converter),
        VariantPlan(precision=Precision.INT8, quantizer=quantizer),
    )
    assert not plans[0].needs_calibration and plans[1].needs_calibration
    _make_variants(plans, model, calib, tmp_path)
    assert converter.images == [0]  # the plan has calibration images, and this quantizer got none
    assert quantizer.images == [len(calib)]


def test_a_quiet_run_asks_the_quantizer_and_rewrites_no_field(tmp_path: Path) -> None:
    model, calib = _inputs(tmp_path)
    quantizer = FakeQuantizer("q")
    plans = (VariantPlan(precision=Precision.INT8, quantizer=quantizer),)
    _make_variants(plans, model, calib, tmp_path, progress=False)
    assert quantizer.quiet == [True]
    assert len(quantizer.calls) == 1  # quantized by the object with_progress returned (itself)
    loud = FakeQuantizer("loud")
    _make_variants((VariantPlan(precision=Precision.INT8, quantizer=loud),), model, calib, tmp_path / "b")
    assert loud.quiet == []  # a run with progress leaves the quantizer's own setting alone


def test_fp16_converter_needs_no_calibration_and_the_int8_quantizers_do() -> None:
    from yoloquant.quantize import make_quantizer

    assert not make_quantizer(Precision.FP16, Backend.ORT_CPU).needs_calibration
    for precision in (Precision.INT8, Precision.FP8, Precision.W8A8):
        assert make_quantizer(precision, Backend.ORT_CPU).needs_calibration
    assert make_quantizer(Precision.INT8, Backend.OPENVINO, quantizer="nncf").needs_calibration
