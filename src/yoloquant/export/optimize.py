"""Graph rewrites applied after export that keep outputs identical and make ONNX Runtime faster."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from yoloquant._optional import require

__all__ = ["rewrite_dfl_softmax", "slices_to_split"]


def _attr(node: Any, name: str) -> Any:
    onnx = require("onnx")
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def _set_attr(node: Any, name: str, value: Any) -> None:
    onnx = require("onnx")
    for a in node.attribute:
        if a.name == name:
            a.CopyFrom(onnx.helper.make_attribute(name, value))


def _projection(conv: Any, inits: dict[str, Any]) -> np.ndarray | None:
    """The [C, 1] weights of a bias-free 1x1, 1-output-channel, ungrouped conv, else None."""
    onnx = require("onnx")
    if conv.op_type != "Conv" or len(conv.input) != 2 or conv.input[1] not in inits:
        return None
    w = onnx.numpy_helper.to_array(inits[conv.input[1]])
    if w.ndim != 4 or w.shape[0] != 1 or w.shape[2:] != (1, 1) or (_attr(conv, "group") or 1) != 1:
        return None
    return np.ascontiguousarray(w.reshape(-1, 1).astype(np.float32))


def rewrite_dfl_softmax(model: Any) -> bool:
    """Run the DFL's softmax over the last axis and its projection as a MatMul. Returns whether it changed.

    Ultralytics exports the DFL as ``Reshape [B,4,C,A] -> Transpose(0,2,1,3) -> Softmax(axis=1) ->
    Conv(1x1, C->1)``. ONNX Runtime's CPU provider runs a softmax over a non-last axis by transposing
    around it, which took ~15% of YOLOv8n's INT8 latency. ``Transpose(0,1,3,2) -> Softmax(-1) ->
    MatMul([C,1])`` computes the same numbers in the same element order for the following Reshape.
    """
    onnx = require("onnx")
    graph = model.graph
    producers = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {i.name: i for i in graph.initializer}
    changed = False
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        transpose = producers.get(softmax.input[0])
        users = consumers.get(softmax.output[0], [])
        if transpose is None or transpose.op_type != "Transpose" or len(users) != 1:
            continue
        weights = _projection(users[0], inits)
        if list(_attr(transpose, "perm") or []) != [0, 2, 1, 3] or _attr(softmax, "axis") != 1 or weights is None:
            continue
        conv = users[0]
        _set_attr(transpose, "perm", [0, 1, 3, 2])
        _set_attr(softmax, "axis", -1)
        proj = f"{conv.name}/projection"
        graph.initializer.append(onnx.numpy_helper.from_array(weights, proj))
        matmul = onnx.helper.make_node(
            "MatMul", [softmax.output[0], proj], list(conv.output), name=f"{conv.name}/MatMul"
        )
        index = list(graph.node).index(conv)
        graph.node.remove(conv)
        graph.node.insert(index, matmul)
        stale = {transpose.output[0], softmax.output[0], *conv.output}
        kept = [v for v in graph.value_info if v.name not in stale]
        del graph.value_info[:]
        graph.value_info.extend(kept)
        changed = True
    return changed


def _const_ints(name: str, inits: dict[str, Any], producers: dict[str, Any]) -> list[int] | None:
    numpy_helper = require("onnx.numpy_helper")
    if name in inits:
        return [int(v) for v in numpy_helper.to_array(inits[name]).reshape(-1)]
    node = producers.get(name)
    if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
        return [int(v) for v in numpy_helper.to_array(node.attribute[0].t).reshape(-1)]
    return None


def _slice_range(node: Any, inits: dict[str, Any], producers: dict[str, Any]) -> tuple[int, int, int] | None:
    """(axis, start, end) of a one-axis, unit-step Slice with constant bounds, else None."""
    if node.op_type != "Slice" or len(node.input) < 4:
        return None
    values = [_const_ints(name, inits, producers) for name in node.input[1:]]
    if any(v is None or len(v) != 1 for v in values) or (len(values) == 4 and values[3] != [1]):
        return None
    (start,), (end,), (axis,) = values[0], values[1], values[2]  # type: ignore[misc]
    return axis, start, end


def slices_to_split(model: Any) -> bool:
    """Replace three or more Slices that tile one axis of a tensor with one Split. Returns whether it changed.

    YOLO26's seg / pose end-to-end heads cut ``[B, A, 4 + classes + extra]`` into boxes, scores and mask
    coefficients (keypoints) with three Slices. OpenVINO 2025's conversion regroups them and then fails
    shape inference on the top-k ``GatherElements`` that reads the boxes ("Shapes [1,8400,116] and
    [1,300,4] are not consistent"); an explicit Split of the same ranges converts, and computes the same
    values in every runtime. Two Slices (the detection head) convert as they are and are left alone.
    """
    onnx = require("onnx")
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {out: n for n in graph.node for out in n.output}
    groups: dict[tuple[str, int], list[tuple[int, int, Any]]] = {}
    for node in graph.node:
        found = _slice_range(node, inits, producers)
        if found is not None:
            groups.setdefault((node.input[0], found[0]), []).append((found[1], found[2], node))
    shapes = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    changed = False
    for (data, axis), members in groups.items():
        members.sort(key=lambda m: m[0])
        dims = shapes[data].type.tensor_type.shape.dim if data in shapes else []
        if len(members) < 3 or not dims or not dims[axis].HasField("dim_value"):
            continue
        bounds = [(start, end) for start, end, _ in members]
        contiguous = all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
        if bounds[0][0] != 0 or not contiguous or bounds[-1][1] != dims[axis].dim_value:
            continue
        sizes = f"{members[0][2].name}/split_sizes"
        sizes_init = onnx.numpy_helper.from_array(np.array([e - s for s, e in bounds], dtype=np.int64), sizes)
        graph.initializer.append(sizes_init)
        split = onnx.helper.make_node(
            "Split", [data, sizes], [m[2].output[0] for m in members], name=f"{members[0][2].name}/split", axis=axis
        )
        first = min(list(graph.node).index(m[2]) for m in members)
        for _, _, node in members:
            graph.node.remove(node)
        graph.node.insert(first, split)
        changed = True
    return changed
