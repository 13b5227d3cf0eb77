"""The sensitivity proxy: candidate models run on a few calibration images, their outputs compared with FP32's.

A DFL head's boxes and class scores are compared separately (:func:`split_dfl`). Plain data (numpy arrays and
the model record), so an executor can ship it to the workers that measure the groups.
"""

from __future__ import annotations

import numpy as np

from yoloquant.artifacts import OnnxModel
from yoloquant.config import Backend, HeadType
from yoloquant.data.letterbox import normalize_pixels
from yoloquant.decide.metrics import output_errors

__all__ = ["Proxy", "split_dfl"]


class Proxy:
    """Runs candidate models on the proxy images and compares with FP32."""

    def __init__(self, model: OnnxModel, images: np.ndarray) -> None:
        self.model = model
        self.batches = [normalize_pixels(images[i : i + 1]) for i in range(len(images))]
        self.reference = self.outputs(model)
        self.signal = np.stack(
            [_per_image(np.asarray(r, np.float64) ** 2) for r in self.reference]
        )  # [outputs, images]

    def errors(self, model: OnnxModel) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return self.errors_and_noise(model)[:2]

    def errors_and_noise(self, model: OnnxModel) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
        """Per-output SQNR and cosine, and ``[outputs, images]`` squared error per image."""
        outputs = self.outputs(model)
        sqnr, cos = output_errors(self.reference, outputs)
        noise = [_per_image((r.astype(np.float64) - o) ** 2) for r, o in zip(self.reference, outputs, strict=True)]
        return sqnr, cos, np.stack(noise)

    def outputs(self, model: OnnxModel) -> list[np.ndarray]:
        from yoloquant.backends import build_engine

        with build_engine(model, Backend.ORT_CPU) as engine:  # the proxy compares ORT CPU outputs
            runs = [engine.infer(b) for b in self.batches]
        merged = [np.concatenate([r[i] for r in runs]) for i in range(len(runs[0]))]
        return split_dfl(merged, self.model)


def _per_image(x: np.ndarray) -> np.ndarray:
    """Sum over everything but the first (image) axis."""
    out: np.ndarray = np.asarray(x, np.float64).reshape(len(x), -1).sum(axis=1)
    return out


def split_dfl(outputs: list[np.ndarray], model: OnnxModel) -> list[np.ndarray]:
    """A DFL head's ``[B, 4 + nc, anchors]`` as boxes and class scores, compared separately.

    Box pixels (0-640) dwarf class scores (0-1): one SQNR over both would hide a ruined score map.
    """
    first = outputs[0]
    if model.info.head is HeadType.DFL and first.ndim == 3 and first.shape[1] == 4 + model.info.num_classes:
        return [first[:, :4], first[:, 4:], *outputs[1:]]
    return outputs
