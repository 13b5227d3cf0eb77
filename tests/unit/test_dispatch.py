"""Dispatch by type: a config object builds its quantizer, a backend its engine, through small registries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from yoloquant import ConfigError, MissingDependencyError, QuantPipeline
from yoloquant.backends import check_backend
from yoloquant.backends.registry import runtime_for
from yoloquant.config import Backend, Precision
from yoloquant.quantize.brevitas import BrevitasConfig, BrevitasQuantizer
from yoloquant.quantize.fp16 import Fp16Config, Fp16Converter
from yoloquant.quantize.modelopt import ModelOptConfig, ModelOptQuantizer
from yoloquant.quantize.nncf import NncfConfig, NncfQuantizer
from yoloquant.quantize.ort_static import OrtQuantConfig, OrtStaticQuantizer
from yoloquant.quantize.registry import accepted_configs, precision_for, quantizer_for

SHIPPED = [
    (OrtQuantConfig(), OrtStaticQuantizer, Precision.INT8),
    (ModelOptConfig.int8(), ModelOptQuantizer, Precision.INT8),
    (ModelOptConfig.fp8(), ModelOptQuantizer, Precision.FP8),
    (NncfConfig(), NncfQuantizer, Precision.INT8),
    (BrevitasConfig.w4a16(), BrevitasQuantizer, Precision.W4A16),
    (BrevitasConfig.w8a8(), BrevitasQuantizer, Precision.W8A8),
    (Fp16Config(), Fp16Converter, Precision.FP16),
]


@pytest.mark.parametrize(("config", "kind", "precision"), SHIPPED, ids=lambda x: type(x).__name__)
def test_every_shipped_config_type_resolves_to_its_quantizer(config: Any, kind: type, precision: Precision) -> None:
    quantizer = quantizer_for(config)
    assert type(quantizer) is kind
    assert quantizer.config == config
    assert precision_for(config) is precision
    assert quantizer.needs_calibration is (precision is not Precision.FP16)


def test_quantize_with_a_modelopt_fp8_config_plans_an_fp8_modelopt_variant(yolov8n_pt: Path) -> None:
    pipe = QuantPipeline.from_ultralytics(yolov8n_pt).calibrate("images").quantize(ModelOptConfig.fp8())
    v = pipe.variants[1]
    assert (v.name, v.precision, v.backend) == ("fp8", Precision.FP8, Backend.ORT_CPU)
    assert isinstance(v.quantizer, ModelOptQuantizer) and v.quantizer.config == ModelOptConfig.fp8()
    assert v.needs_calibration
    # the same plan as the precision string makes: same name, same quantizer, same report entry
    by_name = QuantPipeline.from_ultralytics(yolov8n_pt).calibrate("images").quantize("fp8")
    assert pipe.to_dict() == by_name.to_dict()


@pytest.mark.parametrize(
    ("config", "backend", "args"),
    [
        (ModelOptConfig.int8(), "ort-cpu", {"precision": "int8", "quantizer": "modelopt"}),
        (NncfConfig(), "openvino", {"precision": "int8", "quantizer": "nncf"}),
        (OrtQuantConfig(), "ort-cpu", {"precision": "int8"}),
        (Fp16Config(), "ort-cuda", {"precision": "fp16"}),
        (BrevitasConfig.w8a16(), "ort-cpu", {"precision": "w8a16"}),
    ],
    ids=lambda x: type(x).__name__,
)
def test_a_config_variant_is_named_and_recorded_as_the_equivalent_string_call(
    yolov8n_pt: Path, config: Any, backend: str, args: dict[str, str]
) -> None:
    base = QuantPipeline.from_ultralytics(yolov8n_pt)
    by_config = base.quantize(config, backend=backend)
    by_name = base.quantize(backend=backend, **args)  # type: ignore[arg-type]
    assert by_config.variants[1].name == by_name.variants[1].name
    assert by_config.to_dict()["variants"] == by_name.to_dict()["variants"]


def test_an_fp16_config_variant_never_calibrates(yolov8n_pt: Path) -> None:
    pipe = QuantPipeline.from_ultralytics(yolov8n_pt).quantize(Fp16Config())
    assert pipe.variants[1].precision is Precision.FP16
    assert not pipe.variants[1].needs_calibration


def test_an_unknown_config_type_is_a_config_error_naming_it_and_the_accepted_ones(yolov8n_pt: Path) -> None:
    @dataclass(frozen=True)
    class TfliteConfig:
        def to_dict(self) -> dict[str, Any]:
            return {}

    with pytest.raises(ConfigError, match="TfliteConfig") as err:
        QuantPipeline.from_ultralytics(yolov8n_pt).quantize(TfliteConfig())
    for name in ("OrtQuantConfig", "ModelOptConfig", "NncfConfig", "BrevitasConfig", "Fp16Config"):
        assert name in str(err.value)
        assert name in accepted_configs()


def test_a_config_takes_no_separate_options_and_quantizer_takes_no_config(yolov8n_pt: Path) -> None:
    base = QuantPipeline.from_ultralytics(yolov8n_pt)
    with pytest.raises(ConfigError, match="drop quantizer=, calibration_method= and keep_float="):
        base.quantize(ModelOptConfig.int8(), keep_float="nothing")
    with pytest.raises(ConfigError, match=r"pass a config first: quantize\(ModelOptConfig"):
        base.quantize("int8", quantizer=ModelOptConfig.int8())  # type: ignore[arg-type]


def test_a_quantizer_object_missing_protocol_members_is_a_config_error(yolov8n_pt: Path) -> None:
    class OldQuantizer:
        name = "old"

        def quantize(self, *args: object) -> None: ...

    with pytest.raises(ConfigError, match=r"OldQuantizer lacks the Quantizer members \['config', 'needs_calibration'"):
        QuantPipeline.from_ultralytics(yolov8n_pt).quantize("int8", quantizer=OldQuantizer())  # type: ignore[arg-type]


def test_a_budget_takes_an_ort_config_and_no_other(yolov8n_pt: Path) -> None:
    base = QuantPipeline.from_ultralytics(yolov8n_pt)
    assert base.quantize(OrtQuantConfig(), max_map_drop=0.3).variants[1].name == "int8-budget0.3"
    with pytest.raises(ConfigError, match="max_map_drop needs the ONNX Runtime INT8 quantizer"):
        base.quantize(ModelOptConfig.int8(), max_map_drop=0.3)


def test_a_config_variant_without_calibration_data_is_refused_before_any_work(yolov8n_pt: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\['int8-modelopt'\] need calibration data"):
        QuantPipeline.from_ultralytics(yolov8n_pt).quantize(ModelOptConfig.int8()).run(tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("backend", list(Backend))
def test_every_backend_registers_its_runtime(backend: Backend) -> None:
    assert runtime_for(backend).backend is backend


def test_the_tensorrt_runtime_is_registered_and_says_what_to_install() -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="TensorRT"):
            check_backend(Backend.TENSORRT)
    else:
        check_backend(Backend.TENSORRT)


def test_the_testing_double_fits_the_quantizer_protocol(yolov8n_pt: Path, tmp_path: Path) -> None:
    from yoloquant.protocols import Quantizer
    from yoloquant.testing import CallbackQuantizer

    converter = CallbackQuantizer(needs_calibration=False)
    assert isinstance(converter, Quantizer)
    pipe = QuantPipeline.from_ultralytics(yolov8n_pt).quantize("fp16", quantizer=converter)
    assert pipe.variants[1].name == "fp16-callback"
    assert not pipe.variants[1].needs_calibration
    assert pipe.to_dict()["variants"][1]["quantizer"] == {"name": "callback", "config": {"name": "callback"}}
