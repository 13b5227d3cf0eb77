"""One name per concept: the registered concepts, their old spellings, and the guard that names the new one.

docs/concepts.md is the glossary; ``python -m yoloquant.tools.vocabulary`` lists every public keyword
and CLI flag and fails on a second spelling of a concept registered here.

Example:
    >>> RENAMED["keep"]
    'keep_float'
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from yoloquant.errors import ConfigError

__all__ = ["CONCEPTS", "RENAMED", "RENAMED_FLAGS", "RENAMED_VALUES", "Concept", "renamed_keywords"]

T = TypeVar("T")


@dataclass(frozen=True)
class Concept:
    """A concept users type: its one keyword (and CLI flag), what it means, and the spellings it replaced."""

    name: str
    meaning: str
    old: tuple[str, ...] = ()
    old_flags: tuple[str, ...] = ()
    old_values: Mapping[str, str] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


CONCEPTS: tuple[Concept, ...] = (
    Concept(
        "backend",
        "the runtime a variant is made for and runs on: ort-cpu, ort-cuda, openvino, torch, tensorrt",
        old=("target",),
        old_values={"onnxruntime": "ort-cpu", "cuda": "ort-cuda"},
    ),
    Concept("format", "the graph format of a quantized model file: qdq, qcdq or fp16", old=("layout",)),
    Concept(
        "keep_float",
        "what stays float: a FloatScope or a preset (nothing, decode, head, head+first), the same in every quantizer",
        old=(
            "keep",
            "keeps",
            "keep_decode_float",
            "keep_head_convs_float",
            "keep_first_conv_float",
            "exclude",
            "exclude_op_types",
            "keep_decode",
            "keep_fp32_ops",
            "keep_fp32_nodes",
        ),
        old_flags=("--keep", "--keeps"),
    ),
    Concept(
        "calibration_method",
        "how activation ranges are chosen from the calibration images: minmax, entropy, percentile",
        old=("calibration", "calibrations"),
        old_flags=("--calibration", "--calibrations"),
    ),
    Concept(
        "calib_images",
        "how many calibration images (calibrate()'s num_images) where both counts could be meant",
        old=("calib_counts",),
        old_flags=("--calib-counts",),
    ),
    Concept(
        "precision",
        "the numeric precision of a variant: fp32, fp16, int8, fp8, w8a16, ...",
        old_flags=("--precisions",),
    ),
    Concept("quantizer", "what makes a variant: ort, modelopt, nncf, brevitas, fp16", old_flags=("--quantizers",)),
    Concept(
        "granularity",
        "the layer groups a budget or sensitivity analysis works on: block (default) or conv",
        old_flags=("--budget-granularity",),
    ),
    Concept("max_map_drop", "an accuracy budget: mAP points a quantizer may lose (run, quantize)"),
    Concept(
        "recommend_max_drop",
        "a sweep's recommendation constraint: the most mAP points the recommended variant may lose",
    ),
    Concept("recommend_min_speedup", "a sweep's recommendation constraint: the least speedup vs fp32"),
    Concept(
        "executor",
        "where a sweep's variants, a sensitivity analysis's groups or a budget search's candidates run: local "
        "(this process, the default) or ray (docs/ray.md)",
    ),
    Concept("keep_going", "a sweep goes on past a failed variant, which it records in failed.jsonl"),
    Concept("max_retries", "Ray: tries after the first when a task's worker process or node dies"),
    Concept("timing_resources", "Ray: the resource (GPU type, CPU model label) of the node that times a sweep"),
)

RENAMED: dict[str, str] = {old: c.name for c in CONCEPTS for old in c.old}
RENAMED_FLAGS: dict[str, str] = {old: c.flag for c in CONCEPTS for old in c.old_flags}
RENAMED_VALUES: dict[str, dict[str, str]] = {c.name: dict(c.old_values) for c in CONCEPTS if c.old_values}


def renamed_keywords(**local: str) -> Callable[[T], T]:
    """Decorate a function or class so an old keyword raises a ConfigError naming the new one.

    ``local`` adds renames that hold for this callable only (``Sweep.grid(num_images=)`` ->
    ``calib_images=``). A keyword the callable really takes is never refused.
    """

    def decorate(obj: T) -> T:
        if isinstance(obj, type):
            obj.__init__ = _guarded(obj.__init__, local, obj.__name__)  # type: ignore[misc]
            return obj
        return _guarded(obj, local, getattr(obj, "__qualname__", "?"))  # type: ignore[arg-type,return-value]

    return decorate


def _guarded(fn: Callable[..., Any], local: Mapping[str, str], where: str) -> Callable[..., Any]:
    params = set(inspect.signature(fn).parameters)
    renames = {**RENAMED, **local}

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        old = sorted(k for k in kwargs if k in renames and k not in params)
        if old:
            new = ", ".join(f"{k}= is now {renames[k]}=" for k in old)
            msg = f"{where.removesuffix('.__init__')}(): {new} (docs/concepts.md; CHANGELOG 0.2.0 lists every rename)"
            raise ConfigError(msg)
        return fn(*args, **kwargs)

    return wrapper


def renamed_value(concept: str, value: object) -> str | None:
    """The new spelling of an old value of ``concept`` (``backend="ort-cpu"`` -> ``"ort-cpu"``), if any."""
    return RENAMED_VALUES.get(concept, {}).get(str(value).lower())
