"""``Detections``: what an engine's decoded output is, per image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Detections"]


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections of one image.

    Attributes:
        boxes: float32 ``[N, 4]`` as x1, y1, x2, y2 in pixels of the image they refer to.
        scores: float32 ``[N]`` confidence.
        classes: int64 ``[N]`` class index into the model's ``names``.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))

    def __repr__(self) -> str:
        return f"Detections(n={len(self)}, max_score={float(self.scores.max()) if len(self) else 0.0:.3f})"
