"""Find YOLO structure in an ONNX graph: the head's output convs, the decode path, the first conv.

Everything is derived from the graph's structure, never from Ultralytics' node names, so it works on
YOLOv8, YOLO11 and YOLO26 of any size (and on models re-exported under other names).

The decode path is every node between the graph outputs and the last feature convs: reshapes and
concats of the raw head outputs, the DFL (softmax + the fixed 1-output-channel projection conv), the
anchor arithmetic that turns distances into pixel boxes, the class sigmoid, and for end-to-end heads
the top-k selection. Its tensors mix box pixels (0-640) with class scores (0-1), so a single 8-bit
scale over them destroys the scores: it has to stay float.

Example:
    >>> head = find_head(onnx.load("yolov8n.onnx"))  # doctest: +SKIP
    >>> len(head.output_convs), "Softmax" in head.decode_ops  # doctest: +SKIP
    (6, True)
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from yoloquant.errors import ConfigError

__all__ = [
    "QDQ_OPS",
    "HeadNodes",
    "check_patterns",
    "classify_qdq_nodes",
    "copy_metadata",
    "find_head",
    "first_convs",
    "group_by_op",
    "match_nodes",
    "prototype_branch",
]

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
_WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


@dataclass(frozen=True)
class HeadNodes:
    """Node names of a detector's head, found by walking back from the graph outputs.

    Attributes:
        output_convs: The last feature convs: the box (cv2.*.2) and class (cv3.*.2) output convs.
        decode: Every node after them up to the graph outputs, DFL and anchor decode included.
        decode_ops: op_type of each decode node, in the same order.
    """

    output_convs: tuple[str, ...]
    decode: tuple[str, ...]
    decode_ops: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        """The output convs and the decode path together."""
        return self.output_convs + self.decode


def _producers(graph: Any) -> dict[str, Any]:
    return {out: node for node in graph.node for out in node.output}


def _initializers(graph: Any) -> dict[str, Any]:
    return {init.name: init for init in graph.initializer}


def _is_dfl_conv(node: Any, producers: Mapping[str, Any]) -> bool:
    """The DFL projection: a bias-free conv (or the MatMul yoloquant's exporter makes of it) fed by a Softmax.

    It turns bin probabilities into a distance.
    """
    if node.op_type not in ("Conv", "MatMul") or len(node.input) > 2:
        return False
    src = producers.get(node.input[0])
    while src is not None and src.op_type in ("Transpose", "Reshape"):
        src = producers.get(src.input[0])
    return src is not None and src.op_type == "Softmax"


def find_head(model: Any) -> HeadNodes:
    """Walk back from every graph output and stop at the first feature conv on each path.

    Args:
        model: An ``onnx.ModelProto`` of a float YOLO detector.

    Returns:
        The head's output convs and the decode nodes, in graph order.
    """
    graph = model.graph
    producers = _producers(graph)
    convs: set[str] = set()
    decode: set[str] = set()
    stack = [producers[o.name] for o in graph.output if o.name in producers]
    while stack:
        node = stack.pop()
        if node.name in convs or node.name in decode:
            continue
        if node.op_type in _WEIGHTED_OPS and not _is_dfl_conv(node, producers):
            convs.add(node.name)
            continue
        decode.add(node.name)
        stack.extend(producers[i] for i in node.input if i in producers)
    order = [n for n in graph.node if n.name in decode]
    return HeadNodes(
        output_convs=tuple(n.name for n in graph.node if n.name in convs),
        decode=tuple(n.name for n in order),
        decode_ops=tuple(n.op_type for n in order),
    )


def _ancestors(producers: Mapping[str, Any], tensors: Iterable[str]) -> set[str]:
    """Names of every node the given tensors are computed from."""
    seen: set[str] = set()
    stack = [producers[t] for t in tensors if t in producers]
    while stack:
        node = stack.pop()
        if node.name not in seen:
            seen.add(node.name)
            stack.extend(producers[i] for i in node.input if i in producers)
    return seen


def prototype_branch(model: Any) -> tuple[str, ...]:
    """Names of the nodes only the later graph outputs depend on: a segmentation head's prototype branch.

    A seg model's first output holds boxes, scores and mask coefficients and its second the mask prototypes;
    the nodes that feed the prototypes but not the first output are the prototype module (YOLOv8 ``Proto``:
    conv, upsampling ConvTranspose, convs; YOLO26 ``Proto26``: its multi-scale refine and fuse convs too). A
    model with one output (detection, pose) has none.

    Example:
        >>> prototype_branch(onnx.load("yolo26n-seg.onnx"))[:1]  # doctest: +SKIP
        ('/model.23/proto/feat_refine.0/conv/Conv',)
    """
    graph = model.graph
    outputs = [o.name for o in graph.output]
    if len(outputs) < 2:
        return ()
    producers = _producers(graph)
    only_later = _ancestors(producers, outputs[1:]) - _ancestors(producers, outputs[:1])
    return tuple(n.name for n in graph.node if n.name in only_later)


def prototype_fusion(model: Any) -> tuple[str, ...]:
    """Names of a prototype branch's multi-scale fusion: every branch node up to its last merge, and the conv after.

    YOLO26's ``Proto26`` refines two lower-resolution feature maps (1x1 convs), resizes them to the branch's
    input resolution and adds them in (``Add``); the ``feat_fuse`` conv block (conv and SiLU) then mixes the
    sum. These are the branch's nodes the last merge (an ``Add`` / ``Concat`` of two computed tensors) is computed
    from, the merge, and the conv block that reads it. The upsampling and the full-resolution prototype convs
    after it are not. YOLOv8's ``Proto`` merges nothing: none.

    Example:
        >>> prototype_fusion(onnx.load("yolo26n-seg.onnx"))[-1]  # doctest: +SKIP
        '/model.23/proto/feat_fuse/act/Mul'
    """
    branch = set(prototype_branch(model))
    producers = _producers(model.graph)
    merges = [
        n
        for n in model.graph.node
        if n.name in branch
        and n.op_type in ("Add", "Concat")
        and sum(1 for i in n.input if i in producers and producers[i].op_type != "Constant") >= 2
    ]
    if not merges:
        return ()
    last = merges[-1]
    wanted = (_ancestors(producers, last.input) & branch) | {last.name}
    wanted |= _conv_block_after(model, last.output[0], branch)
    return tuple(n.name for n in model.graph.node if n.name in wanted)


def _conv_block_after(model: Any, tensor: str, branch: set[str]) -> set[str]:
    """The conv that reads ``tensor`` and its activation (``Sigmoid`` + ``Mul``: SiLU), within ``branch``."""
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in model.graph.node:
        for i in node.input:
            consumers[i].append(node)
    convs = [n for n in consumers[tensor] if n.op_type == "Conv" and n.name in branch]
    block: set[str] = set()
    for conv in convs[:1]:
        block.add(conv.name)
        act = [n for n in consumers[conv.output[0]] if n.op_type in ("Sigmoid", "Mul") and n.name in branch]
        block.update(n.name for n in act)
        for sig in (n for n in act if n.op_type == "Sigmoid"):
            block.update(n.name for n in consumers[sig.output[0]] if n.op_type == "Mul" and n.name in branch)
    return block


def first_convs(model: Any) -> tuple[str, ...]:
    """Names of the convs that read a graph input directly (the stem conv)."""
    inputs = {i.name for i in model.graph.input}
    return tuple(n.name for n in model.graph.node if n.op_type == "Conv" and n.input[0] in inputs)


def match_nodes(model: Any, patterns: Iterable[str]) -> tuple[str, ...]:
    """Names of the nodes whose name matches any of the regexes (``re.search``)."""
    compiled = [re.compile(p) for p in patterns]
    return tuple(n.name for n in model.graph.node if any(c.search(n.name) for c in compiled))


def group_by_op(model: Any, names: Iterable[str]) -> dict[str, list[str]]:
    """``{op_type: [node names]}`` for the given names, in graph order."""
    wanted = set(names)
    out: dict[str, list[str]] = defaultdict(list)
    for node in model.graph.node:
        if node.name in wanted:
            out[node.op_type].append(node.name)
    return dict(out)


def classify_qdq_nodes(model: Any, *, weight_only: bool = False) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Split a Q/DQ (or QCDQ) model's compute nodes into quantized and float ones, by op type.

    A node counts as quantized when its data input comes through a DequantizeLinear (and, for convs
    and matmuls, its weight too): that is the pattern ONNX Runtime fuses into an integer kernel. With
    ``weight_only`` (float activations, as Brevitas W8A16 / W4A16), a conv or matmul counts as quantized
    when its weight comes through a DequantizeLinear, and every other node is float. Q/DQ nodes, the
    Clip of a QCDQ triple (QuantizeLinear -> Clip -> DequantizeLinear) and constant nodes are in neither map.
    """
    graph = model.graph
    producers = _producers(graph)

    def dequantized(tensor: str) -> bool:
        return producers.get(tensor) is not None and producers[tensor].op_type == "DequantizeLinear"

    quantized: dict[str, list[str]] = defaultdict(list)
    floats: dict[str, list[str]] = defaultdict(list)
    for node in graph.node:
        if node.op_type in QDQ_OPS or node.op_type == "Constant" or not node.input or _is_qcdq_clip(node, producers):
            continue
        weighted = node.op_type in _WEIGHTED_OPS
        if weight_only:
            dq = weighted and len(node.input) > 1 and dequantized(node.input[1])
        else:
            dq = all(dequantized(t) for t in [node.input[0]] + (list(node.input[1:2]) if weighted else []))
        (quantized if dq else floats)[node.op_type].append(node.name)
    return dict(quantized), dict(floats)


def _is_qcdq_clip(node: Any, producers: dict[str, Any]) -> bool:
    source = producers.get(node.input[0])
    return bool(node.op_type == "Clip" and source is not None and source.op_type == "QuantizeLinear")


def copy_metadata(source: Any, target: Any) -> None:
    """Carry a float model's metadata_props (names, imgsz, stride, ...) over to its quantized model.

    Quantizers rewrite the graph and drop or replace the metadata; keys of the source win.
    """
    existing = {p.key: p for p in target.metadata_props}
    for prop in source.metadata_props:
        if prop.key in existing:
            existing[prop.key].value = prop.value
        else:
            entry = target.metadata_props.add()
            entry.key, entry.value = prop.key, prop.value


def check_patterns(patterns: Iterable[str]) -> None:
    """Raise ConfigError naming the first node-name pattern that is not a valid regex."""
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            msg = f"node pattern {pattern!r} (FloatScope.nodes) is not a valid regex: {exc}"
            raise ConfigError(msg) from None
