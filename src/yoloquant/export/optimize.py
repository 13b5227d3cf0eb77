"""Graph rewrites applied after export that keep outputs identical and make ONNX Runtime faster."""

from __future__ import annotations

from typing import Any

import numpy as np

from yoloquant._optional import require

__all__ = ["rewrite_dfl_softmax"]


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
