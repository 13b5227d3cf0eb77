from __future__ import annotations

import json

import pytest

from yoloquant.config import BenchConfig, CalibMethod, EvalConfig, ExportConfig, Precision, parse_enum
from yoloquant.errors import ConfigError


@pytest.mark.parametrize("cls", [ExportConfig, EvalConfig, BenchConfig])
def test_configs_round_trip_through_json(cls: type) -> None:
    config = cls()
    again = cls.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_eval_defaults_are_yolo_val_settings() -> None:
    config = EvalConfig()
    assert (config.conf, config.iou, config.max_det) == (0.001, 0.7, 300)


@pytest.mark.parametrize(
    ("factory", "fragment"),
    [
        (lambda: ExportConfig(imgsz=100), "multiple of 32"),
        (lambda: ExportConfig(opset=11), "opset"),
        (lambda: EvalConfig(iou=0.0), "iou"),
        (lambda: BenchConfig(batch_sizes=()), "batch_sizes"),
        (lambda: BenchConfig(iterations=1), "iterations"),
    ],
)
def test_bad_values_raise_config_error(factory, fragment: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=fragment):
        factory()


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="no option"):
        ExportConfig.from_dict({"imgsz": 640, "colour": "red"})


def test_parse_enum_accepts_strings_and_lists_choices() -> None:
    assert parse_enum(Precision, "INT8", option="precision") is Precision.INT8
    assert parse_enum(CalibMethod, CalibMethod.ENTROPY, option="calibration") is CalibMethod.ENTROPY
    with pytest.raises(ConfigError, match=r"unknown precision 'int3'; choose one of: fp32, fp16, int8, fp8"):
        parse_enum(Precision, "int3", option="precision")
