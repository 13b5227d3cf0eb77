"""What the Brevitas quantizer does: bit widths, which layers it spares, how it recovers accuracy.

``W<w>A<a>``: ``w``-bit per-channel weights; ``A8`` = 8-bit conv inputs (per tensor), ``A16`` = float
activations (FP32 on ONNX Runtime CPU, FP16 on a GPU). Symmetric by default (what TensorRT runs); zero
points (asymmetric) are an option for ONNX Runtime / OpenVINO on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NoReturn, Self, TypeVar

from yoloquant.config import Precision, _Serializable, parse_enum
from yoloquant.errors import ConfigError
from yoloquant.quantize.float_scope import FloatScope
from yoloquant.vocabulary import renamed_keywords

__all__ = ["ActScale", "BrevitasConfig", "Protect", "Rounding", "WeightScale", "for_precision"]

_C = TypeVar("_C", bound="BrevitasConfig")


class WeightScale(StrEnum):
    """How a weight channel's scale is chosen."""

    ABSMAX = "absmax"  # largest |w| maps to the largest integer: no clipping
    MSE = "mse"  # the scale with the least squared error: clips outliers, better at 4 bits


class ActScale(StrEnum):
    """How an activation tensor's scale is chosen from the calibration images."""

    PERCENTILE = "percentile"  # Brevitas' default: 99.999th percentile of |x|
    MSE = "mse"  # the scale with the least squared error on the calibration activations


class Rounding(StrEnum):
    """How weights are rounded onto their integer grid."""

    NEAREST = "nearest"  # round to nearest: enough at 8 bits
    GPTQ = "gptq"  # GPTQ: each conv's rounding error is compensated by its not-yet-rounded weights
    GPFQ = "gpfq"  # GPFQ: like GPTQ, against the float model's activations (error does not accumulate)
    QRONOS = "qronos"  # Qronos: GPFQ that also corrects the error of the quantized inputs
    ADAROUND = "adaround"  # AdaRound: up / down learned per weight by block reconstruction (needs a GPU)


class Protect(StrEnum):
    """Layers that get 8-bit weights instead of the low bit width (meaningful for 4-bit weights)."""

    NONE = "none"
    HEAD = "head"  # the head's box / class output convs
    HEAD_AND_FIRST = "head+first"  # ... and the stem conv that reads the image
    EARLY = "early"  # the head output convs and the backbone up to stride 8 (model.0-4 in YOLOv8 / 11)
    EARLY_AND_HEAD = "early+detect"  # ... and every conv of the Detect head (its box and class branches)


_PRESETS: dict[Precision, tuple[int, int | None]] = {
    Precision.W8A16: (8, None),
    Precision.W8A8: (8, 8),
    Precision.W4A16: (4, None),
    Precision.W4A8: (4, 8),
}


