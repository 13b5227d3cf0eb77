"""``TorchPredictor``'s scheduling, with its GPU slots replaced by recording fakes (the GPU work is tests/gpu's):
results in frame order, at most ``depth`` batches in flight, a short last batch, bad frames named."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from yoloquant.artifacts import ModelInfo
from yoloquant.backends.torch import predictor as predictor_module
from yoloquant.backends.torch.predictor import TorchPredictor
from yoloquant.detections import Detections
from yoloquant.errors import ConfigError, InferenceError


class _FakeSlot:
    """Records submit / collect; a frame's "detection" is its first pixel value, so order can be checked."""

    in_flight = 0
    most_in_flight = 0

    def __init__(self, engine: Any, batch_size: int, spec: Any) -> None:
        self.batch_size, self.frames = batch_size, []

    def submit(self, frames: list[np.ndarray]) -> None:
        assert not self.frames, "a slot was submitted to before it was collected"
        assert len(frames) <= self.batch_size
        self.frames = frames
        _FakeSlot.in_flight += 1
        _FakeSlot.most_in_flight = max(_FakeSlot.most_in_flight, _FakeSlot.in_flight)

    def collect(self) -> list[Detections]:
        out = [Detections(np.zeros((1, 4), np.float32), np.array([f[0, 0, 0] / 255], np.float32),
                          np.array([0])) for f in self.frames]  # fmt: skip
        self.frames = []
        _FakeSlot.in_flight -= 1
        return out


@pytest.fixture
def predictor(monkeypatch: pytest.MonkeyPatch) -> TorchPredictor:
    monkeypatch.setattr(predictor_module, "_Slot", _FakeSlot)
    _FakeSlot.in_flight = _FakeSlot.most_in_flight = 0
    engine = type("E", (), {"info": ModelInfo(names={0: "person"})})()
    return TorchPredictor(engine, depth=2)  # type: ignore[arg-type]


def _frames(n: int) -> list[np.ndarray]:
    return [np.full((4, 6, 3), i, np.uint8) for i in range(n)]


@pytest.mark.parametrize(("n", "batch_size"), [(17, 4), (8, 4), (3, 1), (1, 16), (0, 2)])
def test_results_come_in_frame_order_with_at_most_depth_batches_in_flight(
    predictor: TorchPredictor, n: int, batch_size: int
) -> None:
    got = predictor.predict(_frames(n), batch_size=batch_size)
    assert [round(float(d.scores[0]) * 255) for d in got] == list(range(n))
    assert _FakeSlot.most_in_flight <= 2 and _FakeSlot.in_flight == 0


def test_stream_runs_ahead_by_depth_batches_only(predictor: TorchPredictor) -> None:
    seen: list[int] = []

    def source() -> Any:
        for f in _frames(12):
            seen.append(int(f[0, 0, 0]))
            yield f

    first = next(iter(predictor.stream(source(), batch_size=2)))
    assert round(float(first.scores[0]) * 255) == 0
    assert len(seen) <= 2 * 2 + 2  # depth batches submitted, plus the one being gathered


def test_bad_frames_and_settings_are_named(predictor: TorchPredictor) -> None:
    with pytest.raises(InferenceError, match=r"frame 2 is float64 \(4, 6, 3\)"):
        predictor.predict([*_frames(2), np.zeros((4, 6, 3))])
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        predictor.predict(_frames(2), batch_size=0)
    engine = type("E", (), {"info": ModelInfo(names={0: "person"})})()
    with pytest.raises(ConfigError, match="depth must be >= 1"):
        TorchPredictor(engine, depth=0)  # type: ignore[arg-type]
