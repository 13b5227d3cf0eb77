"""The Python and CLI calls that reproduce one variant of a sweep on its own."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yoloquant.config import Backend, EvalConfig, ExportConfig

if TYPE_CHECKING:
    from yoloquant.decide.sweep import SweepVariant
    from yoloquant.pipeline import CalibrationPlan, EvalPlan, QuantPipeline

__all__ = ["cli_call", "python_call"]

_DEFAULT = Backend.ORT_CPU.value


def _r(value: Any) -> str:
    return repr(str(value)) if isinstance(value, Path) else repr(value)


def python_call(
    base: QuantPipeline,
    parts: tuple[CalibrationPlan, EvalPlan],
    variant: SweepVariant | None,
    out_dir: str,
    backend: str = _DEFAULT,
) -> str:
    """The ``QuantPipeline`` call that makes and measures ``variant`` (None: FP32 only, on ``backend``)."""
    cal, ev = parts
    e = base.export_config
    task = f", task={e.task!r}" if e.task else ""
    if base.model.suffix == ".pt":
        start = (
            f"QuantPipeline.from_ultralytics({_r(base.model)}, imgsz={e.imgsz}, opset={e.opset}, "
            f"dynamic={e.dynamic}{task})"
        )
    else:
        start = f"QuantPipeline.from_onnx({_r(base.model)}{task})"
    lines = [start]
    if variant is not None:
        n = variant.calib_images or cal.num_images
        lines.append(f".calibrate({_r(cal.source)}, num_images={n}, offset={cal.offset}, split={cal.split!r})")
        args = [f"quantizer={variant.quantizer!r}"]
        args += [f"calibration_method={variant.calibration_method!r}"] if variant.calibration_method else []
        args += [f"keep_float={variant.keep_float!r}"] if variant.keep_float else []
        args += [f"backend={variant.backend!r}"] if variant.backend != _DEFAULT else []
        lines.append(f".quantize('int8', {', '.join(args)})")
    elif backend != _DEFAULT:
        lines.append(f".quantize('fp32', backend={backend!r})")
    c = ev.config
    lines.append(
        f".evaluate({_r(ev.source)}, split={ev.split!r}, num_images={c.num_images}, offset={ev.offset}, "
        f"conf={c.conf}, iou={c.iou}, max_det={c.max_det})"
    )
    lines += [".benchmark(batch_sizes=(1,))", f".run({out_dir!r})"]
    return "(\n    " + "\n    ".join(lines) + "\n)"


def cli_call(
    base: QuantPipeline,
    parts: tuple[CalibrationPlan, EvalPlan],
    variant: SweepVariant | None,
    out_dir: str,
    backend: str = _DEFAULT,
) -> str | None:
    """The ``yoloquant run`` command that makes and measures ``variant``; None if options lack a flag."""
    cal, ev = parts
    e = base.export_config
    if (
        e != ExportConfig(imgsz=e.imgsz)
        or cal.split != "train"
        or ev.config != EvalConfig(num_images=ev.config.num_images)
    ):
        return None  # export / calibration-split / eval settings that `yoloquant run` has no option for
    args = ["yoloquant", "run", "--model", str(base.model), "--imgsz", str(e.imgsz)]
    args += ["--eval", str(ev.source), "--eval-offset", str(ev.offset), "--split", ev.split]
    args += ["--eval-images", str(ev.config.num_images)] if ev.config.num_images else []
    if variant is None:
        args += ["--precision", "fp32"]
    else:
        backend = variant.backend
        n = variant.calib_images or cal.num_images
        args += ["--calib", str(cal.source), "--calib-images", str(n), "--calib-offset", str(cal.offset)]
        args += ["--precision", "fp32,int8", "--quantizer", variant.quantizer]
        args += ["--calibration-method", variant.calibration_method] if variant.calibration_method else []
        args += ["--keep-float", variant.keep_float] if variant.keep_float else []
    args += ["--backend", backend] if backend != _DEFAULT else []
    return shlex.join([*args, "--out", out_dir])
