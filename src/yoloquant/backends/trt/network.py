"""What an ONNX network contains, type-wise, and the precision label of the engine built from it.

A strongly typed TensorRT network runs the types written in the graph (TensorRT Python API,
``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: "every tensor in the network has a data type defined
in the network following only type inference rules"), so the engine's precision is read from the ONNX:
the types of its Q/DQ pairs (INT8 / FP8 / INT4 / FP4 explicit quantization) and of its float weights
(FP32 / FP16 / BF16). Only a weakly typed TensorRT 10 build with ``BuilderFlag.FP16`` can run an FP32
graph in FP16; TensorRT 11 removed that flag (10.x -> 11.x migration guide, "Removed Python APIs":
``BuilderFlag.FP16`` -> "Strong typing with ModelOpt AutoCast", ``BuilderFlag.INT8`` -> "Explicit
quantization with Q/DQ nodes").

Example:
    >>> NetworkTypes(quantized=("int8",), float_type="fp32").label
    'int8'
    >>> NetworkTypes(quantized=(), float_type="fp16").label
    'fp16'
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yoloquant._optional import require
from yoloquant.config import Precision
from yoloquant.errors import ConfigError

__all__ = ["QDQ_TYPES_TENSORRT", "NetworkTypes", "engine_label", "scan_onnx"]

# ONNX TensorProto element type -> our name (onnx.proto: FLOAT=1, UINT8=2, INT8=3, UINT16=4, INT16=5,
# FLOAT16=10, BFLOAT16=16, FLOAT8E4M3FN=17, FLOAT8E4M3FNUZ=18, FLOAT8E5M2=19, FLOAT8E5M2FNUZ=20,
# UINT4=21, INT4=22, FLOAT4E2M1=23).
_ONNX_TYPES = {
    1: "fp32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    10: "fp16",
    16: "bf16",
    17: "fp8",
    18: "fp8-e4m3fnuz",
    19: "fp8-e5m2",
    20: "fp8-e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "fp4",
}
_FLOATS = {"fp32", "fp16", "bf16"}

# Q/DQ types TensorRT quantizes to (tensorrt.DataType: INT8 "signed 8-bit integer representing a quantized
# floating-point value", FP8 = E4M3, INT4 "signed 4-bit integer representing a quantized floating-point
# value", FP4). UINT8 "cannot be used to represent quantized floating-point values".
QDQ_TYPES_TENSORRT = frozenset({"int8", "fp8", "int4", "fp4"})


@dataclass(frozen=True)
class NetworkTypes:
    """The types of an ONNX network that decide what a strongly typed engine runs.

    Attributes:
        quantized: Sorted Q/DQ element types (``int8``, ``fp8``, ``uint8``, ...); empty for a float model.
        float_type: The float type holding most weight elements (``fp32``, ``fp16`` or ``bf16``).
        unknown: ONNX element types of Q/DQ tensors this module has no name for (``onnx-type-<n>``).
    """

    quantized: tuple[str, ...]
    float_type: str = "fp32"
    unknown: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The precision the network itself asks for: its Q/DQ types, else its float type."""
        return "-".join(self.quantized) if self.quantized else self.float_type

    def to_dict(self) -> dict[str, Any]:
        return {"quantized": list(self.quantized), "float_type": self.float_type, "unknown": list(self.unknown)}


def _initializer_types(graph: Any) -> dict[str, tuple[int, int]]:
    """Initializer (and Constant output) name -> (element type, element count)."""
    out: dict[str, tuple[int, int]] = {}
    for init in graph.initializer:
        count = 1
        for d in init.dims:
            count *= int(d)
        out[init.name] = (int(init.data_type), count)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t is not None:
                    out[node.output[0]] = (int(attr.t.data_type), 1)
    return out


