"""One vocabulary: the check over every public keyword and flag, the old spellings, one meaning of keep_float."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from yoloquant import ConfigError, QuantPipeline
from yoloquant.cli import main
from yoloquant.config import Backend, Precision
from yoloquant.quantize import make_quantizer
from yoloquant.quantize.float_scope import FloatScope
from yoloquant.quantize.fp16 import Fp16Config
from yoloquant.quantize.modelopt import ModelOptConfig
from yoloquant.quantize.nncf import NncfConfig
from yoloquant.quantize.ort_static import OrtQuantConfig
from yoloquant.tools import vocabulary as tool
from yoloquant.vocabulary import CONCEPTS, RENAMED


def test_the_public_surface_has_one_spelling_per_concept() -> None:
    lines: list[str] = []
    assert tool.main([], out=lines.append) == 0, "\n".join(lines)
    assert lines[-1] == "vocabulary: ok"
    found = tool.surface()
    assert {"keep_float", "calibration_method", "backend", "granularity"} <= set(found.keywords)
    assert {"--keep-float", "--calibration-method", "--backend", "--granularity"} <= set(found.flags)


def test_the_check_fails_on_a_second_spelling() -> None:
    found = tool.surface()
    bad = tool.Surface(
        keywords={**found.keywords, "keep": ["somewhere:f"]},
        flags={**found.flags, "--budget-granularity": ["run"]},
        values={"backend": ["onnxruntime"]},
    )
    problems = tool.problems(bad)
    assert any("keep= (somewhere:f) is an old spelling of keep_float=" in p for p in problems)
    assert any("--budget-granularity" in p and "--granularity" in p for p in problems)
    assert any("'onnxruntime'" in p for p in problems)


def test_every_concept_is_on_the_surface() -> None:
    found = tool.surface()
    names = set(found.keywords) | {f.removeprefix("--").replace("-", "_") for f in found.flags} | {"format"}
    assert {c.name for c in CONCEPTS} <= names


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: QuantPipeline.from_onnx("m.onnx").quantize("int8", keep="head"), "keep= is now keep_float="),
        (
            lambda: QuantPipeline.from_onnx("m.onnx").quantize("int8", calibration="minmax"),
            "calibration= is now calibration_method=",
        ),
        (lambda: OrtQuantConfig(target="openvino"), r"OrtQuantConfig\(\): target= is now backend="),
        (lambda: OrtQuantConfig(exclude=("x",)), "exclude= is now keep_float="),
        (lambda: OrtQuantConfig(keep_head_convs_float=True), "keep_head_convs_float= is now keep_float="),
        (lambda: ModelOptConfig(exclude_op_types=("Resize",)), "exclude_op_types= is now keep_float="),
        (lambda: NncfConfig(keep="head"), "keep= is now keep_float="),
        (lambda: Fp16Config(keep_fp32_ops=("Softmax",)), "keep_fp32_ops= is now keep_float="),
        (lambda: OrtQuantConfig.from_dict({"calibration": "minmax"}), "calibration is now calibration_method"),
        (lambda: make_quantizer(Precision.INT8, Backend.ORT_CPU, keep="head"), "keep= is now keep_float="),
    ],
)
def test_old_keywords_raise_a_config_error_naming_the_new_one(make: Any, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        make()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--model", "m.onnx", "--out", "o", "--precisions", "fp32"], "--precisions is now --precision"),
        (["run", "--model", "m.onnx", "--out", "o", "--keep", "head"], "--keep is now --keep-float"),
        (["run", "--model", "m.onnx", "--out", "o", "--budget-granularity", "conv"], "is now --granularity"),
        (["sweep", "--model", "m", "--calib", "c", "--eval", "e", "--out", "o", "--keeps", "head"], "--keep-float"),
        (
            ["sweep", "--model", "m", "--calib", "c", "--eval", "e", "--out", "o", "--calib-counts", "4"],
            "--calib-images",
        ),
        (
            ["sweep", "--model", "m", "--calib", "c", "--eval", "e", "--out", "o", "--max-map-drop", "1"],
            "--max-map-drop is now --recommend-max-drop",
        ),
        (["sensitivity", "--model", "m", "--calib", "c", "--eval", "e", "--out", "o", "--calibration", "x"], "method"),
    ],
)
def test_old_flags_name_the_new_one(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_keep_float_means_the_same_in_every_quantizer(yolov8n_onnx: Path) -> None:
    from yoloquant.quantize.modelopt import ModelOptQuantizer
    from yoloquant.quantize.nncf import NncfQuantizer
    from yoloquant.quantize.ort_static import OrtStaticQuantizer

    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(yolov8n_onnx))
    for preset in ("decode", "head", "head+first"):
        ort = OrtStaticQuantizer(OrtQuantConfig(keep_float=preset)).float_node_names(model)
        mo = ModelOptQuantizer(ModelOptConfig(keep_float=preset)).float_node_names(model)
        nncf = NncfQuantizer(NncfConfig(keep_float=preset)).ignored_names(model)
        assert ort == mo == nncf and ort, preset
    assert OrtStaticQuantizer(OrtQuantConfig(keep_float="nothing")).float_node_names(model) == ()
    assert ModelOptQuantizer(ModelOptConfig(keep_float="nothing")).float_node_names(model) == ()


def test_the_defaults_keep_what_each_quantizer_measured_best() -> None:
    assert OrtQuantConfig().keep_float == NncfConfig().keep_float == FloatScope.decode()
    assert ModelOptConfig().keep_float == FloatScope.head_and_first()
    assert Fp16Config().keep_float == FloatScope(op_types=("Softmax",))
    for precision in (Precision.INT8, Precision.FP8):
        made = make_quantizer(precision, Backend.ORT_CPU, keep_float="head")
        assert made.config.keep_float == FloatScope.head()  # type: ignore[attr-defined]


def test_every_old_spelling_maps_to_a_registered_concept() -> None:
    names = {c.name for c in CONCEPTS}
    assert set(RENAMED.values()) <= names
    assert not set(RENAMED) & names  # no concept renamed to itself
