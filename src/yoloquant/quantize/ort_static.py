"""ONNX Runtime static INT8 quantization in the layout ONNX Runtime's CPU kernels run fast.

The layout (see docs/quantizers.md for the measurements behind it):

- uint8 activations, int8 per-channel symmetric weights: the only combination ONNX Runtime fuses
  into ``QLinearConv`` on x86;
- Q/DQ around every op ORT has a QDQ fusion for (Sigmoid, Mul, Add, Concat, MaxPool, Resize, ...),
  not just Conv, so activations stay in uint8 between convs instead of bouncing through float;
- the decode path (DFL, anchor arithmetic, class sigmoid, end-to-end top-k) float, found by walking
  the graph back from its outputs. The head's box / class output convs are INT8 with their own
  output scales (keeping them float measured no better and slower);
- entropy calibration of activation ranges (measured better than minmax and percentile on mAP).

Example:
    >>> quantizer = OrtStaticQuantizer(OrtQuantConfig(calibration_method="entropy"))
    >>> qdq = quantizer.quantize(model, calib, Path("runs/int8"))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from yoloquant._cpu import saturates_u8s8
from yoloquant._io import atomic_path, disk_full_cause
from yoloquant._optional import require
from yoloquant.artifacts import CalibrationSet, OnnxModel, QdqModel
from yoloquant.config import Backend, CalibMethod, Precision, _Serializable, parse_enum
from yoloquant.data.letterbox import normalize_pixels
from yoloquant.errors import ConfigError, QuantizationError
from yoloquant.quantize import graph
from yoloquant.quantize._target import int8_target
from yoloquant.quantize.float_scope import FloatScope
from yoloquant.quantize.registry import register
from yoloquant.vocabulary import renamed_keywords

__all__ = ["DEFAULT_OP_TYPES", "OrtQuantConfig", "OrtStaticQuantizer"]

log = logging.getLogger(__name__)

# Ops ORT's QDQ quantizer handles and its CPU graph transformers fuse (or drop Q/DQ around).
DEFAULT_OP_TYPES: tuple[str, ...] = (
    "Conv",
    "Sigmoid",
    "Mul",
    "Add",
    "Concat",
    "MaxPool",
    "Resize",
    "Split",
)
_KNOWN_OP_TYPES = frozenset(
    {
        *DEFAULT_OP_TYPES,
        "Reshape",
        "Transpose",
        "Slice",
        "Softmax",
        "MatMul",
        "Gemm",
        "AveragePool",
        "GlobalAveragePool",
        "Sub",
        "Div",
        "Pad",
        "Gather",
        "Squeeze",
        "Unsqueeze",
    }
)


@renamed_keywords(op_types="qdq_op_types")
@dataclass(frozen=True, kw_only=True)
class OrtQuantConfig(_Serializable):
    """Options of :class:`OrtStaticQuantizer`.

    Attributes:
        calibration_method: How activation ranges are chosen: ``minmax``, ``entropy`` or ``percentile``.
        percentile: Percentile of |activation| kept by ``percentile`` calibration.
        per_channel: One int8 weight scale per output channel (else one per tensor).
        qdq_op_types: Op types that get Q/DQ (``keep_float.op_types`` are the ones kept float). Conv alone
            leaves the graph float between convs (slow).
        keep_float: What stays float (:class:`~yoloquant.quantize.float_scope.FloatScope` or a preset name);
            default ``decode``. The decode path must stay float here: one uint8 scale over box pixels and
            class scores zeroes the scores. Keeping the head convs float too is slower and not more
            accurate on YOLOv8n (ORT still re-quantizes their inputs from the quantized neighbours).
        symmetric_activations: Symmetric activation ranges (zero point 128 for uint8).
        reduce_range: 7-bit weights (int8 range -64..63). On x86 CPUs without VNNI, ONNX Runtime's uint8 x
            int8 kernels sum pairs of products in int16 (``vpmaddubsw``), which saturates for full-range
            weights; 7-bit weights cannot saturate. ``None`` (default): 7-bit when the CPU that quantizes lacks
            VNNI (for either backend: OpenVINO's CPU kernels saturate there too; the report's config records
            which was used).
        preprocess: Run ORT's ``quant_pre_process`` (shape inference + graph cleanup) first.
        calib_chunk: Images per calibration chunk; bounds memory (histograms hold every output).
        backend: Runtime the model is made for: ``ort-cpu`` (ONNX Runtime, CPU EP) or ``openvino``;
            ``OrtQuantConfig.openvino()`` picks its op types.
    """

    calibration_method: CalibMethod = CalibMethod.ENTROPY
    percentile: float = 99.999
    per_channel: bool = True
    qdq_op_types: tuple[str, ...] = DEFAULT_OP_TYPES
    keep_float: FloatScope = field(default_factory=FloatScope)
    symmetric_activations: bool = False
    reduce_range: bool | None = None
    weight_type: str = "int8"
    preprocess: bool = True
    calib_chunk: int = 8
    backend: Backend = Backend.ORT_CPU

    def __post_init__(self) -> None:
        method = parse_enum(CalibMethod, self.calibration_method, option="calibration_method")
        object.__setattr__(self, "calibration_method", method)
        object.__setattr__(self, "qdq_op_types", tuple(self.qdq_op_types))
        object.__setattr__(self, "keep_float", FloatScope.parse(self.keep_float))
        object.__setattr__(self, "backend", parse_enum(Backend, self.backend, option="backend"))
        if self.backend not in (Backend.ORT_CPU, Backend.OPENVINO):
            msg = f"the ONNX Runtime quantizer makes models for onnxruntime or openvino, got {self.backend.value!r}"
            raise ConfigError(msg)
        if self.weight_type not in ("int8", "uint8"):
            msg = f"weight_type is 'int8' or 'uint8', got {self.weight_type!r}"
            raise ConfigError(msg)
        if not 90.0 <= self.percentile <= 100.0:
            msg = f"percentile must be in [90, 100] (typical: 99.99-99.999), got {self.percentile}"
            raise ConfigError(msg)
        _check_op_types(self.qdq_op_types)
        if self.calib_chunk < 1:
            msg = f"calib_chunk must be >= 1, got {self.calib_chunk}"
            raise ConfigError(msg)

    @classmethod
    def conservative(cls, **changes: Any) -> Self:
        """Head output convs and the stem conv float too: fewer INT8 layers, for models that lose accuracy."""
        return cls._from_preset({"keep_float": FloatScope.head_and_first()}, changes)

    @classmethod
    def openvino(cls, **changes: Any) -> Self:
        """For OpenVINO's runtime: Q/DQ only where OpenVINO runs integer kernels (conv inputs, Add, Concat).

        OpenVINO fuses SiLU into the conv itself, so Q/DQ around Sigmoid / Mul only adds rounding there.
        """
        return cls._from_preset({"qdq_op_types": ("Conv", "Add", "Concat"), "backend": Backend.OPENVINO}, changes)


def _check_op_types(op_types: tuple[str, ...]) -> None:
    if not op_types:
        msg = f"qdq_op_types must name at least one op to quantize, e.g. {DEFAULT_OP_TYPES}"
        raise ConfigError(msg)
    unknown = sorted(set(op_types) - _KNOWN_OP_TYPES)
    if unknown:
        msg = f"qdq_op_types {unknown} are not handled by ONNX Runtime's QDQ quantizer; use {sorted(_KNOWN_OP_TYPES)}"
        raise ConfigError(msg)


class CalibrationReader:
    """ORT calibration data reader over a CalibrationSet, with range selection and an optional tqdm bar."""

    def __init__(self, data: CalibrationSet, input_name: str, bar: Any = None) -> None:
        self._data = data
        self._input = input_name
        self._bar = bar
        self._pos, self._end = 0, len(data)

    def __len__(self) -> int:
        return len(self._data)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pos, self._end = start_index, end_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= self._end:
            return None
        image = normalize_pixels(self._data.images[self._pos : self._pos + 1])
        self._pos += 1
        if self._bar is not None:
            self._bar.update(1)
        return {self._input: image}


def static_kwargs(cfg: OrtQuantConfig, num_images: int) -> dict[str, Any]:
    """``quantize_static`` keyword arguments of this layout (all but model paths, reader and exclusions)."""
    quantization = require("onnxruntime.quantization")
    method = {
        CalibMethod.MINMAX: quantization.CalibrationMethod.MinMax,
        CalibMethod.ENTROPY: quantization.CalibrationMethod.Entropy,
        CalibMethod.PERCENTILE: quantization.CalibrationMethod.Percentile,
    }[cfg.calibration_method]
    return {
        "quant_format": quantization.QuantFormat.QDQ,
        "op_types_to_quantize": list(cfg.qdq_op_types),
        "per_channel": cfg.per_channel,
        "reduce_range": reduce_range(cfg),
        "activation_type": quantization.QuantType.QUInt8,
        "weight_type": quantization.QuantType.QInt8 if cfg.weight_type == "int8" else quantization.QuantType.QUInt8,
        "calibrate_method": method,
        "extra_options": {
            "ActivationSymmetric": cfg.symmetric_activations,
            "WeightSymmetric": True,
            "CalibPercentile": cfg.percentile,
            "CalibStridedMinMax": chunk_size(num_images, cfg.calib_chunk),
        },
    }


def reduce_range(cfg: OrtQuantConfig) -> bool:
    """The config's ``reduce_range``, with ``None`` resolved for this CPU and target."""
    if cfg.reduce_range is not None:
        return cfg.reduce_range
    # OpenVINO's CPU plugin saturates there too: OrtQuantConfig.openvino() on it, YOLOv8n, coco128 64-127 on an
    # AVX2 CPU without VNNI: -4.98 mAP50-95 points with 8-bit weights, -1.80 with 7-bit ones
    return cfg.backend in (Backend.ORT_CPU, Backend.OPENVINO) and cfg.weight_type == "int8" and saturates_u8s8()


