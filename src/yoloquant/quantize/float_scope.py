"""What stays float when a YOLO detector is quantized: one :class:`FloatScope`, the same in every quantizer.

The parts are found from the graph's structure with :mod:`yoloquant.quantize.graph`, never from
hard-coded names, so a scope works on YOLOv8, YOLO11 and YOLO26 of any size:

- ``decode_path``: the head's decode path (DFL softmax and projection conv, anchor arithmetic, class
  sigmoid, end-to-end top-k). Its tensors mix box pixels (0-640) with class scores (0-1): one 8-bit
  scale over both zeroes the scores, so every preset but ``nothing`` keeps it float.
- ``head_convs``: the head's box / class output convs (what NNCF's and Ultralytics' INT8 exports keep float).
- ``first_conv``: the stem conv that reads the image.
- ``proto_branch``: a segmentation head's mask-prototype branch (every node only the prototype output depends
  on: YOLO26's ``Proto26`` refine / fuse convs, the upsampling, the prototype convs); nothing in other tasks.
  The mask-coefficient convs (seg) and keypoint convs (pose) are head output convs, and the keypoint decode is
  decode path, so ``head_convs`` and ``decode_path`` cover them.
- ``proto_fusion``: only the prototype branch's multi-scale fusion (YOLO26's ``Proto26`` refine convs, resizes,
  adds and ``feat_fuse`` conv block, found by :func:`~yoloquant.quantize.graph.prototype_fusion`); its upsampling
  and full-resolution prototype convs are quantized. ``FloatScope(head_convs=True, proto_fusion=True)`` is the
  CPU scope between ``head`` and head convs alone: on YOLO26n-seg with NNCF it measured -1.05 mask points on the
  tuning images (``head`` -1.14, head convs alone -1.57) at a fraction of ``head``'s latency (docs/tasks.md).
- ``nodes`` / ``op_types``: more nodes, by name regex (``re.search``) or op type.

The presets, by name (``quantize(keep_float="head")``) or classmethod (``FloatScope.head()``):
``nothing``, ``decode``, ``head`` (decode path + head convs + a seg head's prototype branch), ``head+first``
(``head`` + first conv) and ``head+fusion`` (decode path + head convs + a seg head's prototype fusion). The
prototype branch is part of the head (Ultralytics' ``Segment`` module holds it): keeping it float took NNCF
INT8's mask mAP50-95 drop on YOLO26n-seg from -1.57 to -1.14 points (coco128 images 64-127, docs/quantizers.md);
detection and pose models have no such nodes, so their presets are unchanged.

Example:
    >>> FloatScope.parse("head+first") == FloatScope.head_and_first()
    True
    >>> FloatScope.decode().node_names(onnx.load("yolov8n.onnx"))[:1]  # doctest: +SKIP
    ('/model.22/dfl/Reshape',)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from yoloquant.errors import ConfigError

__all__ = ["PRESETS", "FloatScope"]


@dataclass(frozen=True, kw_only=True)
class FloatScope:
    """Which parts of a YOLO detector stay float (FP32, or the model's high precision).

    Attributes:
        decode_path: The head's decode path.
        head_convs: The head's box / class output convs.
        first_conv: The stem conv that reads the image.
        proto_branch: A segmentation head's mask-prototype branch (no nodes in detection and pose models).
        proto_fusion: Only the prototype branch's multi-scale fusion, before its upsampling (none in YOLOv8's
            ``Proto``, which fuses nothing); implied by ``proto_branch``.
        nodes: More node-name regexes (``re.search``).
        op_types: Op types kept float wherever they are, e.g. ``("Softmax",)``.
    """

    decode_path: bool = True
    head_convs: bool = False
    first_conv: bool = False
    proto_branch: bool = False
    proto_fusion: bool = False
    nodes: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from yoloquant.quantize.graph import check_patterns

        object.__setattr__(self, "nodes", _strings(self.nodes, "nodes"))
        object.__setattr__(self, "op_types", _strings(self.op_types, "op_types"))
        check_patterns(self.nodes)

    @classmethod
    def nothing(cls) -> FloatScope:
        """Keep nothing float on purpose: the quantizer quantizes every op it knows."""
        return cls(decode_path=False)

    @classmethod
    def decode(cls) -> FloatScope:
        """The decode path only: ONNX Runtime's, NNCF's and Brevitas' default."""
        return cls()

    @classmethod
    def head(cls) -> FloatScope:
        """The decode path, the head's output convs and a seg head's prototype branch."""
        return cls(head_convs=True, proto_branch=True)

    @classmethod
    def head_and_first(cls) -> FloatScope:
        """``head`` plus the stem conv (ModelOpt's default)."""
        return cls(head_convs=True, first_conv=True, proto_branch=True)

    @classmethod
    def head_and_fusion(cls) -> FloatScope:
        """Head convs plus a seg head's prototype fusion only (its 160x160 convs quantized): the CPU INT8 scope
        chosen for YOLO26n-seg on the tuning images (docs/tasks.md); the same as ``head`` for other heads but
        for their (absent) prototype branch."""
        return cls(head_convs=True, proto_fusion=True)

    @classmethod
    def parse(cls, value: str | FloatScope | dict[str, Any]) -> FloatScope:
        """A scope from a preset name, a ``to_dict()`` mapping (a report's config) or a scope."""
        if isinstance(value, FloatScope):
            return value
        if isinstance(value, dict):
            return cls(**value)
        if isinstance(value, str) and value.lower() in PRESETS:
            return PRESETS[value.lower()]
        if value == "none":
            msg = (
                "keep_float='none' is gone: it kept the decode float in ONNX Runtime, NNCF and Brevitas but "
                "nothing in ModelOpt; pass keep_float='decode' (the former) or keep_float='nothing' (the latter)"
            )
            raise ConfigError(msg)
        msg = f"unknown keep_float {value!r}; pass a FloatScope or one of: {', '.join(PRESETS)}"
        raise ConfigError(msg)

    @property
    def preset(self) -> str | None:
        """The preset name this scope equals, or None for a custom scope."""
        return next((name for name, scope in PRESETS.items() if scope == self), None)

    def with_nodes(self, *patterns: str) -> FloatScope:
        """This scope with more node-name regexes."""
        return dataclasses.replace(self, nodes=(*self.nodes, *patterns))

    def node_names(self, model: Any) -> tuple[str, ...]:
        """Names of the nodes this scope keeps float in ``model`` (an ``onnx.ModelProto``), in graph order."""
        from yoloquant.quantize import graph

        head = graph.find_head(model)
        wanted: set[str] = set(head.decode) if self.decode_path else set()
        wanted.update(head.output_convs if self.head_convs else ())
        wanted.update(graph.first_convs(model) if self.first_conv else ())
        wanted.update(graph.prototype_branch(model) if self.proto_branch else ())
        wanted.update(graph.prototype_fusion(model) if self.proto_fusion and not self.proto_branch else ())
        wanted.update(graph.match_nodes(model, self.nodes))
        wanted.update(n.name for n in model.graph.node if n.op_type in self.op_types)
        return tuple(n.name for n in model.graph.node if n.name in wanted)

    def describe(self) -> str:
        """The preset name, or the parts: ``decode_path+head_convs, nodes ['/model.9/']``."""
        if self.preset:
            return self.preset
        flags = ("decode_path", "head_convs", "first_conv", "proto_branch", "proto_fusion")
        parts = [p for p in flags if getattr(self, p)] or ["nothing"]
        extra = [f"{k} {list(v)}" for k, v in (("nodes", self.nodes), ("op_types", self.op_types)) if v]
        return ", ".join(["+".join(parts), *extra])

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _strings(value: object, option: str) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):  # type: ignore[attr-defined]
        msg = f"FloatScope.{option} takes a tuple of strings, got {value!r}"
        raise ConfigError(msg)
    return tuple(value)  # type: ignore[arg-type]


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


PRESETS: dict[str, FloatScope] = {
    "nothing": FloatScope(decode_path=False),
    "decode": FloatScope(),
    "head": FloatScope(head_convs=True, proto_branch=True),
    "head+first": FloatScope(head_convs=True, first_conv=True, proto_branch=True),
    "head+fusion": FloatScope(head_convs=True, proto_fusion=True),
}