def _qdq_type(node: Any, inits: dict[str, tuple[int, int]]) -> int | None:
    """The quantized element type of one QuantizeLinear / DequantizeLinear node (ONNX operator spec)."""
    for attr in node.attribute:
        if attr.name == "output_dtype" and attr.i:  # QuantizeLinear-21: explicit output type
            return int(attr.i)
    if len(node.input) > 2 and node.input[2] and node.input[2] in inits:
        return inits[node.input[2]][0]  # the zero point's type is the quantized type
    if node.op_type == "DequantizeLinear" and node.input[0] in inits:
        return inits[node.input[0]][0]  # pre-quantized weights
    if node.op_type == "QuantizeLinear":
        return 2  # no zero point and no output_dtype: the spec's default is uint8
    return None  # a DequantizeLinear fed by a QuantizeLinear: that node names the type


def scan_onnx(path: Path | str) -> NetworkTypes:
    """Read the Q/DQ and float types of an ONNX file (weights are not loaded when stored externally).

    Example:
        >>> scan_onnx("yolov8n-int8.onnx").label  # doctest: +SKIP
        'int8'
    """
    onnx = require("onnx")
    graph = onnx.load(str(path), load_external_data=False).graph
    inits = _initializer_types(graph)
    quantized: set[str] = set()
    unknown: set[str] = set()
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        kind = _qdq_type(node, inits)
        if kind is None:
            continue
        name = _ONNX_TYPES.get(kind)
        if name is None:
            unknown.add(f"onnx-type-{kind}")
        else:
            quantized.add(name)
    floats: Counter[str] = Counter()
    for kind, count in inits.values():
        name = _ONNX_TYPES.get(kind, "")
        if name in _FLOATS:
            floats[name] += count
    float_type = floats.most_common(1)[0][0] if floats else "fp32"
    return NetworkTypes(quantized=tuple(sorted(quantized | unknown)), float_type=float_type, unknown=tuple(unknown))


def engine_label(types: NetworkTypes, requested: Precision | None, *, strongly_typed: bool, source: Path) -> str:
    """The precision label of the engine (and its file name), from the network and the build request.

    Raises:
        ConfigError: The network has Q/DQ types TensorRT cannot quantize to, or ``requested`` cannot be
            met by this network (e.g. ``fp16`` of an FP32 graph strongly typed, ``int8`` without INT8 Q/DQ).
    """
    bad = [q for q in types.quantized if q not in QDQ_TYPES_TENSORRT]
    if bad:
        msg = (
            f"{source} has {', '.join(bad)} Q/DQ nodes; TensorRT quantizes to {', '.join(sorted(QDQ_TYPES_TENSORRT))} "
            "only (tensorrt.DataType.UINT8 cannot represent quantized values): quantize with ModelOptQuantizer "
            "(backend tensorrt, signed symmetric int8 / fp8 e4m3)"
        )
        raise ConfigError(msg)
    if types.quantized:
        if requested is not None and requested.value not in types.quantized:
            msg = (
                f"precision={requested.value!r} but {source} contains {types.label} Q/DQ nodes, which run as "
                f"{types.label} whatever the build config; use precision={types.quantized[0]!r} or None"
            )
            raise ConfigError(msg)
        return types.label
    if requested is None or requested.value == types.float_type:
        return types.float_type
    if requested is Precision.FP16 and types.float_type == "fp32" and not strongly_typed:
        return "fp16"  # TensorRT 10 weak typing with BuilderFlag.FP16: TensorRT may pick FP16 kernels
    if requested in (Precision.INT8, Precision.FP8):
        msg = f"{requested.value} engines need a Q/DQ model (explicit quantization); quantize {source} first"
    else:
        msg = (
            f"precision={requested.value!r} but {source} is a {types.float_type} graph, and a strongly typed "
            f"network runs the graph's types: convert it first (Fp16Converter for fp16), or on TensorRT 10 "
            "set strongly_typed=False for a weakly typed BuilderFlag.FP16 build"
        )
    raise ConfigError(msg)