@contextlib.contextmanager
def prints_to_log() -> Iterator[None]:
    """ORT's calibrators ``print`` their progress ("Collecting tensor data ..."); send it to the debug log.

    Only stdout is captured: progress bars (stderr) still show.
    """
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            if line.strip():
                log.debug("onnxruntime: %s", line.strip())


def chunk_size(n: int, most: int) -> int:
    """Largest chunk size <= most that divides n (ORT's strided calibration needs a divisor)."""
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


@dataclass(frozen=True)
class OrtStaticQuantizer:
    """Static INT8 post-training quantization with ONNX Runtime, for ONNX Runtime (CPU, OpenVINO EP).

    Example:
        >>> q = OrtStaticQuantizer()
        >>> q.name
        'ort-static'
    """

    config: OrtQuantConfig = field(default_factory=OrtQuantConfig)
    progress: bool = field(default=True, compare=False)  # display only: equal quantizers share one model
    name: ClassVar[str] = "ort-static"
    needs_calibration: ClassVar[bool] = True

    def with_progress(self, enabled: bool) -> Self:
        """This quantizer with its calibration progress bar on or off."""
        return replace(self, progress=enabled)

    def float_node_names(self, model: Any) -> tuple[str, ...]:
        """The nodes this config keeps float in ``model`` (an ``onnx.ModelProto``)."""
        return self.config.keep_float.node_names(model)

    def quantize(self, model: OnnxModel, data: CalibrationSet, out_dir: Path) -> QdqModel:
        """Calibrate on ``data`` and write ``<stem>-int8.onnx`` into ``out_dir`` (``-fp32`` dropped from the stem)."""
        target = int8_target(model, data, out_dir, typical="64-512")
        onnx = require("onnx")
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=".yq-ort-", dir=out_dir) as tmp:
            src = self._preprocess(model.path, Path(tmp))
            float_model = onnx.load(str(src))
            keep_float = self.float_node_names(float_model)
            qpath = Path(tmp) / "quantized.onnx"
            self._run_ort(src, qpath, data, model.info.input_name, keep_float)
            qmodel = onnx.load(str(qpath))
            graph.copy_metadata(onnx.load(str(model.path), load_external_data=False), qmodel)
            with atomic_path(target) as staged:
                onnx.save(qmodel, str(staged))
        quantized, floats = graph.classify_qdq_nodes(qmodel)
        return QdqModel(
            path=target,
            info=model.info,
            precision=Precision.INT8,
            source=model,
            quantizer=self.name,
            backend=self.config.backend.value,
            config={**self.config.to_dict(), "reduce_range": reduce_range(self.config)},
            quantized_nodes=quantized,
            float_nodes=floats,
            seconds=time.perf_counter() - start,
        )

    def _preprocess(self, path: Path, tmp: Path) -> Path:
        if not self.config.preprocess:
            return path
        shape_inference = require("onnxruntime.quantization.shape_inference")
        out = tmp / "preprocessed.onnx"
        try:
            shape_inference.quant_pre_process(str(path), str(out), skip_symbolic_shape=True)
        except Exception as exc:  # onnxruntime raises plain Exceptions of several types
            if disk_full_cause(exc) is not None:
                raise  # a full disk, not a graph ORT cannot clean up: the run folder names the space needed
            msg = f"ONNX Runtime's quant_pre_process failed on {path}: {exc}; retry with preprocess=False"
            raise QuantizationError(msg, artifact=path) from exc
        return out

    def _run_ort(
        self, src: Path, dst: Path, data: CalibrationSet, input_name: str, keep_float: tuple[str, ...]
    ) -> None:
        quantization = require("onnxruntime.quantization")
        tqdm = require("tqdm").tqdm
        cfg = self.config
        desc = f"calibrating ({cfg.calibration_method.value})"
        with tqdm(total=len(data), desc=desc, unit="img", disable=not self.progress) as bar, prints_to_log():
            try:
                quantization.quantize_static(
                    str(src),
                    str(dst),
                    CalibrationReader(data, input_name, bar),
                    nodes_to_exclude=list(keep_float),
                    **static_kwargs(cfg, len(data)),
                )
            except Exception as exc:  # onnxruntime raises plain Exceptions of several types
                msg = f"ONNX Runtime static quantization of {src.name} failed: {exc}"
                raise QuantizationError(msg, artifact=src) from exc


register(OrtQuantConfig, OrtStaticQuantizer, precision=Precision.INT8)
