"""The pipeline's seams: one structural Protocol per strategy, one verb each.

Implementations do not inherit from these; anything with the right method fits.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np

from yoloquant.artifacts import CalibrationSet, ModelInfo, OnnxModel, QdqModel

__all__ = ["Calibrator", "Engine", "EngineBuilder", "Exporter", "Quantizer", "QuantizerConfig"]


@runtime_checkable
class Exporter(Protocol):
    """Turns a model source (``.pt``, ``.onnx``) into an ONNX model in ``out_dir``."""

    def export(self, source: Path, out_dir: Path) -> OnnxModel: ...


@runtime_checkable
class Calibrator(Protocol):
    """Collects the calibration images a quantizer needs."""

    def calibrate(self, info: ModelInfo) -> CalibrationSet: ...


@runtime_checkable
class QuantizerConfig(Protocol):
    """A quantizer's options: frozen data that round-trips through ``to_dict()`` (stored in the report)."""

    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class Quantizer(Protocol):
    """Quantizes a float ONNX model with calibration data, writing the result into ``out_dir``.

    ``needs_calibration`` is False for a quantizer that ignores ``data`` (FP16 conversion): the run then
    gathers no calibration images for it. ``with_progress`` returns the quantizer with its own progress
    output on or off (itself when it has none), so a quiet run never rewrites a quantizer's fields.
    """

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> QuantizerConfig: ...

    @property
    def needs_calibration(self) -> bool: ...

    def with_progress(self, enabled: bool) -> Self: ...

    def quantize(self, model: OnnxModel, data: CalibrationSet, out_dir: Path) -> QdqModel: ...


@runtime_checkable
class Engine(Protocol):
    """A loaded, runnable model. Owns its resources; ``close()`` is idempotent."""

    info: ModelInfo

    @property
    def providers(self) -> list[str]: ...

    def infer(self, batch: np.ndarray) -> list[np.ndarray]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


@runtime_checkable
class EngineBuilder(Protocol):
    """Builds an :class:`Engine` from an ONNX model."""

    @property
    def name(self) -> str: ...

    def build(self, model: OnnxModel) -> Engine: ...
