"""Quantizable nodes of a YOLO ONNX graph in groups that are kept float or quantized together.

- ``conv``: each Conv with its SiLU (the Sigmoid and Mul that read the conv's output); the other
  quantizable ops of a block (Split, Add, Concat, MaxPool, Resize) form one extra group per block.
- ``block``: everything under one top-level module (``/model.N/``, a C2f, SPPF or Conv block); the
  Detect head's block is split per branch (``/model.22/cv2.0/`` ...), since it holds six of them.

Example:
    >>> groups = find_groups(onnx.load("yolov8n.onnx"), quantizable, "block")  # doctest: +SKIP
    >>> groups[0].name, groups[0].nodes[:1]  # doctest: +SKIP
    ('model.0', ('/model.0/conv/Conv',))
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from yoloquant.quantize import graph

__all__ = ["Granularity", "LayerGroup", "find_groups"]


class Granularity(StrEnum):
    """How quantizable nodes are grouped for sensitivity analysis and mixed precision."""

    CONV = "conv"
    BLOCK = "block"


@dataclass(frozen=True)
class LayerGroup:
    """Nodes that are quantized or kept float together.

    Attributes:
        name: Readable name (``/model.2/m.0/cv1`` for a conv, ``model.2`` for a block).
        nodes: Node names in graph order.
        ops: op_type of each node, in the same order.
    """

    name: str
    nodes: tuple[str, ...]
    ops: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "nodes": list(self.nodes), "ops": list(self.ops)}


def _block(name: str, head_blocks: frozenset[str]) -> str:
    parts = [p for p in name.split("/") if p]
    if len(parts) < 2:
        return name
    if parts[0] in head_blocks and len(parts) >= 3:
        return f"{parts[0]}/{parts[1]}"
    return parts[0]


def _conv_name(name: str) -> str:
    for suffix in ("/Conv", "/conv"):
        name = name.removesuffix(suffix)
    return name or "conv"


def _silu_of(conv: Any, consumers: dict[str, list[Any]], wanted: set[str]) -> list[Any]:
    """The Sigmoid and Mul of ``x * sigmoid(x)`` on the conv's output, when both are quantizable."""
    out = conv.output[0]
    sigmoids = [n for n in consumers.get(out, []) if n.op_type == "Sigmoid" and n.name in wanted]
    for sig in sigmoids:
        muls = [
            n for n in consumers.get(sig.output[0], []) if n.op_type == "Mul" and n.name in wanted and out in n.input
        ]
        if muls:
            return [sig, muls[0]]
    return []


def find_groups(model: Any, quantizable: Iterable[str], granularity: Granularity | str) -> tuple[LayerGroup, ...]:
    """Partition the ``quantizable`` node names of ``model`` (an ``onnx.ModelProto``) into groups.

    Every quantizable node lands in exactly one group; groups come in graph order of their first node.
    """
    granularity = Granularity(granularity)
    wanted = set(quantizable)
    nodes = [n for n in model.graph.node if n.name in wanted]
    head_blocks = frozenset(_block(c, frozenset()) for c in graph.find_head(model).output_convs)
    members: dict[str, list[Any]] = {}
    if granularity is Granularity.BLOCK:
        for n in nodes:
            members.setdefault(_block(n.name, head_blocks), []).append(n)
    else:
        consumers: dict[str, list[Any]] = {}
        for n in model.graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        taken: set[str] = set()
        for n in nodes:
            if n.op_type == "Conv":
                unit = [n, *_silu_of(n, consumers, wanted)]
                members[_conv_name(n.name)] = unit
                taken.update(u.name for u in unit)
        for n in nodes:
            if n.name not in taken:
                members.setdefault(f"{_block(n.name, head_blocks)} (other ops)", []).append(n)
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    groups = [
        LayerGroup(
            name=name,
            nodes=tuple(m.name for m in sorted(unit, key=lambda m: order[m.name])),
            ops=tuple(m.op_type for m in sorted(unit, key=lambda m: order[m.name])),
        )
        for name, unit in members.items()
    ]
    return tuple(sorted(groups, key=lambda g: order[g.nodes[0]]))
