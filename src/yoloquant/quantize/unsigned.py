"""Rewrite a Q/DQ model's int8 symmetric activations as uint8 asymmetric ones, for OpenVINO.

ModelOpt writes TensorRT's layout: int8 activations with zero point 0, float weights behind a
QuantizeLinear. ONNX Runtime's OpenVINO execution provider (onnxruntime-openvino 1.24.1,
OpenVINO 2025.4.1) runs that layout fast but wrong, and the symmetric grid wastes precision;
measured on YOLOv8n, coco128 (docs/modelopt.md):

- OpenVINO mis-executes a *signed* int8 Q/DQ on a Concat output (one per C2f block): mAP50-95
  drops to 0.02. The same grid as uint8 with zero point 128 (the same 256 values) runs correctly.
- SiLU outputs are >= -0.28, so a symmetric range spends half its levels on values that never
  occur. Giving the levels to ``[observed min, ModelOpt's clip]`` halves the step of most activations.

:func:`rewrite_for_openvino` keeps ModelOpt's placement and its calibrated upper clip
(``127 * scale``), moves each activation to uint8 over ``[min on the calibration images, clip]``
(the minimum measured on the float model, like ModelOpt's own calibration), and folds the weight
QuantizeLinear nodes into int8 initializers (the same values ONNX Runtime's QuantizeLinear computes;
the file shrinks ~4x).

Example:
    >>> rewrite_for_openvino(qmodel, float_model, calib)  # doctest: +SKIP
    62
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from yoloquant._optional import require
from yoloquant.artifacts import CalibrationSet
from yoloquant.data.letterbox import normalize_pixels
from yoloquant.errors import QuantizationError

__all__ = [
    "activation_quantizers",
    "fold_weight_quantizers",
    "observed_minima",
    "rewrite_for_openvino",
    "shift_to_uint8",
    "to_uint8",
]

_INT8_LEVELS_UP = 127  # a symmetric int8 grid's upper end, in steps


def _initializers(model: Any) -> dict[str, Any]:
    return {init.name: init for init in model.graph.initializer}


def _value(init: Any) -> np.ndarray:
    return np.asarray(require("onnx").numpy_helper.to_array(init))


def activation_quantizers(model: Any) -> list[Any]:
    """QuantizeLinear nodes on activations with a scalar int8 zero point of 0 (symmetric int8)."""
    inits = _initializers(model)
    found = []
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits or len(node.input) < 3:
            continue
        zero = inits.get(node.input[2])
        if zero is not None and (value := _value(zero)).dtype == np.int8 and value.size == 1 and value.item() == 0:
            found.append(node)
    return found


def observed_minima(model: Any, tensors: Sequence[str], data: CalibrationSet) -> dict[str, float]:
    """The smallest value each tensor takes on the calibration images, run on ONNX Runtime's CPU EP."""
    onnx, ort = require("onnx"), require("onnxruntime")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    feed = probe.graph.input[0].name
    inner = [t for t in dict.fromkeys(tensors) if t != feed]
    missing = sorted(set(inner) - {out for node in probe.graph.node for out in node.output})
    if missing:
        msg = (
            f"{len(missing)} quantized tensors are not in the float model (e.g. {missing[0]!r}); "
            "pass the float model the Q/DQ model was made from"
        )
        raise QuantizationError(msg)
    outputs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in inner if t not in outputs
    )
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    lows = dict.fromkeys(tensors, np.inf)
    for i in range(len(data)):
        image = normalize_pixels(data.images[i : i + 1])
        values = dict(zip(inner, session.run(inner, {feed: image}), strict=True))
        values[feed] = image
        for name in lows:
            lows[name] = min(lows[name], float(values[name].min()))
    return lows


