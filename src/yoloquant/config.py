"""Typed, frozen configuration: enums, stage configs and presets.

Every config validates itself in ``__post_init__`` (raising :class:`ConfigError`) and round-trips
through ``to_dict()`` / ``from_dict()`` so a run can be reproduced from its report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self, TypeVar

from yoloquant.errors import ConfigError
from yoloquant.tasks import Task
from yoloquant.vocabulary import RENAMED, renamed_value

__all__ = [
    "Backend",
    "BenchConfig",
    "CalibMethod",
    "EvalConfig",
    "ExportConfig",
    "HeadType",
    "Precision",
    "parse_enum",
]


class Precision(StrEnum):
    """Numeric precision of a model variant."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    FP8 = "fp8"
    # Brevitas: <bits> weights, int8 (A8) or float (A16) activations
    W8A16 = "w8a16"
    W8A8 = "w8a8"
    W4A16 = "w4a16"
    W4A8 = "w4a8"


class Backend(StrEnum):
    """Runtime a model variant is built for and run on."""

    ORT_CPU = "ort-cpu"  # ONNX Runtime, CPU execution provider
    ORT_CUDA = "ort-cuda"  # ONNX Runtime, CUDA execution provider (onnxruntime-gpu)
    OPENVINO = "openvino"  # OpenVINO's own runtime (the `openvino` package), CPU device
    TORCH = "torch"  # the Ultralytics checkpoint compiled by PyTorch's inductor, CUDA graphs (fp32 / fp16)
    TENSORRT = "tensorrt"


class CalibMethod(StrEnum):
    """How activation ranges are chosen from calibration data."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class HeadType(StrEnum):
    """Output head of a YOLO detector."""

    DFL = "dfl"  # YOLOv8 / YOLO11: [B, 4 + nc, anchors], needs NMS
    END2END = "end2end"  # YOLOv10 / YOLO26: [B, max_det, 6], NMS-free


E = TypeVar("E", bound=StrEnum)


def parse_enum(enum: type[E], value: str | E, *, option: str) -> E:
    """Turn user input into an enum member, or raise a ConfigError listing the choices (or naming the new spelling
    of an old value: ``backend="ort-cpu"`` is now ``"ort-cpu"``)."""
    try:
        return enum(str(value).lower())
    except ValueError:
        new = renamed_value(option, value) if enum is Backend else None
        if new is not None:
            msg = f"{option} {value!r} is now {new!r} (docs/concepts.md)"
            raise ConfigError(msg) from None
        choices = ", ".join(m.value for m in enum)
        msg = f"unknown {option} {value!r}; choose one of: {choices}"
        raise ConfigError(msg) from None


def check_int(value: object, *, option: str, minimum: int = 0, none_ok: bool = False, where: str = "") -> None:
    """Raise ConfigError naming ``option`` unless ``value`` is an int >= ``minimum`` (None too, if allowed).

    Python callers pass strings read from a file or argv (``num_images="64"``); without this they get a
    bare ``TypeError: '<' not supported`` from deep inside the plan.
    """
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        hint = f"; pass {option}={int(value)}" if isinstance(value, str) and value.strip().isdigit() else ""
        msg = f"{where}{option} takes an int >= {minimum}, got {value!r} ({type(value).__name__}){hint}"
        raise ConfigError(msg)
    if value < minimum:
        msg = f"{where}{option} must be >= {minimum}, got {value}"
        raise ConfigError(msg)


class _Serializable:
    """``to_dict`` / ``from_dict`` for frozen dataclasses of plain values and enums."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            nested = getattr(value, "to_dict", None)  # a FloatScope
            out[f.name] = nested() if nested else list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def _from_preset(cls, base: dict[str, Any], changes: dict[str, Any]) -> Self:
        """A preset classmethod's config: its ``base`` options with the caller's ``changes`` on top."""
        return cls(**(base | changes))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names
        old = sorted(k for k in unknown if k in RENAMED)
        if old:
            msg = f"{cls.__name__}: {', '.join(f'{k} is now {RENAMED[k]}' for k in old)} (docs/concepts.md)"
            raise ConfigError(msg)
        if unknown:
            msg = f"{cls.__name__} has no option(s) {sorted(unknown)}; known: {sorted(names)}"
            raise ConfigError(msg)
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)


