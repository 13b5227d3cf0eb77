"""FP32 -> FP16 ONNX for GPUs, with float32 inputs / outputs and a float32 decode path.

Which nodes become FP16 (a small converter on ``onnx.helper``, no extra dependency):

* only nodes that compute on the image data: those downstream of the graph input. Shape arithmetic
  (``Shape`` and what follows from it, anchor grids built from shapes) keeps its types;
* not the head's decode path (``keep_float.decode_path``, found by :func:`yoloquant.quantize.graph.find_head`
  walking back from the outputs to the last feature convs): the DFL ``Softmax`` and its projection
  conv, the anchor / stride arithmetic, the class ``Sigmoid``, the end-to-end head's top-k. Box
  coordinates up to 640 px carry only ~0.25-0.5 px of precision in FP16, so the decode stays FP32;
* nor ops in ``keep_float.op_types`` / nodes matching ``keep_float.nodes``, nor (``keep_downstream``)
  anything computed from them (the head convs and the stem conv of ``keep_float`` stay FP32 alone).
  ``Sigmoid`` is not a default there: every SiLU of the backbone is a ``Sigmoid`` + ``Mul``, and
  keeping those FP32 would keep the whole network FP32;
* float initializers of FP16 nodes are stored as FP16 (a copy when an FP32 node shares them), and a
  ``Cast`` is inserted on every edge that crosses between the two regions (one per tensor).

Example:
    >>> converter = Fp16Converter(Fp16Config())
    >>> fp16 = converter.convert(OnnxModel.load("yolov8n.onnx"), Path("runs/fp16"))  # doctest: +SKIP
    >>> fp16.precision.value  # doctest: +SKIP
    'fp16'
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from yoloquant._io import atomic_path
from yoloquant._optional import require
from yoloquant.artifacts import CalibrationSet, OnnxModel, QdqModel
from yoloquant.config import Precision, _Serializable
from yoloquant.errors import QuantizationError
from yoloquant.quantize.float_scope import FloatScope
from yoloquant.quantize.graph import find_head, first_convs, prototype_branch, prototype_fusion
from yoloquant.quantize.registry import register
from yoloquant.vocabulary import renamed_keywords

__all__ = ["Fp16Config", "Fp16Converter"]

# Inputs that must keep their type whatever the node's precision (ONNX type constraints).
_FIXED_INPUTS: dict[str, frozenset[int]] = {
    "Resize": frozenset({1, 2}),  # roi, scales are float32 only by spec for this purpose
    "Upsample": frozenset({1}),
}
# Ops that only move shape information; propagation of "image data" stops at them.
_SHAPE_OPS = frozenset({"Shape", "Size"})


@renamed_keywords()
@dataclass(frozen=True, kw_only=True)
class Fp16Config(_Serializable):
    """What stays FP32 in the FP16 model.

    Attributes:
        keep_float: What stays FP32 (:class:`~yoloquant.quantize.float_scope.FloatScope` or a preset name):
            by default the decode path (DFL softmax, anchors, class sigmoid, top-k) and every ``Softmax``.
        keep_downstream: Also keep FP32 every node computed from a node kept by op type or name.

    Example:
        >>> Fp16Config(keep_float=FloatScope(op_types=("Softmax",))).keep_downstream
        True
    """

    keep_float: FloatScope = field(default_factory=lambda: FloatScope(op_types=("Softmax",)))
    keep_downstream: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_float", FloatScope.parse(self.keep_float))


@dataclass(frozen=True)
class Fp16Converter:
    """Converts an FP32 ONNX detector to FP16 (float32 I/O and decode). No calibration data needed.

    Follows the Quantizer protocol (``name``, ``quantize``); ``convert`` is the same without data.
    """

    config: Fp16Config = Fp16Config()
    name: str = "fp16"
    needs_calibration: ClassVar[bool] = False  # the run gathers no calibration images for it

    def with_progress(self, enabled: bool) -> Self:
        """This converter: it shows no progress."""
        del enabled
        return self

    def quantize(self, model: OnnxModel, data: CalibrationSet | None, out_dir: Path) -> QdqModel:
        """Same as :meth:`convert`; ``data`` is ignored (FP16 needs no calibration)."""
        del data
        return self.convert(model, out_dir)

    def convert(self, model: OnnxModel, out_dir: Path) -> QdqModel:
        """Write ``<stem>-fp16.onnx`` into ``out_dir`` and describe what became FP16."""
        onnx = require("onnx")
        start = time.perf_counter()
        try:
            proto = onnx.load(str(model.path))
        except Exception as exc:  # onnx raises DecodeError / OSError variants
            msg = f"could not read {model.path} for FP16 conversion: {exc}"
            raise QuantizationError(msg, artifact=model.path) from exc
        half, full = _convert(proto, self.config)
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / f"{model.path.stem.removesuffix('-fp32')}-fp16.onnx"
        try:
            onnx.checker.check_model(proto)
            with atomic_path(target) as staged:
                onnx.save(proto, str(staged))
        except Exception as exc:  # onnx.checker.ValidationError and I/O errors
            msg = f"the FP16 model of {model.path} is invalid or could not be written: {exc}"
            raise QuantizationError(msg, artifact=target) from exc
        return QdqModel(
            path=target,
            info=model.info,
            precision=Precision.FP16,
            source=model,
            quantizer=self.name,
            format="fp16",
            config=self.config.to_dict(),
            quantized_nodes=half,
            float_nodes=full,
            seconds=time.perf_counter() - start,
        )


def _data_nodes(graph: Any) -> set[int]:
    """Indices of nodes that compute on the image input (not shape arithmetic)."""
    consumers = _consumers(graph)
    seen: set[int] = set()
    todo = [i for inp in graph.input for i in consumers[inp.name]]
    while todo:
        i = todo.pop()
        if i in seen or graph.node[i].op_type in _SHAPE_OPS:
            continue
        seen.add(i)
        todo.extend(j for out in graph.node[i].output for j in consumers[out])
    return seen


def _kept_fp32(proto: Any, data: set[int], config: Fp16Config) -> set[int]:
    graph = proto.graph
    scope = config.keep_float
    patterns = [re.compile(p) for p in scope.nodes]
    kept = {
        i
        for i in data
        if graph.node[i].op_type in scope.op_types or any(p.search(graph.node[i].name) for p in patterns)
    }
    if config.keep_downstream:
        _add_downstream(graph, data, kept)
    alone = set(find_head(proto).output_convs if scope.head_convs else ())
    alone |= set(first_convs(proto) if scope.first_conv else ())
    alone |= set(prototype_branch(proto) if scope.proto_branch else ())
    alone |= set(prototype_fusion(proto) if scope.proto_fusion else ())
    kept |= {i for i in data if graph.node[i].name in alone}
    if scope.decode_path:
        # find_head's walk back from the outputs also passes through Shape reads of backbone features
        # in dynamic exports: a node that feeds a feature conv is backbone, not decode.
        decode = set(find_head(proto).decode)
        producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
        todo = [i for i in data if graph.node[i].op_type == "Conv" and graph.node[i].name not in decode]
        backbone: set[int] = set()
        while todo:
            i = todo.pop()
            for name in graph.node[i].input:
                j = producer.get(name)
                if j is not None and j in data and j not in backbone:
                    backbone.add(j)
                    todo.append(j)
        kept |= {i for i in data - backbone if graph.node[i].name in decode}
    return kept


def _consumers(graph: Any) -> dict[str, list[int]]:
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers[name].append(i)
    return consumers


def _add_downstream(graph: Any, data: set[int], kept: set[int]) -> None:
    """Add to ``kept`` every data node computed from a node in it."""
    consumers = _consumers(graph)
    todo = list(kept)
    while todo:
        i = todo.pop()
        for out in graph.node[i].output:
            for j in consumers[out]:
                if j in data and j not in kept:
                    kept.add(j)
                    todo.append(j)


def _float_tensors(graph: Any) -> set[str]:
    """Names of float32 tensors (initializers, inputs and typed values) in the graph."""
    onnx = require("onnx")
    inferred = onnx.shape_inference.infer_shapes(onnx.helper.make_model(graph), strict_mode=False).graph
    names = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    for vi in (*inferred.value_info, *inferred.input, *inferred.output):
        if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            names.add(vi.name)
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].t.data_type == onnx.TensorProto.FLOAT:
            names.add(node.output[0])
    return names


def _half_nodes(proto: Any, config: Fp16Config) -> set[int]:
    data = _data_nodes(proto.graph)
    half_idx = data - _kept_fp32(proto, data, config)
    if not half_idx:
        msg = "no node computes on the image input, so nothing can become FP16; is this a YOLO detector?"
        raise QuantizationError(msg)
    return half_idx


def _convert(proto: Any, config: Fp16Config) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Convert ``proto`` in place; returns (fp16 nodes, fp32 nodes) by op type."""
    onnx = require("onnx")
    numpy_helper = require("onnx.numpy_helper")
    graph = proto.graph
    half_idx = _half_nodes(proto, config)
    floats = _float_tensors(graph)
    half_names = {graph.node[i].name for i in half_idx}
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    inits = {t.name: t for t in graph.initializer}
    consumers = _consumers(graph)

    half_inits: dict[str, str] = {}
    casts: dict[tuple[str, int], str] = {}
    new_nodes: list[Any] = []

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            suffix = "fp16" if to == onnx.TensorProto.FLOAT16 else "fp32"
            casts[key] = f"{name}_{suffix}"
            new_nodes.append(onnx.helper.make_node("Cast", [name], [casts[key]], to=to, name=f"{name}_cast_{suffix}"))
        return casts[key]

    def half_initializer(name: str) -> str:
        if name not in half_inits:
            tensor = inits[name]
            values = numpy_helper.to_array(tensor).astype(np.float16)
            only_half = all(j in half_idx for j in consumers[name]) and name not in {o.name for o in graph.output}
            new_name = name if only_half else f"{name}_fp16"
            converted = numpy_helper.from_array(values, new_name)
            if only_half:
                tensor.CopyFrom(converted)
            else:
                graph.initializer.append(converted)
            half_inits[name] = new_name
        return half_inits[name]

    for i in sorted(half_idx):
        node = graph.node[i]
        fixed = _FIXED_INPUTS.get(node.op_type, frozenset())
        for k, name in enumerate(node.input):
            if not name or k in fixed or name not in floats:
                continue
            if name in inits:
                node.input[k] = half_initializer(name)
            elif producer.get(name) not in half_idx:  # graph input, FP32 node or shape arithmetic
                node.input[k] = cast(name, onnx.TensorProto.FLOAT16)
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                    attr.i = onnx.TensorProto.FLOAT16
    _cast_back(graph, half_idx, floats, producer, cast)
    head = [n for n in new_nodes if n.input[0] not in producer or producer[n.input[0]] not in half_idx]
    tail = [n for n in new_nodes if n not in head]
    _rebuild(graph, head, tail, producer)
    del graph.value_info[:]
    return _by_op(graph, half_names, True), _by_op(graph, half_names, False)


