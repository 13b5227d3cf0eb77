"""Test helpers for users of yoloquant: a fake :class:`Engine` and a fake :class:`Quantizer`, driven by functions."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from yoloquant._lifecycle import ClosesOnExit
from yoloquant.artifacts import CalibrationSet, ModelInfo, OnnxModel, QdqModel
from yoloquant.config import Precision
from yoloquant.errors import InferenceError

__all__ = ["CallbackEngine", "CallbackQuantizer", "CallbackQuantizerConfig"]


class CallbackEngine(ClosesOnExit):
    """An Engine whose ``infer`` calls ``fn``: for testing code that takes an Engine.

    Example:
        >>> info = ModelInfo(names={0: "person"})
        >>> engine = CallbackEngine(lambda x: [np.zeros((x.shape[0], 5, 8400), np.float32)], info)
        >>> engine.infer(np.zeros((1, 3, 640, 640), np.float32))[0].shape
        (1, 5, 8400)
    """

    def __init__(self, fn: Callable[[np.ndarray], list[np.ndarray]], info: ModelInfo) -> None:
        self.info = info
        self.calls = 0
        self._fn: Callable[[np.ndarray], list[np.ndarray]] | None = fn

    @property
    def providers(self) -> list[str]:
        return ["CallbackEngine"]

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        if self._fn is None:
            msg = "engine is closed"
            raise InferenceError(msg)
        self.calls += 1
        return self._fn(batch)

    def close(self) -> None:
        self._fn = None


@dataclass(frozen=True)
class CallbackQuantizerConfig:
    """The (empty) options of a :class:`CallbackQuantizer`, as a report records them."""

    name: str = "callback"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name}


class CallbackQuantizer:
    """A Quantizer whose ``quantize`` calls ``fn(model, data, out_dir)``: for testing code that takes a Quantizer.

    Without ``fn`` it copies the float model into ``out_dir`` as ``<stem>-callback.onnx``. ``images`` records
    how many calibration images each call got, ``progress`` each ``with_progress`` call.

    Example:
        >>> q = CallbackQuantizer(needs_calibration=False)
        >>> q.name, q.needs_calibration, q.with_progress(False) is q, q.progress
        ('callback', False, True, [False])
    """

    def __init__(
        self,
        fn: Callable[[OnnxModel, CalibrationSet, Path], QdqModel] | None = None,
        *,
        name: str = "callback",
        needs_calibration: bool = True,
    ) -> None:
        self.name = name
        self.needs_calibration = needs_calibration
        self.config = CallbackQuantizerConfig(name=name)
        self.images: list[int] = []
        self.progress: list[bool] = []
        self._fn = fn

    def with_progress(self, enabled: bool) -> Self:
        self.progress.append(enabled)
        return self

    def quantize(self, model: OnnxModel, data: CalibrationSet, out_dir: Path) -> QdqModel:
        self.images.append(len(data))
        if self._fn is not None:
            return self._fn(model, data, out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{model.path.stem.removesuffix('-fp32')}-callback.onnx"
        shutil.copyfile(model.path, path)
        return QdqModel(path=path, info=model.info, precision=Precision.INT8, source=model, quantizer=self.name)
