"""A tiny ONNX detector stand-in for the TensorRT test doubles: a 1x1 Conv(3 -> 4) with known weights,
optionally with Q/DQ of a chosen element type or FP16 weights, and its numpy reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from yoloquant.artifacts import ModelInfo, OnnxModel, QdqModel
from yoloquant.config import Precision

__all__ = ["INFO", "model", "reference", "tiny_onnx"]

_RNG = np.random.default_rng(0)
W = _RNG.normal(size=(4, 3)).astype(np.float32)
B = _RNG.normal(size=4).astype(np.float32)
INFO = ModelInfo(names={0: "a", 1: "b"}, imgsz=(32, 32))


def reference(x: np.ndarray) -> np.ndarray:
    """A 1x1 convolution by hand."""
    return np.einsum("oc,nchw->nohw", W, x) + B[None, :, None, None]


def tiny_onnx(
    path: Path, *, batch: int | str = 2, hw: int | str = 32, qdq: int | None = None, fp16: bool = False
) -> Path:
    """images [batch, 3, hw, hw] -> 1x1 Conv(3 -> 4) -> output0; optionally Q/DQ of element type ``qdq``
    on the input and the weights, or FP16 weights between two Casts."""
    nodes, inits = [], [helper.make_tensor("b", TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT, [4], B.tolist())]
    x, w = "images", "w"
    if qdq is not None:
        zero = helper.make_tensor("zp", qdq, [], [0])
        inits += [zero, helper.make_tensor("s", TensorProto.FLOAT, [], [0.05])]
        inits.append(helper.make_tensor("wq", qdq, [4, 3, 1, 1], np.zeros(12, np.int64).tolist()))
        nodes += [
            helper.make_node("QuantizeLinear", ["images", "s", "zp"], ["xq"], name="q_in"),
            helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xdq"], name="dq_in"),
            helper.make_node("DequantizeLinear", ["wq", "s", "zp"], ["wdq"], name="dq_w"),
        ]
        x, w = "xdq", "wdq"
    else:
        kind = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
        inits.append(helper.make_tensor("w", kind, [4, 3, 1, 1], W.reshape(-1).tolist()))
    if fp16:
        nodes.append(helper.make_node("Cast", [x], ["x16"], to=TensorProto.FLOAT16, name="cast_in"))
        x = "x16"
    nodes.append(helper.make_node("Conv", [x, w, "b"], ["y" if fp16 else "output0"], name="conv"))
    if fp16:
        nodes.append(helper.make_node("Cast", ["y"], ["output0"], to=TensorProto.FLOAT, name="cast_out"))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, hw, hw])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, 4, hw, hw])],
        initializer=inits,
    )
    opset = 21 if qdq in (TensorProto.INT4, TensorProto.UINT4) else 23 if qdq == TensorProto.FLOAT4E2M1 else 19
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    # a newer onnx writes a newer IR version than an older ONNX Runtime reads (the GPU machine: onnx 1.23 writes
    # IR 14, its onnxruntime 1.30 reads up to 13); IR 10 holds opset 19-21 and IR 11 opset 23
    proto.ir_version = min(proto.ir_version, 11 if opset > 21 else 10)
    onnx.save(proto, str(path))
    return path


def model(path: Path, **kwargs: Any) -> OnnxModel:
    tiny_onnx(path, **kwargs)
    dynamic = kwargs.get("batch") == "batch"
    info = ModelInfo(names=INFO.names, imgsz=INFO.imgsz, dynamic_batch=dynamic)
    if kwargs.get("qdq") is None and not kwargs.get("fp16"):
        return OnnxModel(path=path, info=info)
    source = OnnxModel(path=path, info=info)
    precision = Precision.FP16 if kwargs.get("fp16") else Precision.INT8
    return QdqModel(path=path, info=info, precision=precision, source=source, quantizer="test")
