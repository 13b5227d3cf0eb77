"""Quantizers: one strategy per module. ``ort_static``: ONNX Runtime static INT8 (CPU / OpenVINO layout)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from yoloquant.config import Backend, CalibMethod, Precision
from yoloquant.errors import ConfigError

if TYPE_CHECKING:
    from yoloquant.protocols import Quantizer

__all__ = ["default_quantizer"]


def default_quantizer(precision: Precision, backend: Backend, calibration: CalibMethod | None = None) -> Quantizer:
    """The quantizer yoloquant picks for a precision on a backend."""
    from yoloquant.quantize.ort_static import OrtQuantConfig, OrtStaticQuantizer

    if precision is Precision.INT8 and backend in (Backend.ONNXRUNTIME, Backend.OPENVINO):
        # OpenVINO runs its own integer kernels and measured best with Q/DQ on Conv / Add / Concat only
        config = OrtQuantConfig.openvino() if backend is Backend.OPENVINO else OrtQuantConfig()
        if calibration is not None:
            config = dataclasses.replace(config, calibration=calibration)
        return OrtStaticQuantizer(config)
    msg = (
        f"no quantizer for {precision} on {backend} yet: this release quantizes int8 for onnxruntime / openvino "
        "(ModelOpt fp8 and TensorRT are planned)"
    )
    raise ConfigError(msg)