_TASK_NAMES = tuple(t.value for t in Task)


@dataclass(frozen=True, kw_only=True)
class ExportConfig(_Serializable):
    """Ultralytics ``.pt`` -> ONNX export options.

    Example:
        >>> ExportConfig(imgsz=640, opset=17, dynamic=True).dynamic
        True
    """

    imgsz: int = 640
    opset: int = 17
    dynamic: bool = False
    simplify: bool = True
    fast_dfl: bool = True  # DFL softmax over the last axis: same outputs, faster on ONNX Runtime CPU
    task: str | None = None  # run the model as this task (its own, or "detect"); None: the model's own

    def __post_init__(self) -> None:
        if self.task is not None and self.task not in _TASK_NAMES:
            msg = f"task must be one of {', '.join(_TASK_NAMES)} (or None: the model's own), got {self.task!r}"
            raise ConfigError(msg)
        if self.imgsz <= 0 or self.imgsz % 32:
            msg = f"imgsz must be a positive multiple of 32 (the YOLO stride), got {self.imgsz}"
            raise ConfigError(msg)
        if not 13 <= self.opset <= 22:
            msg = f"opset must be between 13 and 22 (int8 Q/DQ needs >= 13), got {self.opset}"
            raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class EvalConfig(_Serializable):
    """COCO evaluation settings; the defaults are those of ``yolo val``.

    Example:
        >>> EvalConfig().iou
        0.7
    """

    conf: float = 0.001
    iou: float = 0.7
    max_det: int = 300
    num_images: int | None = None
    batch: int = 1
    resamples: int = 1000  # bootstrap resamples over images for the 95% intervals; 0 = no intervals
    seed: int = 0  # the resampled image lists; equal seeds pair two variants' resamples

    def __post_init__(self) -> None:
        check_int(self.num_images, option="num_images", minimum=1, none_ok=True)
        check_int(self.max_det, option="max_det", minimum=1)
        check_int(self.batch, option="batch", minimum=1)
        if self.resamples != 0 and self.resamples < 100:
            msg = f"resamples must be 0 (no intervals) or >= 100 for a 95% interval, got {self.resamples}"
            raise ConfigError(msg)
        if not 0.0 <= self.conf < 1.0:
            msg = f"conf must be in [0, 1), got {self.conf}"
            raise ConfigError(msg)
        if not 0.0 < self.iou <= 1.0:
            msg = f"iou must be in (0, 1], got {self.iou}"
            raise ConfigError(msg)
        if self.max_det < 1 or self.batch < 1:
            msg = f"max_det and batch must be >= 1, got max_det={self.max_det}, batch={self.batch}"
            raise ConfigError(msg)
        if self.num_images is not None and self.num_images < 1:
            msg = f"num_images must be >= 1 or None (all), got {self.num_images}"
            raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class BenchConfig(_Serializable):
    """Latency benchmark settings. Variants are timed interleaved, round by round.

    Example:
        >>> BenchConfig(batch_sizes=(1, 8)).batch_sizes
        (1, 8)
    """

    batch_sizes: tuple[int, ...] = (1,)
    warmup: int = 10
    iterations: int = 100
    threads: int | None = None  # ONNX Runtime intra-op threads; None = one per core
    noise_threshold: float = 0.10  # flag a measurement whose IQR / median exceeds this

    def __post_init__(self) -> None:
        for b in self.batch_sizes:
            check_int(b, option="batch_sizes", minimum=1)
        check_int(self.warmup, option="warmup")
        check_int(self.iterations, option="iterations", minimum=5)
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            msg = f"batch_sizes must be a non-empty tuple of positive ints, got {self.batch_sizes!r}"
            raise ConfigError(msg)
        if self.warmup < 0 or self.iterations < 5:
            msg = f"need warmup >= 0 and iterations >= 5, got {self.warmup} and {self.iterations}"
            raise ConfigError(msg)