def to_uint8(model: Any, minima: Mapping[str, float]) -> int:
    """Move every symmetric int8 activation Q/DQ pair to uint8 over ``[min(minimum, 0), 127 * scale]``.

    The upper clip stays where calibration put it; zero stays exactly representable. The Q node and
    the DequantizeLinear nodes reading it get new scale / zero-point initializers. Returns the count.
    """
    onnx = require("onnx")
    graph = model.graph
    inits = _initializers(model)
    quantizers = activation_quantizers(model)
    for q in quantizers:
        top = _INT8_LEVELS_UP * float(_value(inits[q.input[1]]))
        low = min(minima[q.input[0]], 0.0)
        scale = (top - low) / 255.0
        zero = int(np.clip(np.rint(-low / scale), 0, 255))
        names = (f"{q.output[0]}_uint8_scale", f"{q.output[0]}_uint8_zero_point")
        graph.initializer.extend(
            [
                onnx.numpy_helper.from_array(np.array(scale, np.float32), names[0]),
                onnx.numpy_helper.from_array(np.array(zero, np.uint8), names[1]),
            ]
        )
        for node in [q, *(n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0])]:
            node.input[1], node.input[2] = names
    _drop_unused_initializers(graph)
    return len(quantizers)


def shift_to_uint8(model: Any) -> int:
    """Move every int8 activation Q/DQ pair with a zero point (NNCF's asymmetric layout) to uint8, exactly.

    ``q_u8 = q_s8 + 128`` with ``zero_u8 = zero_s8 + 128``: the same 256 grid values, so ONNX Runtime
    computes the same outputs bit for bit, while OpenVINO's CPU plugin, which mis-executes signed int8
    activations, runs the uint8 copy correctly. Weight quantizers (constant inputs) are left alone.
    Returns the count.
    """
    onnx = require("onnx")
    graph = model.graph
    inits = _initializers(model)
    moved: set[str] = set()
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in inits or len(q.input) < 3 or q.input[2] not in inits:
            continue
        zero = _value(inits[q.input[2]])
        if zero.dtype != np.int8:
            continue
        name = f"{q.output[0]}_uint8_zero_point"
        graph.initializer.append(onnx.numpy_helper.from_array((zero.astype(np.int16) + 128).astype(np.uint8), name))
        for node in [q, *(n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0])]:
            node.input[2] = name
        moved.add(q.output[0])
    for info in graph.value_info:  # a stale int8 type on a moved tensor makes the model invalid
        if info.name in moved:
            info.type.tensor_type.elem_type = onnx.TensorProto.UINT8
    _drop_unused_initializers(graph)
    return len(moved)


def fold_weight_quantizers(model: Any) -> int:
    """Replace each QuantizeLinear of a constant (int8 zero point) by its int8 result; returns the count.

    Rounds half to even like ONNX Runtime's QuantizeLinear, so the dequantized weights do not change.
    """
    onnx = require("onnx")
    graph = model.graph
    inits = _initializers(model)
    folded = []
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] not in inits or len(q.input) < 3:
            continue
        zero = _value(inits[q.input[2]])
        if zero.dtype != np.int8:
            continue
        weight, scale = _value(inits[q.input[0]]), _value(inits[q.input[1]])
        axis = next((a.i for a in q.attribute if a.name == "axis"), 1)
        shape = [1] * weight.ndim
        if scale.size > 1:
            shape[axis] = -1
        ints = np.rint(weight / scale.reshape(shape)) + zero.reshape(shape).astype(np.float32)
        graph.initializer.append(onnx.numpy_helper.from_array(np.clip(ints, -128, 127).astype(np.int8), q.output[0]))
        folded.append(q)
    for q in folded:
        graph.node.remove(q)
    _drop_unused_initializers(graph)
    return len(folded)


def rewrite_for_openvino(model: Any, source: Any, data: CalibrationSet) -> int:
    """Fold ``model``'s weight quantizers and move its activations to uint8, in place.

    Args:
        model: The Q/DQ ``onnx.ModelProto`` (int8 symmetric activations, e.g. ModelOpt's).
        source: The float model it was made from, where the activations' minima are measured.
        data: The calibration images.

    Returns:
        The number of activation Q/DQ pairs moved.
    """
    fold_weight_quantizers(model)
    tensors = [q.input[0] for q in activation_quantizers(model)]
    return to_uint8(model, observed_minima(source, tensors, data))


def _drop_unused_initializers(graph: Any) -> None:
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)
