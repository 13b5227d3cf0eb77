"""ONNX Runtime static INT8 with one calibration shared by many quantizations.

Sensitivity analysis and the accuracy budget quantize the same model dozens of times, each time with
other nodes kept float. Activation ranges do not depend on which nodes are excluded (ORT calibrates
every tensor of the quantizable op types), so ranges are collected once and every later
``quantize_static`` call reads them from ORT's calibration cache (``calibration_cache_path``).
Each model made here is what :class:`~yoloquant.quantize.ort_static.OrtStaticQuantizer` makes with the
same config plus ``exclude`` = the extra float nodes as anchored exact-name regexes.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from yoloquant._optional import require
from yoloquant.artifacts import CalibrationSet, OnnxModel, QdqModel
from yoloquant.config import Precision
from yoloquant.errors import ConfigError, QuantizationError
from yoloquant.quantize import graph
from yoloquant.quantize.ort_static import (
    CalibrationReader,
    OrtQuantConfig,
    OrtStaticQuantizer,
    prints_to_log,
    static_kwargs,
)

__all__ = ["SharedCalibration", "exact_patterns"]


def exact_patterns(names: Iterable[str]) -> tuple[str, ...]:
    """Anchored regexes that match exactly these node names (for ``OrtQuantConfig.exclude``)."""
    return tuple(f"^{re.escape(n)}$" for n in names)


class SharedCalibration:
    """Calibrate ``model`` on ``data`` once; then :meth:`build` any set of extra float nodes cheaply.

    Attributes:
        proto: The preprocessed float ``onnx.ModelProto`` (the node names every list refers to).
        base_float: Nodes the config keeps float anyway (decode path and presets).
        quantizable: Nodes of the config's op types that the config would quantize, in graph order.
    """

    def __init__(self, model: OnnxModel, data: CalibrationSet, config: OrtQuantConfig, work: Path) -> None:
        if len(data) == 0:
            msg = "the calibration set is empty; calibrate on at least one image"
            raise QuantizationError(msg, artifact=model.path)
        onnx = require("onnx")
        self.model, self.data, self.config = model, data, config
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.cache = self.work / f"ranges-{config.calibration_method.value}.json"
        self.cache.unlink(missing_ok=True)  # ranges belong to this data set only
        (self.work / "full-int8.onnx").unlink(missing_ok=True)
        self.src = self._preprocess()
        self.proto = onnx.load(str(self.src))
        self.base_float = OrtStaticQuantizer(config).float_node_names(self.proto)
        skip = set(self.base_float)
        self.quantizable = tuple(
            n.name for n in self.proto.graph.node if n.op_type in config.qdq_op_types and n.name not in skip
        )

    def in_folder(self, folder: Path) -> SharedCalibration:
        """This calibration, quantizing from its own link of the source model in ``folder``: ONNX Runtime writes
        ``<source>-inferred.onnx`` next to the source, so builds running at the same time (an executor's
        tasks) each need one. The ranges cache stays shared (read once it exists)."""
        folder.mkdir(parents=True, exist_ok=True)
        own = folder / self.src.name
        own.unlink(missing_ok=True)
        try:
            os.link(self.src, own)
        except OSError:  # another file system, or no hard links there
            shutil.copyfile(self.src, own)
        view = copy.copy(self)
        view.src = own
        return view

    def _preprocess(self) -> Path:
        if not self.config.preprocess:
            return self.model.path
        shape_inference = require("onnxruntime.quantization.shape_inference")
        out = self.work / "preprocessed.onnx"
        try:
            shape_inference.quant_pre_process(str(self.model.path), str(out), skip_symbolic_shape=True)
        except Exception as exc:  # onnxruntime raises plain Exceptions of several types
            msg = f"ONNX Runtime's quant_pre_process failed on {self.model.path}: {exc}"
            raise QuantizationError(msg, artifact=self.model.path) from exc
        return out

    def config_for(self, extra_float: Iterable[str]) -> OrtQuantConfig:
        """The OrtStaticQuantizer config that reproduces :meth:`build` with these extra float nodes."""
        return dataclasses.replace(
            self.config, keep_float=self.config.keep_float.with_nodes(*exact_patterns(extra_float))
        )

    def build(
        self, extra_float: Iterable[str], dst: Path, *, metadata: bool = True, float_mode: str = "exclude"
    ) -> QdqModel:
        """Quantize with ``extra_float`` kept float too, using the shared ranges; write ``dst``.

        ``float_mode``: ``exclude`` (ORT's ``nodes_to_exclude``: reproducible with OrtStaticQuantizer)
        or ``dequantize`` (quantize everything, then rewire those nodes to float inputs; truly float).
        """
        extra = tuple(dict.fromkeys(extra_float))
        if float_mode not in ("exclude", "dequantize"):
            msg = f"float_mode is 'exclude' or 'dequantize', got {float_mode!r}"
            raise ConfigError(msg)
        start = time.perf_counter()
        dst.parent.mkdir(parents=True, exist_ok=True)
        onnx = require("onnx")
        if float_mode == "exclude" or not extra:
            self._quantize_static(dst, (*self.base_float, *extra))
            qmodel = onnx.load(str(dst))
        else:
            from yoloquant.decide._dequant import dequantize_nodes

            qmodel = dequantize_nodes(self._full_int8(), self.proto, extra, float_readers=self.base_float)
            onnx.save(qmodel, str(dst))
        if metadata:
            graph.copy_metadata(onnx.load(str(self.model.path), load_external_data=False), qmodel)
            onnx.save(qmodel, str(dst))
        quantized, floats = graph.classify_qdq_nodes(qmodel)
        return QdqModel(
            path=dst,
            info=self.model.info,
            precision=Precision.INT8,
            source=self.model,
            quantizer="ort-static",
            backend=self.config.backend.value,
            config={
                **self.config_for(extra).to_dict(),
                **({"float_mode": "dequantize"} if extra and float_mode == "dequantize" else {}),
            },
            quantized_nodes=quantized,
            float_nodes=floats,
            seconds=time.perf_counter() - start,
        )

    def _full_int8(self) -> Any:
        """A fresh copy of the fully quantized model (made once)."""
        onnx = require("onnx")
        path = self.work / "full-int8.onnx"
        if not path.is_file():
            self._quantize_static(path, self.base_float)
        return onnx.load(str(path))

    def _quantize_static(self, dst: Path, keep_float: tuple[str, ...]) -> None:
        quantization = require("onnxruntime.quantization")
        try:
            with prints_to_log():  # ORT's calibration prints
                quantization.quantize_static(
                    str(self.src),
                    str(dst),
                    CalibrationReader(self.data, self.model.info.input_name),
                    nodes_to_exclude=list(keep_float),
                    calibration_cache_path=str(self.cache),
                    **static_kwargs(self.config, len(self.data)),
                )
        except Exception as exc:  # onnxruntime raises plain Exceptions of several types
            msg = f"ONNX Runtime static quantization of {self.src.name} failed: {exc}"
            raise QuantizationError(msg, artifact=self.src) from exc
