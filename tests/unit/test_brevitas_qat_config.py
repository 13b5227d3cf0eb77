"""QatConfig validation and JSON round trip (no torch needed)."""

from __future__ import annotations

import json

import pytest

from yoloquant.errors import ConfigError
from yoloquant.quantize.brevitas.train import Optimizer, QatConfig


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "steps and batch_size must be >= 1"),
        ({"batch_size": 0}, "steps and batch_size must be >= 1"),
        ({"lr": 0.0}, "lr must be a positive finite number"),
        ({"lr": float("nan")}, "lr must be a positive finite number"),
        ({"imgsz": 300}, "multiple of 32"),
        ({"device": "gpu0"}, "device must be 'cpu', 'cuda' or 'cuda:N'"),
        ({"optimizer": "lion"}, "unknown optimizer 'lion'; choose one of: adamw, sgd"),
        ({"trainable": "convs"}, "unknown trainable 'convs'; choose one of: all, norm"),
        ({"labels": False}, "labels=False.*distill > 0"),
    ],
)
def test_bad_options_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QatConfig(**changes)  # type: ignore[arg-type]


def test_round_trips_through_json() -> None:
    config = QatConfig(steps=50, optimizer="SGD", device="cuda:1")  # type: ignore[arg-type]
    assert config.optimizer is Optimizer.SGD
    assert QatConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
