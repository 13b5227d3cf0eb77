"""Per-layer precision audit of a TensorRT engine, from ``IEngineInspector``'s JSON.

Which layers really run INT8 / FP8 / FP16 / FP32, and how many reformat (layout / type conversion)
layers TensorRT inserted between them: the answer to "did my Q/DQ placement work?". The engine must
be built with ``ProfilingVerbosity.DETAILED`` (``TrtBuildConfig`` does that) for the inspector to
report tensor types.

Both JSON schemas are read: TensorRT 10 (one ``"Format/Datatype"`` string per tensor, e.g.
``"Row major linear INT8 format"`` / ``"Channel major FP16 format where channel % 8 == 0"``) and
TensorRT 11 (separate ``"DataType"`` and ``"Format"`` fields; ``Bindings`` became ``I/O Tensors``).

Example:
    >>> audit = audit_engine_json('{"Layers": [{"Name": "conv", "LayerType": "CaskConvolution", '
    ...     '"Inputs": [{"Name": "x", "Format/Datatype": "Row major linear Int8 format"}], "Outputs": []}]}')
    >>> audit.counts()
    {'int8': 1}
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from yoloquant.errors import InferenceError

__all__ = ["LayerPrecision", "PrecisionAudit", "audit_engine", "audit_engine_json", "tensor_precision"]

# Whole words of a tensor's type description -> precision. Words, not substrings: "int8" is inside
# "uint8", "float" inside "bfloat16". Names follow tensorrt.DataType (FLOAT, HALF, BF16, INT8, INT32,
# INT64, BOOL, UINT8, FP8 = E4M3, INT4, FP4 = E2M1, E8M0) as the inspector prints them in TensorRT 10
# ("Row major linear Int8 format") and 11 ("DataType": "Int8").
_WORDS: dict[str, str] = {
    "fp32": "fp32",
    "float": "fp32",
    "float32": "fp32",
    "half": "fp16",
    "fp16": "fp16",
    "float16": "fp16",
    "bf16": "bf16",
    "bfloat16": "bf16",
    "int8": "int8",
    "uint8": "uint8",
    "fp8": "fp8",
    "float8": "fp8",
    "e4m3": "fp8",
    "int4": "int4",
    "fp4": "fp4",
    "nvfp4": "fp4",
    "e2m1": "fp4",
    "e8m0": "e8m0",
    "int32": "int32",
    "int64": "int64",
    "bool": "bool",
}


def tensor_precision(tensor: dict[str, Any] | str) -> str:
    """Precision of one inspector tensor entry ("int8", "fp16", ...).

    "unknown" when the inspector reported no type; ``"unknown (<text>)"`` for a type this audit
    does not know, so it shows up in ``counts()`` instead of being folded into a known one.

    Example:
        >>> tensor_precision({"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"})
        'fp16'
        >>> tensor_precision({"DataType": "Int8", "Format": "kCHW32"})
        'int8'
        >>> tensor_precision("Row major linear UInt8 format")
        'uint8'
        >>> tensor_precision({"DataType": "Int2"})
        'unknown (Int2)'
    """
    if isinstance(tensor, str):
        text = tensor
    else:
        text = str(tensor.get("DataType") or tensor.get("Format/Datatype") or tensor.get("Format") or "")
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        if word in _WORDS:
            return _WORDS[word]
    return f"unknown ({text.strip()})" if text.strip() else "unknown"


@dataclass(frozen=True)
class LayerPrecision:
    """One engine layer: its name, kind, and the precision it computes in.

    ``precision`` is the type of its first input (a conv's math type follows its input: an INT8 conv
    reads INT8), falling back to the first output for layers without inputs.
    """

    name: str
    layer_type: str
    precision: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    reformat: bool


@dataclass(frozen=True)
class PrecisionAudit:
    """Every layer of an engine with its precision; ``counts()`` / ``table()`` summarise them."""

    layers: tuple[LayerPrecision, ...]

    def counts(self, *, include_reformat: bool = False) -> dict[str, int]:
        """Layers per precision (reformat layers excluded unless asked)."""
        return dict(Counter(la.precision for la in self.layers if include_reformat or not la.reformat))

    @property
    def reformats(self) -> tuple[LayerPrecision, ...]:
        """The reformat / copy layers TensorRT inserted (type or layout conversions)."""
        return tuple(la for la in self.layers if la.reformat)

    def by_precision(self, precision: str) -> list[str]:
        return [la.name for la in self.layers if la.precision == precision and not la.reformat]

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts(),
            "reformat_layers": len(self.reformats),
            "layers": [asdict(la) for la in self.layers],
        }

    def table(self) -> str:
        """Markdown: precision -> layer count, plus the reformat count."""
        rows = ["| precision | layers |", "| --- | ---: |"]
        rows += [f"| {p} | {n} |" for p, n in sorted(self.counts().items())]
        rows.append(f"| reformat | {len(self.reformats)} |")
        return "\n".join(rows)


def _layer(entry: dict[str, Any] | str) -> LayerPrecision:
    if isinstance(entry, str):  # LAYER_NAMES_ONLY verbosity: names without types
        return LayerPrecision(entry, "unknown", "unknown", (), (), entry.startswith("Reformatting CopyNode"))
    name = str(entry.get("Name", ""))
    kind = str(entry.get("LayerType", "unknown"))
    inputs = tuple(tensor_precision(t) for t in entry.get("Inputs", []) or [])
    outputs = tuple(tensor_precision(t) for t in entry.get("Outputs", []) or [])
    precision = inputs[0] if inputs else (outputs[0] if outputs else "unknown")
    reformat = kind == "Reformat" or name.startswith("Reformatting CopyNode")
    return LayerPrecision(name, kind, precision, inputs, outputs, reformat)


def audit_engine_json(text: str) -> PrecisionAudit:
    """Parse ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`` output."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"the engine inspector returned no JSON ({exc}); build with profiling_verbosity DETAILED"
        raise InferenceError(msg) from exc
    return PrecisionAudit(tuple(_layer(entry) for entry in data.get("Layers", [])))


def audit_engine(engine: Any, context: Any = None) -> PrecisionAudit:
    """Audit a deserialized ``tensorrt.ICudaEngine`` (optionally with a context, for dynamic shapes)."""
    from yoloquant._optional import require

    trt = require("tensorrt")
    inspector = engine.create_engine_inspector()
    if context is not None:
        inspector.execution_context = context
    return audit_engine_json(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
