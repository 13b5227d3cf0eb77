"""NVIDIA ModelOpt ONNX post-training quantization, INT8 or FP8, in TensorRT's Q/DQ layout.

ModelOpt places Q/DQ pairs the way TensorRT fuses them (activations and weights int8 or fp8 e4m3,
symmetric, per-channel weights; Q/DQ only on the inputs of Conv, Add, Mul, MaxPool, Resize...). The
result is meant for a TensorRT strongly-typed engine; ONNX Runtime's CPU EP runs it correctly but
slower than FP32, so it is a TensorRT artifact, not a CPU one. With ``backend="openvino"``
(:meth:`ModelOptConfig.openvino`) the INT8 model is rewritten for ONNX Runtime's OpenVINO EP:
uint8 asymmetric activations, int8 weights folded (:mod:`yoloquant.quantize.unsigned`).

ModelOpt patches ``onnxruntime.quantization`` process-wide while it quantizes (its calibrators, the
QDQ registry, ``QDQQuantizer.check_opset_version``) and reconfigures the ``modelopt.onnx`` loggers.
So the quantization runs in a fresh Python subprocess (``sys.executable``, not ``multiprocessing``,
so scripts need no ``__main__`` guard and notebooks work); its output is relayed to the
``yoloquant.quantize.modelopt.subprocess`` logger. The caller's onnxruntime, including
:class:`~yoloquant.quantize.ort_static.OrtStaticQuantizer` in the same process, is never touched.

Example:
    >>> quantizer = ModelOptQuantizer(ModelOptConfig.fp8())
    >>> qdq = quantizer.quantize(model, calib, Path("runs/fp8"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from yoloquant._io import atomic_path
from yoloquant._optional import available, require
from yoloquant.artifacts import CalibrationSet, OnnxModel, QdqModel
from yoloquant.config import Backend, CalibMethod, Precision, _Serializable, parse_enum
from yoloquant.data.letterbox import normalize_pixels
from yoloquant.errors import ConfigError, MissingDependencyError, QuantizationError
from yoloquant.quantize import graph, unsigned
from yoloquant.quantize.float_scope import FloatScope
from yoloquant.quantize.registry import register
from yoloquant.vocabulary import renamed_keywords

__all__ = ["ModelOptConfig", "ModelOptQuantizer"]

log = logging.getLogger(__name__)
_child_log = logging.getLogger(f"{__name__}.subprocess")  # ModelOpt's own log lines, relayed

_MODES = (Precision.INT8, Precision.FP8)
_HIGH_PRECISIONS = (Precision.FP32, Precision.FP16)
_DEVICES = ("cpu", "cuda")
# ModelOpt's names for our calibration methods; it has no percentile for int8 / fp8.
_CALIB_NAMES = {CalibMethod.MINMAX: "max", CalibMethod.ENTROPY: "entropy"}
# The opset ModelOpt writes at least (a lower one is silently raised to this).
_MIN_OPSET = {Precision.INT8: 19, Precision.FP8: 19}
_MAX_OPSET = 23
_BACKENDS = (Backend.TENSORRT, Backend.OPENVINO)


def _default_calibration(mode: Precision) -> CalibMethod:
    return CalibMethod.MINMAX if mode is Precision.FP8 else CalibMethod.ENTROPY


@renamed_keywords()
@dataclass(frozen=True, kw_only=True)
class ModelOptConfig(_Serializable):
    """Options of :class:`ModelOptQuantizer`.

    Attributes:
        mode: ``int8`` or ``fp8`` (e4m3) activations and weights.
        calibration_method: ``entropy`` or ``minmax`` (ModelOpt's ``max``); ``None`` picks the one measured
            best for the mode: entropy for int8, minmax for fp8. FP8 needs minmax: ModelOpt turns max-calibrated
            int8 scales into fp8 scales (``* 448 / 127``), which is wrong for clipped (entropy) ranges.
        keep_float: What stays float (:class:`~yoloquant.quantize.float_scope.FloatScope` or a preset name):
            ``head+first`` (default) keeps the box / class output convs, the decode and the stem conv;
            ``head`` quantizes the stem too; ``FloatScope(op_types=("Resize",))`` never quantizes Resize.
        high_precision: Dtype of what is not quantized: ``fp32``, or ``fp16`` (ModelOpt then converts
            the whole float part of the model, its inputs and outputs included, to fp16).
        calibration_device: Where calibration runs: ``cpu``, or ``cuda`` (ONNX Runtime's CUDA EP,
            falling back to the CPU).
        opset: Opset of the written model; ``None`` = ModelOpt's minimum (19).
        backend: Runtime the model is made for: ``tensorrt`` (ModelOpt's output as is) or ``openvino``
            (int8 only: activations rewritten to uint8 over their calibrated range, which OpenVINO runs
            correctly and more accurately; see :mod:`yoloquant.quantize.unsigned`).
    """

    mode: Precision = Precision.INT8
    calibration_method: CalibMethod | None = None
    keep_float: FloatScope = field(default_factory=FloatScope.head_and_first)
    high_precision: Precision = Precision.FP32
    calibration_device: str = "cpu"
    opset: int | None = None
    backend: Backend = Backend.TENSORRT

    def __post_init__(self) -> None:
        mode = parse_enum(Precision, self.mode, option="mode")
        method = self.calibration_method or _default_calibration(mode)
        calibration = parse_enum(CalibMethod, method, option="calibration_method")
        high = parse_enum(Precision, self.high_precision, option="high_precision")
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "calibration_method", calibration)
        object.__setattr__(self, "keep_float", FloatScope.parse(self.keep_float))
        object.__setattr__(self, "high_precision", high)
        object.__setattr__(self, "backend", parse_enum(Backend, self.backend, option="backend"))
        if mode not in _MODES:
            msg = f"ModelOpt ONNX PTQ supports mode int8 and fp8 here, got {mode.value!r}"
            raise ConfigError(msg)
        if calibration not in _CALIB_NAMES:
            msg = f"ModelOpt calibrates int8 / fp8 with minmax or entropy, got {calibration.value!r}"
            raise ConfigError(msg)
        if mode is Precision.FP8 and calibration is not CalibMethod.MINMAX:
            msg = (
                f"ModelOpt fp8 needs minmax calibration (it derives fp8 scales from max-calibrated int8 ones), "
                f"got {calibration.value!r}; pass calibration_method='minmax' or leave it None"
            )
            raise ConfigError(msg)
        if high not in _HIGH_PRECISIONS:
            msg = f"high_precision must be fp32 or fp16 (what stays unquantized), got {high.value!r}"
            raise ConfigError(msg)
        if self.calibration_device not in _DEVICES:
            msg = f"calibration_device must be 'cpu' or 'cuda', got {self.calibration_device!r}"
            raise ConfigError(msg)
        if self.opset is not None and not _MIN_OPSET[mode] <= self.opset <= _MAX_OPSET:
            msg = (
                f"opset {self.opset} is outside what ModelOpt writes for {mode.value} "
                f"({_MIN_OPSET[mode]}-{_MAX_OPSET}); pass opset=None for its minimum"
            )
            raise ConfigError(msg)
        self._check_backend()

    def _check_backend(self) -> None:
        if self.backend not in _BACKENDS:
            msg = f"ModelOpt makes models for tensorrt or openvino, got {self.backend.value!r}"
            raise ConfigError(msg)
        if self.backend is Backend.OPENVINO and (self.mode, self.high_precision) != (Precision.INT8, Precision.FP32):
            msg = (
                f"backend='openvino' rewrites int8 models with fp32 float parts, got mode {self.mode.value!r} and "
                f"high_precision {self.high_precision.value!r}; use ModelOptConfig.openvino()"
            )
            raise ConfigError(msg)

    @property
    def method(self) -> CalibMethod:
        """The calibration method in effect (``calibration_method`` is resolved in ``__post_init__``)."""
        return self.calibration_method or _default_calibration(self.mode)

    @classmethod
    def int8(cls, **changes: Any) -> Self:
        """INT8, entropy calibration, head and stem float: the best INT8 accuracy measured (docs/modelopt.md)."""
        return cls._from_preset(_INT8, changes)

    @classmethod
    def fp8(cls, **changes: Any) -> Self:
        """FP8 (e4m3), max calibration, head and stem float (ModelOpt keeps the 3-channel stem float anyway)."""
        return cls._from_preset({**_INT8, "mode": Precision.FP8, "calibration_method": CalibMethod.MINMAX}, changes)

    @classmethod
    def openvino(cls, **changes: Any) -> Self:
        """INT8 for OpenVINO's runtime: :meth:`int8`'s choices, uint8 activations (docs/modelopt.md)."""
        return cls._from_preset({**_INT8, "backend": Backend.OPENVINO}, changes)


_INT8: dict[str, Any] = {
    "mode": Precision.INT8,
    "calibration_method": CalibMethod.ENTROPY,
    "keep_float": FloatScope.head_and_first(),
}


def _main() -> None:
    """Subprocess entry point: quantize as the job file says; ModelOpt's ORT patches die with the process."""
    job = json.loads(Path(sys.argv[1]).read_text())
    try:
        moq = importlib.import_module("modelopt.onnx.quantization")
        images = np.load(job["images"], mmap_mode="r")
        data = normalize_pixels(images)
        moq.quantize(job["src"], calibration_data=data, output_path=job["dst"], **job["kwargs"])
    except Exception as exc:  # ModelOpt raises assorted types and asserts: hand the parent one line
        error = {"import": isinstance(exc, ImportError), "message": traceback.format_exception_only(exc)[-1].strip()}
        Path(job["error"]).write_text(json.dumps(error))
        raise


@dataclass(frozen=True)
class ModelOptQuantizer:
    """Post-training INT8 / FP8 quantization with NVIDIA ModelOpt, for TensorRT.

    Example:
        >>> q = ModelOptQuantizer(ModelOptConfig(mode="fp8"))
        >>> q.name, q.config.keep_float.preset, q.config.method.value
        ('modelopt', 'head+first', 'minmax')
    """

    config: ModelOptConfig = field(default_factory=ModelOptConfig)
    name: ClassVar[str] = "modelopt"
    needs_calibration: ClassVar[bool] = True

    def with_progress(self, enabled: bool) -> Self:
        """This quantizer: ModelOpt runs in a subprocess whose log goes to the logger, not to progress bars."""
        del enabled
        return self

    def float_node_names(self, model: Any) -> tuple[str, ...]:
        """The nodes this config keeps float in ``model`` (an ``onnx.ModelProto``)."""
        return self.config.keep_float.node_names(model)

    def modelopt_kwargs(self, keep_float: tuple[str, ...]) -> dict[str, Any]:
        """Keyword arguments for ``modelopt.onnx.quantization.quantize`` (calibration data aside)."""
        cfg = self.config
        return {
            "quantize_mode": cfg.mode.value,
            "calibration_method": _CALIB_NAMES[cfg.method],
            "calibration_eps": ["cuda:0", "cpu"] if cfg.calibration_device == "cuda" else ["cpu"],
            "high_precision_dtype": cfg.high_precision.value,
            # ModelOpt matches with re.match; exact names leave no room for prefix collisions
            "nodes_to_exclude": [f"^{re.escape(n)}$" for n in keep_float],
            "op_types_to_exclude": list(cfg.keep_float.op_types),
            "opset": cfg.opset,
            "log_level": "INFO",
        }

    def quantize(self, model: OnnxModel, data: CalibrationSet, out_dir: Path) -> QdqModel:
        """Calibrate on ``data`` and write ``<stem>-<mode>.onnx`` into ``out_dir`` (``-fp32`` dropped from the stem)."""
        if len(data) == 0:
            msg = "the calibration set is empty; calibrate on at least one image (64-512 is typical)"
            raise QuantizationError(msg, artifact=model.path)
        onnx = require("onnx")
        if not available("modelopt"):  # importing it here would cost seconds (torch): only find it
            require("modelopt.onnx.quantization")  # raises MissingDependencyError with the install hint
        cfg = self.config
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / f"{model.path.stem.removesuffix('-fp32')}-{cfg.mode.value}.onnx"
        start = time.perf_counter()
        source = onnx.load(str(model.path))
        keep_float = self.float_node_names(source)
        log.info(
            "ModelOpt %s (%s calibration, %d images, keep=%s: %d float nodes) of %s",
            cfg.mode.value, cfg.method.value, len(data), cfg.keep_float.describe(), len(keep_float), model.path.name,
        )  # fmt: skip
        with tempfile.TemporaryDirectory(prefix=".yq-modelopt-", dir=out_dir) as tmp:
            # ModelOpt writes intermediate files next to its input: give it a private copy.
            src, dst, images = Path(tmp) / "float.onnx", Path(tmp) / "quantized.onnx", Path(tmp) / "calib.npy"
            onnx.save(source, str(src))
            np.save(images, data.images)
            job = {
                "src": str(src),
                "dst": str(dst),
                "images": str(images),
                "error": str(Path(tmp) / "error.txt"),
                "kwargs": self.modelopt_kwargs(keep_float),
            }
            self._run_isolated(job, Path(tmp), model.path)
            qmodel = onnx.load(str(dst))
            if cfg.backend is Backend.OPENVINO:
                moved = unsigned.rewrite_for_openvino(qmodel, source, data)
                log.info("rewrote %d int8 activation Q/DQ pairs to uint8 for OpenVINO", moved)
            graph.copy_metadata(source, qmodel)
            with atomic_path(target) as staged:
                onnx.save(qmodel, str(staged))
        quantized, floats = graph.classify_qdq_nodes(qmodel)
        seconds = time.perf_counter() - start
        log.info("ModelOpt %s done in %.1f s: %s", cfg.mode.value, seconds, target)
        return QdqModel(
            path=target,
            info=model.info,
            precision=cfg.mode,
            source=model,
            quantizer=self.name,
            backend=cfg.backend.value,
            config=cfg.to_dict(),
            quantized_nodes=quantized,
            float_nodes=floats,
            seconds=seconds,
        )

    def _run_isolated(self, job: dict[str, Any], tmp: Path, artifact: Path) -> None:
        """Run :func:`_main` in a fresh interpreter, relaying its output to this module's logger."""
        job_file = tmp / "job.json"
        job_file.write_text(json.dumps(job))
        cmd = [sys.executable, "-c", "from yoloquant.quantize.modelopt import _main; _main()", str(job_file)]
        package_root = str(Path(__file__).resolve().parents[2])  # found even when yoloquant is not installed
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        tail: deque[str] = deque(maxlen=40)
        pipe = subprocess.PIPE
        with subprocess.Popen(cmd, stdout=pipe, stderr=subprocess.STDOUT, text=True, errors="replace", env=env) as proc:
            try:
                for line in proc.stdout or ():
                    if line.strip():
                        tail.append(line.rstrip())
                        _child_log.info("%s", tail[-1])
            except BaseException:
                proc.kill()  # Ctrl-C or a relay failure must not leave ModelOpt running
                raise
        if proc.returncode == 0 and Path(job["dst"]).is_file():
            return
        error_file = Path(job["error"])
        error = json.loads(error_file.read_text()) if error_file.is_file() else {}
        cause = subprocess.CalledProcessError(proc.returncode, cmd, output="\n".join(tail))
        if error.get("import"):
            msg = f'ModelOpt cannot be imported ({error["message"]}); pip install "yoloquant[modelopt]"'
            raise MissingDependencyError(msg) from cause
        reason = error.get("message", f"exit status {proc.returncode} (out of memory?)")
        msg = f"ModelOpt {self.config.mode.value} quantization of {artifact.name} failed: {reason}"
        raise QuantizationError(msg, artifact=artifact) from cause


register(ModelOptConfig, ModelOptQuantizer, precision=lambda config: config.mode)