@renamed_keywords()
@dataclass(frozen=True, kw_only=True)
class BrevitasConfig(_Serializable):
    """Options of :class:`~yoloquant.quantize.brevitas.BrevitasQuantizer`.

    Attributes:
        weight_bits: 8 or 4; per output channel, symmetric, narrow range.
        act_bits: 8 for int8 conv inputs, None for float activations.
        keep_float: What stays float (:class:`~yoloquant.quantize.float_scope.FloatScope` or a preset name):
            ``decode`` (default), ``head`` (and the box / class output convs), ``head+first`` (and the
            stem conv). The decode's DFL projection always stays float; node / op-type patterns are
            ONNX names, which the PyTorch model Brevitas quantizes does not have.
        protect: Layers quantized at 8 bits when ``weight_bits`` is 4 (see :class:`Protect`).
        weight_scale / act_scale: How scales are chosen (:class:`WeightScale`, :class:`ActScale`).
        weight_zero_point: Asymmetric weights: each channel's grid spans [min, max] with a zero point
            (16 levels at 4 bits instead of 15 around zero). Symmetric (False) is what TensorRT accepts.
        act_zero_point: Asymmetric activations: uint8 with a zero point, so a SiLU output (>= -0.28) or the
            image ([0, 1]) uses all 256 levels instead of half. ONNX Runtime and OpenVINO run it on a CPU;
            TensorRT needs symmetric int8 (False).
        rounding: How weights are rounded (:class:`Rounding`); GPTQ / GPFQ / Qronos run the calibration
            images through the model once per conv.
        bias_correction: Correct each conv's bias for the mean error its quantization causes.
        rounding_images: Calibration images the rounding uses (keep it small on the CPU).
        rounding_iters: AdaRound optimizer steps per block (8 images each).
        calibration_device: ``cpu`` or ``cuda``: where calibration and rounding run (export is on the CPU).
        opset: ONNX opset of the exported QCDQ model.

    Example:
        >>> BrevitasConfig.w4a16().weight_bits
        4
    """

    weight_bits: int = 8
    act_bits: int | None = 8
    keep_float: FloatScope = field(default_factory=FloatScope)
    protect: Protect = Protect.NONE
    weight_scale: WeightScale = WeightScale.ABSMAX
    act_scale: ActScale = ActScale.MSE
    weight_zero_point: bool = False
    act_zero_point: bool = False
    rounding: Rounding = Rounding.NEAREST
    bias_correction: bool = False
    rounding_images: int = 32
    rounding_iters: int = 1000
    calibration_device: str = "cpu"
    opset: int = 17

    def __post_init__(self) -> None:
        if self.weight_bits not in (4, 8):
            msg = f"weight_bits must be 4 or 8, got {self.weight_bits!r}"
            raise ConfigError(msg)
        if self.act_bits not in (8, None):
            msg = f"act_bits must be 8 (int8 activations) or None (float activations), got {self.act_bits!r}"
            raise ConfigError(msg)
        if self.rounding_images < 1 or self.rounding_iters < 1:
            msg = f"rounding_images and rounding_iters must be >= 1, got {self.rounding_images}, {self.rounding_iters}"
            raise ConfigError(msg)
        if self.calibration_device.split(":")[0] not in ("cpu", "cuda"):
            msg = f"calibration_device must be 'cpu', 'cuda' or 'cuda:N', got {self.calibration_device!r}"
            raise ConfigError(msg)
        if not 13 <= self.opset <= 21:
            msg = f"opset must be in 13..21 for Brevitas' QCDQ export, got {self.opset}"
            raise ConfigError(msg)
        object.__setattr__(self, "keep_float", _module_scope(FloatScope.parse(self.keep_float)))
        object.__setattr__(self, "protect", parse_enum(Protect, self.protect, option="protect"))
        object.__setattr__(self, "weight_scale", parse_enum(WeightScale, self.weight_scale, option="weight_scale"))
        object.__setattr__(self, "act_scale", parse_enum(ActScale, self.act_scale, option="act_scale"))
        object.__setattr__(self, "rounding", parse_enum(Rounding, self.rounding, option="rounding"))

    @property
    def name(self) -> str:
        """``w8a8``, ``w4a16``, ...: the precision this config makes."""
        return f"w{self.weight_bits}a{self.act_bits or 16}"

    @classmethod
    def w8a16(cls, **changes: Any) -> Self:
        """8-bit weights, float activations (docs/brevitas.md), with ``changes`` applied."""
        return for_precision(cls, Precision.W8A16, changes)

    @classmethod
    def w8a8(cls, **changes: Any) -> Self:
        """8-bit weights, uint8 activations with a zero point over the percentile range (best on CPUs).

        For TensorRT pass ``act_zero_point=False, act_scale="mse"`` (what ``make_quantizer`` does there).
        """
        return for_precision(cls, Precision.W8A8, changes)

    @classmethod
    def w4a16(cls, **changes: Any) -> Self:
        """4-bit weights (MSE scales, Qronos rounding, early layers at 8 bits), float activations."""
        return for_precision(cls, Precision.W4A16, changes)

    @classmethod
    def w4a8(cls, **changes: Any) -> Self:
        """4-bit weights as :meth:`w4a16`, int8 activations."""
        return for_precision(cls, Precision.W4A8, changes)

    @classmethod
    def preset(cls, precision: object, **changes: object) -> NoReturn:
        """Renamed: one preset style, a classmethod per preset."""
        del changes
        msg = f"BrevitasConfig.preset({precision!r}, ...) is now BrevitasConfig.{precision}(**changes)"
        raise ConfigError(msg)


def for_precision(cls: type[_C], precision: Precision | str, changes: dict[str, Any]) -> _C:
    """The measured defaults for a precision (docs/brevitas.md), with ``changes`` applied."""
    prec = parse_enum(Precision, precision, option="precision")
    if prec not in _PRESETS:
        known = ", ".join(p.value for p in _PRESETS)
        msg = f"Brevitas makes {known}, not {prec.value!r}"
        raise ConfigError(msg)
    weight_bits, act_bits = _PRESETS[prec]
    low_bit = weight_bits == 4
    base: dict[str, Any] = {
        "weight_bits": weight_bits,
        "act_bits": act_bits,
        "protect": Protect.EARLY if low_bit else Protect.NONE,
        "weight_scale": WeightScale.MSE if low_bit else WeightScale.ABSMAX,
        "rounding": Rounding.QRONOS if low_bit else Rounding.NEAREST,
    }
    if prec is Precision.W8A8:  # measured: uint8 over the percentile range -0.25 +- 0.28, symmetric MSE -0.84
        base |= {"act_zero_point": True, "act_scale": ActScale.PERCENTILE}
    return cls._from_preset(base, changes)


def _module_scope(scope: FloatScope) -> FloatScope:
    """``scope``, if Brevitas can keep it float: its decode path, head convs and stem conv, not ONNX patterns."""
    if not scope.decode_path or scope.nodes or scope.op_types or (scope.proto_fusion and not scope.proto_branch):
        msg = (
            f"Brevitas quantizes the PyTorch model's convs, whose DFL projection always stays float: keep_float "
            f"takes decode, head or head+first (or FloatScope(head_convs=..., first_conv=..., proto_branch=...); not "
            f"proto_fusion, a part of a module), got {scope!r}"
        )
        raise ConfigError(msg)
    return scope
