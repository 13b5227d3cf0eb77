"""Quantizers, one strategy per module, and the choice of one for a variant.

- ``ort_static``: ONNX Runtime static INT8, a Q/DQ layout ONNX Runtime's CPU / OpenVINO providers fuse.
- ``modelopt``: NVIDIA ModelOpt ONNX PTQ, INT8 / FP8 in TensorRT's Q/DQ layout.
- ``nncf``: NNCF post-training INT8 (Ultralytics' OpenVINO int8 recipe), uint8 activations for OpenVINO's runtime.
- ``unsigned``: int8 symmetric activation Q/DQ -> uint8 over the calibrated range (ModelOpt's INT8 for OpenVINO).
- ``fp16``: FP16 conversion with FP32 inputs / outputs and decode (for GPUs).
- ``brevitas``: Brevitas W8 / W4 weights with int8 or float activations, from the PyTorch model (QCDQ ONNX).
- ``float_scope``: :class:`FloatScope`, what stays float, meaning the same in every quantizer.
- ``registry``: config type -> quantizer (``quantizer_for(ModelOptConfig.fp8())``), each module registering its own.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import TYPE_CHECKING

from yoloquant.config import Backend, CalibMethod, Precision, parse_enum
from yoloquant.errors import ConfigError
from yoloquant.vocabulary import renamed_keywords

if TYPE_CHECKING:
    from collections.abc import Callable

    from yoloquant.protocols import Quantizer, QuantizerConfig
    from yoloquant.quantize.float_scope import FloatScope

    _ConfigMaker = Callable[[Precision, Backend, CalibMethod | None, FloatScope | None], QuantizerConfig]

__all__ = ["BREVITAS_PRECISIONS", "QuantizerName", "make_quantizer"]

BREVITAS_PRECISIONS = (Precision.W8A16, Precision.W8A8, Precision.W4A16, Precision.W4A8)


class QuantizerName(StrEnum):
    """The quantizers yoloquant ships."""

    ORT = "ort"
    MODELOPT = "modelopt"
    FP16 = "fp16"
    BREVITAS = "brevitas"
    NNCF = "nncf"


def default_quantizer_name(precision: Precision, backend: Backend) -> QuantizerName:
    """FP16 conversion for fp16; Brevitas for w8a16 / w8a8 / w4a16 / w4a8; ModelOpt for FP8 and TensorRT;
    ONNX Runtime's static INT8 otherwise."""
    if precision in BREVITAS_PRECISIONS:
        return QuantizerName.BREVITAS
    if precision is Precision.FP16:
        return QuantizerName.FP16
    if precision is Precision.FP8 or backend is Backend.TENSORRT:
        return QuantizerName.MODELOPT
    return QuantizerName.ORT


@renamed_keywords()
def make_quantizer(
    precision: Precision,
    backend: Backend,
    *,
    quantizer: str | QuantizerName | None = None,
    calibration_method: CalibMethod | None = None,
    keep_float: str | FloatScope | None = None,
) -> Quantizer:
    """The quantizer for a precision on a backend, with the user's calibration method and float scope.

    The named quantizer's config is built for the backend, then the registry builds its quantizer
    (:func:`yoloquant.quantize.registry.quantizer_for`).

    Example:
        >>> make_quantizer(Precision.INT8, Backend.ORT_CPU).name
        'ort-static'
    """
    from yoloquant.quantize.float_scope import FloatScope
    from yoloquant.quantize.registry import quantizer_for

    scope = FloatScope.parse(keep_float) if keep_float is not None else None
    name = parse_enum(QuantizerName, quantizer, option="quantizer") if quantizer else None
    name = name or default_quantizer_name(precision, backend)
    _check_maker(precision, name)
    return quantizer_for(_CONFIGS[name](precision, backend, calibration_method, scope))


def _check_maker(precision: Precision, name: QuantizerName) -> None:
    """FP16 is made by the fp16 converter and the ``w*a*`` precisions by Brevitas, each by nothing else."""
    if precision is Precision.FP16 and name is not QuantizerName.FP16:
        msg = f"fp16 variants are made by the fp16 converter, not {name.value!r}; drop quantizer="
        raise ConfigError(msg)
    if precision is Precision.FP16:
        return
    if (name is QuantizerName.BREVITAS) != (precision in BREVITAS_PRECISIONS):
        made = ", ".join(p.value for p in BREVITAS_PRECISIONS)
        msg = f"Brevitas makes {made} (and only Brevitas does); got precision {precision.value!r} with {name.value!r}"
        raise ConfigError(msg)


