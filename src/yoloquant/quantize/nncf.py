"""NNCF post-training INT8 (``nncf.quantize``), the recipe behind Ultralytics' OpenVINO ``int8=True`` export.

Ultralytics converts the model to OpenVINO and calls ``nncf.quantize(..., preset=MIXED)`` with the Detect
head's own ops (concats, reshapes, the DFL, the anchor decode) and every Sigmoid in an ignored scope; the
head's box / class output convs are quantized. :class:`NncfQuantizer` does the same on the ONNX model with
NNCF's ONNX backend (so the result is an ONNX Q/DQ file like every other quantizer's, which
:class:`~yoloquant.backends.openvino.OpenVinoEngine` and ONNX Runtime both load):

- the ignored scope is the decode path found from the graph's structure (``graph.find_head``, no node
  names), the same nodes Ultralytics names (the DFL and the Detect module's decode ops);
- MIXED preset: symmetric int8 weights, asymmetric activations; fast bias correction; every calibration
  image used (Ultralytics also overrides NNCF's 300-image default subset);
- NNCF's ONNX backend writes *int8* activations with zero points, which OpenVINO's CPU plugin
  mis-executes (mAP50-95 0.2 instead of 48.7 on YOLOv8n, coco128 64-127), so the activations are moved
  to uint8 on the same grid (``unsigned.shift_to_uint8``: ONNX Runtime's outputs do not change).

The model is meant for the ``openvino`` backend; ONNX Runtime's CPU provider runs it correctly but
slower than FP32 (it does not fuse this layout).

Example:
    >>> qdq = NncfQuantizer().quantize(OnnxModel.load("yolov8n-fp32.onnx"), calib, Path("runs/nncf"))  # doctest: +SKIP
    >>> qdq.backend  # doctest: +SKIP
    'openvino'
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from yoloquant._io import atomic_path
from yoloquant._optional import require
from yoloquant.artifacts import CalibrationSet, OnnxModel, QdqModel
from yoloquant.config import Backend, Precision, _Serializable, parse_enum
from yoloquant.data.letterbox import normalize_pixels
from yoloquant.errors import ConfigError, QuantizationError
from yoloquant.quantize import graph, unsigned
from yoloquant.quantize._target import int8_target
from yoloquant.quantize.float_scope import FloatScope
from yoloquant.quantize.registry import register
from yoloquant.vocabulary import renamed_keywords

__all__ = ["NncfConfig", "NncfPreset", "NncfQuantizer"]

log = logging.getLogger(__name__)


class NncfPreset(StrEnum):
    """NNCF's quantization presets: ``mixed`` (asymmetric activations, Ultralytics' choice) or ``performance``."""

    MIXED = "mixed"
    PERFORMANCE = "performance"


@renamed_keywords()
@dataclass(frozen=True, kw_only=True)
class NncfConfig(_Serializable):
    """Options of :class:`NncfQuantizer`.

    Attributes:
        preset: ``mixed`` (symmetric weights, asymmetric activations) or ``performance`` (all symmetric).
        fast_bias_correction: NNCF's fast bias correction after quantization (its default).
        keep_float: What stays float (:class:`~yoloquant.quantize.float_scope.FloatScope` or a preset name):
            ``decode`` (default: Ultralytics' scope), ``head`` (also the box / class output convs) or
            ``head+first``. The decode path always stays float in NNCF's recipe.
        subset_size: Calibration images NNCF uses; None = all of them.

    Example:
        >>> NncfConfig(keep_float="head").keep_float.head_convs
        True
    """

    preset: NncfPreset = NncfPreset.MIXED
    fast_bias_correction: bool = True
    keep_float: FloatScope = field(default_factory=FloatScope)
    subset_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "preset", parse_enum(NncfPreset, self.preset, option="NNCF preset"))
        object.__setattr__(self, "keep_float", FloatScope.parse(self.keep_float))
        if not self.keep_float.decode_path:
            msg = "NNCF's recipe keeps the decode path float: keep_float needs decode_path=True (e.g. 'decode')"
            raise ConfigError(msg)
        if self.subset_size is not None and self.subset_size < 1:
            msg = f"subset_size must be >= 1 or None (all calibration images), got {self.subset_size}"
            raise ConfigError(msg)


class _Images:
    """The calibration images as float32 [1, 3, H, W] in [0, 1], one at a time (NNCF iterates more than once)."""

    def __init__(self, data: CalibrationSet) -> None:
        self._data = data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self._data)):
            yield normalize_pixels(self._data.images[i : i + 1])


@contextlib.contextmanager
def _nncf_log_level(nncf: Any, quiet: bool) -> Iterator[None]:
    """NNCF logs every node it skips at INFO; hush it while we quantize, then put its level back."""
    logger = nncf.nncf_logger
    before = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)


@dataclass(frozen=True)
class NncfQuantizer:
    """INT8 with NNCF's post-training quantization, for OpenVINO's runtime.

    Example:
        >>> NncfQuantizer().name
        'nncf'
    """

    config: NncfConfig = field(default_factory=NncfConfig)
    progress: bool = field(default=True, compare=False)  # display only: equal quantizers share one model
    name: ClassVar[str] = "nncf"
    needs_calibration: ClassVar[bool] = True

    def with_progress(self, enabled: bool) -> Self:
        """This quantizer with NNCF's own progress output on or off."""
        return replace(self, progress=enabled)

    def ignored_names(self, model: Any) -> tuple[str, ...]:
        """The nodes kept float in ``model`` (an ``onnx.ModelProto``)."""
        return self.config.keep_float.node_names(model)

    def quantize(self, model: OnnxModel, data: CalibrationSet, out_dir: Path) -> QdqModel:
        """Calibrate on ``data`` and write ``<stem>-int8.onnx`` (uint8 activations) into ``out_dir``."""
        target = int8_target(model, data, out_dir, typical="64-300")
        onnx = require("onnx")
        start = time.perf_counter()
        source = onnx.load(str(model.path))
        ignored = self.ignored_names(source)
        qmodel = self._run_nncf(source, data, model, ignored)
        moved = unsigned.shift_to_uint8(qmodel)
        log.info("NNCF quantized %s; %d activation Q/DQ pairs moved to uint8", model.path.name, moved)
        graph.copy_metadata(source, qmodel)
        with atomic_path(target) as staged:
            onnx.save(qmodel, str(staged))
        quantized, floats = graph.classify_qdq_nodes(qmodel)
        return QdqModel(
            path=target,
            info=model.info,
            precision=Precision.INT8,
            source=model,
            quantizer=self.name,
            backend=Backend.OPENVINO.value,
            config=self.config.to_dict(),
            quantized_nodes=quantized,
            float_nodes=floats,
            seconds=time.perf_counter() - start,
        )

    def _run_nncf(self, source: Any, data: CalibrationSet, model: OnnxModel, ignored: tuple[str, ...]) -> Any:
        nncf = require("nncf")
        cfg = self.config
        feed = model.info.input_name
        preset = {
            NncfPreset.MIXED: nncf.QuantizationPreset.MIXED,
            NncfPreset.PERFORMANCE: nncf.QuantizationPreset.PERFORMANCE,
        }
        with _nncf_log_level(nncf, quiet=not self.progress):
            try:
                return nncf.quantize(
                    source,
                    nncf.Dataset(_Images(data), lambda image: {feed: image}),
                    preset=preset[cfg.preset],
                    subset_size=min(cfg.subset_size or len(data), len(data)),
                    fast_bias_correction=cfg.fast_bias_correction,
                    ignored_scope=nncf.IgnoredScope(names=list(ignored)),
                )
            except Exception as exc:  # nncf raises its own and onnxruntime's exception types
                msg = f"NNCF quantization of {model.path.name} failed: {exc}"
                raise QuantizationError(msg, artifact=model.path) from exc


register(NncfConfig, NncfQuantizer, precision=Precision.INT8)