def _cast_back(graph: Any, half_idx: set[int], floats: set[str], producer: dict[str, int], cast: Any) -> None:
    """Cast FP16 tensors back to FP32 where FP32 nodes or graph outputs read them."""
    onnx = require("onnx")
    outputs = {o.name for o in graph.output}
    for i, node in enumerate(graph.node):
        if i in half_idx:
            continue
        for k, name in enumerate(node.input):
            if name in floats and producer.get(name) in half_idx:
                node.input[k] = cast(name, onnx.TensorProto.FLOAT)
    for name in outputs:
        if name in floats and producer.get(name) in half_idx:
            # Rename the FP16 producer's output and cast it back to the graph output's name.
            node = graph.node[producer[name]]
            inner = f"{name}_fp16_out"
            node.output[list(node.output).index(name)] = inner
            for other in graph.node:
                other.input[:] = [inner if x == name else x for x in other.input]
            graph.node.append(onnx.helper.make_node("Cast", [inner], [name], to=onnx.TensorProto.FLOAT))


def _rebuild(graph: Any, head: list[Any], tail: list[Any], producer: dict[str, int]) -> None:
    """Insert the new Cast nodes right after their producers, keeping the node list topological."""
    after: dict[int, list[Any]] = defaultdict(list)
    for node in [*head, *tail]:
        after[producer.get(node.input[0], -1)].append(node)
    ordered = list(after[-1])
    for i, node in enumerate(list(graph.node)):
        ordered.append(node)
        ordered.extend(after[i])
    del graph.node[:]
    graph.node.extend(ordered)


def _by_op(graph: Any, half_names: set[str], half: bool) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    names = half_names if half else set(half_names)
    for node in graph.node:
        if node.op_type == "Cast" and node.name.endswith(("_cast_fp16", "_cast_fp32")):
            continue
        if (node.name in names) == half and (half or node.op_type not in _SHAPE_OPS):
            out[node.op_type].append(node.name)
    return dict(out)


register(Fp16Config, Fp16Converter, precision=Precision.FP16)