def _fp16(
    precision: Precision, backend: Backend, calibration: CalibMethod | None, keep: FloatScope | None
) -> QuantizerConfig:
    from yoloquant.quantize.fp16 import Fp16Config

    del backend  # the converter needs no calibration
    if precision is not Precision.FP16:
        msg = f"the fp16 converter makes fp16 only, not {precision}; drop quantizer='fp16'"
        raise ConfigError(msg)
    if calibration is not None:
        msg = f"fp16 conversion needs no calibration, so no calibration_method ({calibration.value!r}); drop it"
        raise ConfigError(msg)
    return Fp16Config() if keep is None else Fp16Config(keep_float=keep)


def _ort(
    precision: Precision, backend: Backend, calibration: CalibMethod | None, keep: FloatScope | None
) -> QuantizerConfig:
    from yoloquant.quantize.ort_static import OrtQuantConfig

    if precision is not Precision.INT8:
        hint = "; use quantizer='modelopt' for fp8" if precision is Precision.FP8 else ""
        msg = f"the ONNX Runtime quantizer makes int8 only, not {precision}{hint}"
        raise ConfigError(msg)
    # OpenVINO runs its own integer kernels and measured best with Q/DQ on Conv / Add / Concat only
    config = OrtQuantConfig.openvino() if backend is Backend.OPENVINO else OrtQuantConfig()
    if calibration is not None:
        config = dataclasses.replace(config, calibration_method=calibration)
    if keep is not None:
        config = dataclasses.replace(config, keep_float=keep)
    return config


def _modelopt(
    precision: Precision, backend: Backend, calibration: CalibMethod | None, keep: FloatScope | None
) -> QuantizerConfig:
    from yoloquant.quantize.modelopt import ModelOptConfig

    if precision is Precision.FP8:
        base = ModelOptConfig.fp8()
    elif backend is Backend.OPENVINO:  # OpenVINO mis-executes ModelOpt's signed int8 activations: uint8 rewrite
        base = ModelOptConfig.openvino()
    else:
        base = ModelOptConfig.int8()
    return dataclasses.replace(
        base,
        mode=precision,
        calibration_method=calibration or base.calibration_method,
        keep_float=keep or base.keep_float,
    )


def _nncf(
    precision: Precision, backend: Backend, calibration: CalibMethod | None, keep: FloatScope | None
) -> QuantizerConfig:
    from yoloquant.quantize.nncf import NncfConfig

    if precision is not Precision.INT8 or backend is not Backend.OPENVINO:
        msg = (
            f"NNCF makes int8 for the openvino backend here, got {precision.value!r} on {backend.value!r}; "
            "pass backend='openvino' (on the onnxruntime backend use quantizer='ort': ONNX Runtime's CPU "
            "provider runs NNCF's layout slower than FP32)"
        )
        raise ConfigError(msg)
    if calibration is not None:
        msg = (
            f"NNCF chooses its own activation ranges (its preset), not {calibration.value!r}; drop calibration_method="
        )
        raise ConfigError(msg)
    return NncfConfig() if keep is None else NncfConfig(keep_float=keep)


def _brevitas(
    precision: Precision, backend: Backend, calibration: CalibMethod | None, keep: FloatScope | None
) -> QuantizerConfig:
    from yoloquant.quantize.brevitas import ActScale, BrevitasConfig
    from yoloquant.quantize.brevitas.config import for_precision

    changes: dict[str, object] = {}
    if backend is Backend.TENSORRT:  # symmetric int8 only: TensorRT rejects zero points
        changes |= {"act_zero_point": False, "weight_zero_point": False, "act_scale": ActScale.MSE}
    if calibration is not None:
        if calibration is not CalibMethod.PERCENTILE:
            msg = (
                f"Brevitas picks activation scales by mse (default) or percentile, not {calibration.value!r}; "
                "pass calibration_method='percentile' or quantizer=BrevitasQuantizer(BrevitasConfig(act_scale=...))"
            )
            raise ConfigError(msg)
        changes["act_scale"] = ActScale.PERCENTILE
    if keep is not None:
        changes["keep_float"] = keep
    return for_precision(BrevitasConfig, precision, changes)


# Each named quantizer's config for a precision on a backend; the registry turns it into the quantizer.
_CONFIGS: dict[QuantizerName, _ConfigMaker] = {
    QuantizerName.ORT: _ort,
    QuantizerName.MODELOPT: _modelopt,
    QuantizerName.FP16: _fp16,
    QuantizerName.BREVITAS: _brevitas,
    QuantizerName.NNCF: _nncf,
}
