"""FP8 (e4m3) weight scales chosen by squared error instead of ModelOpt's max rule.

ModelOpt's ONNX FP8 path calibrates INT8 first and multiplies every scale by 448 / 127
(``modelopt/onnx/quantization/fp8.py``, ``int8_to_fp8``): a weight channel's largest value lands on 36 of
e4m3's 448, whatever the channel's values are. FP8 keeps 3 mantissa bits at any magnitude, so which scale
is best depends on where the weights fall between e4m3's points, not on their range. Weights that already
lie on a per-channel int8 grid (checkpoints rebuilt from an INT8 export, such as the ones in
``../shared/data/weights``) are the bad case: many of their grid points round the same way under one scale.

:func:`refit_weight_scales` replaces each per-channel FP8 weight scale with the candidate of least squared
reconstruction error over one octave below full range (``amax / r`` for 64 ``r`` from 448 down to 224;
a power of two changes nothing but the subnormals, so one octave holds every rounding pattern), keeping
ModelOpt's scale where no candidate beats it. The graph
keeps its layout: a float weight, a ``QuantizeLinear`` to ``float8e4m3fn`` with a 1-D per-channel scale, and
its ``DequantizeLinear``, which TensorRT builds as it does ModelOpt's own output (its ``IQuantizeLayer``
takes a scalar or a 1-D per-channel scale and clamps FP8 to [-448, 448]). Activation scales are untouched.

Example:
    >>> changed = refit_weight_scales(onnx.load("yolo26n-seg-fp8.onnx"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from yoloquant._optional import require

__all__ = ["best_scales", "fp8_weight_qdq", "refit_weight_scales"]

FP8_MAX = 448.0
_STEPS = 64  # candidate scales per octave: 1.1% apart


def fp8_weight_qdq(model: Any) -> Iterator[tuple[Any, list[Any]]]:
    """Each ``QuantizeLinear`` of a float weight initializer to FP8 e4m3, with the ``DequantizeLinear`` it feeds."""
    onnx = require("onnx")
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    fp8 = onnx.TensorProto.FLOAT8E4M3FN
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits or len(node.input) < 3:
            continue
        zero_point = inits.get(node.input[2])
        if zero_point is None or zero_point.data_type != fp8:
            continue
        dqs = [n for n in consumers.get(node.output[0], []) if n.op_type == "DequantizeLinear"]
        yield node, dqs


def _axis(node: Any) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def best_scales(weight: np.ndarray, axis: int, start: np.ndarray, *, steps: int = _STEPS) -> np.ndarray:
    """Per-channel (along ``axis``) FP8 e4m3 scales of least squared error for ``weight``, ``start`` unless beaten."""
    ml_dtypes = require("ml_dtypes")
    w = np.moveaxis(weight.astype(np.float32), axis, 0).reshape(weight.shape[axis], -1)
    amax = np.abs(w).max(axis=1, keepdims=True)
    amax = np.where(amax > 0, amax, np.float32(1.0))

    def error(scale: np.ndarray) -> np.ndarray:
        restored = (w / scale).astype(ml_dtypes.float8_e4m3fn).astype(np.float32) * scale
        return np.asarray(((restored - w) ** 2).sum(axis=1))

    best = start.astype(np.float32).copy()
    best_err = error(best[:, None])
    for ratio in FP8_MAX * 2.0 ** (-np.arange(steps) / steps):
        scale = (amax / ratio).astype(np.float32)
        err = error(scale)
        better = err < best_err
        best_err[better] = err[better]
        best[better] = scale[better, 0]
    return best


def refit_weight_scales(model: Any, *, steps: int = _STEPS) -> int:
    """Give every per-channel FP8 weight Q/DQ of ``model`` (in place) its least-squared-error scales; the count."""
    numpy_helper = require("onnx").numpy_helper
    inits = {i.name: i for i in model.graph.initializer}
    changed = 0
    for quant, dequants in fp8_weight_qdq(model):
        scale_names = {quant.input[1], *(dq.input[1] for dq in dequants)}
        old = numpy_helper.to_array(inits[quant.input[1]])
        if old.ndim != 1 or any(name not in inits for name in scale_names):
            continue  # per-tensor or computed scales: left as ModelOpt wrote them
        weight = numpy_helper.to_array(inits[quant.input[0]])
        scales = best_scales(weight, _axis(quant), old, steps=steps).astype(old.dtype)
        for name in scale_names:
            inits[name].CopyFrom(numpy_helper.from_array(scales, name))
        changed += 1
    return changed
