"""Test helpers for users of yoloquant: a fake :class:`Engine` driven by a function."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from yoloquant._lifecycle import ClosesOnExit
from yoloquant.artifacts import ModelInfo
from yoloquant.errors import InferenceError

__all__ = ["CallbackEngine"]


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
