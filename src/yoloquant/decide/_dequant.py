"""Make nodes of a Q/DQ model truly float: read the float tensors instead of their Q/DQ copies.

``nodes_to_exclude`` in ONNX Runtime's quantizer keeps a node's kernel float, but the node still reads
its inputs through the Q/DQ pair of a quantized producer, and excluding a node changes how its
neighbours are quantized: keeping a group float that way measured *worse* than full INT8 on YOLOv8n
for several groups. Here every input of a float node that comes through ``DequantizeLinear`` is
rewired to the tensor before quantization (an activation's ``QuantizeLinear`` input, or the float
weight / bias of the source model); Q/DQ nodes nobody reads any more are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["dequantize_nodes"]


def dequantize_nodes(qdq: Any, source: Any, names: Iterable[str], *, float_readers: Iterable[str] = ()) -> Any:
    """Return ``qdq`` (an ``onnx.ModelProto``, changed in place) with the named nodes reading float inputs.

    Args:
        qdq: The quantized model.
        source: The float model it was quantized from (for the float weights and biases).
        names: Nodes to make float.
        float_readers: Nodes already float (e.g. the decode path) that should read a made-float node's
            output directly instead of through its Q/DQ pair.
    """
    graph = qdq.graph
    wanted = set(names)
    producers = {o: n for n in graph.node for o in n.output}
    inits = {i.name for i in graph.initializer}
    float_inits = {i.name: i for i in source.graph.initializer}
    readers = set(float_readers)
    added: set[str] = set()
    for node in graph.node:
        if node.name not in wanted and node.name not in readers:
            continue
        for k, tensor in enumerate(node.input):
            dq = producers.get(tensor)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            src = dq.input[0]
            q = producers.get(src)
            if node.name not in wanted:  # an already-float reader: only outputs of made-float nodes
                origin = producers.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
                if origin is not None and origin.name in wanted:
                    node.input[k] = q.input[0]  # type: ignore[union-attr]
                continue
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[k] = q.input[0]
            elif src in inits and src.removesuffix("_quantized") in float_inits:
                name = f"{src.removesuffix('_quantized')}__float"
                if name not in added:
                    init = graph.initializer.add()
                    init.CopyFrom(float_inits[src.removesuffix("_quantized")])
                    init.name = name
                    added.add(name)
                node.input[k] = name
    _prune(graph)
    return qdq


def _prune(graph: Any) -> None:
    """Drop nodes whose outputs nobody reads (repeatedly), then initializers nobody reads."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
