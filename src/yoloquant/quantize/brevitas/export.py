"""Export a Brevitas-quantized detector as QCDQ ONNX (QuantizeLinear -> Clip -> DequantizeLinear).

Weights are stored as int8 initializers (4-bit values clipped to [-7, 7] by the Clip), int8 activations
as Q/DQ pairs in front of the convs. The graph keeps the Ultralytics export's outputs and metadata, so
every yoloquant engine, evaluator and benchmark runs it like any other variant.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from yoloquant._io import atomic_path
from yoloquant._optional import require
from yoloquant.artifacts import ModelInfo
from yoloquant.errors import QuantizationError
from yoloquant.export.optimize import rewrite_dfl_softmax
from yoloquant.quantize.graph import copy_metadata

__all__ = ["export_qcdq"]

# onnxoptimizer passes that tidy the exported graph and never touch Q/DQ/Clip nodes
_CLEANUP_PASSES = ("eliminate_identity", "eliminate_deadend", "eliminate_unused_initializer", "eliminate_nop_transpose")


def _export_mode(model: Any, info: ModelInfo) -> None:
    """The switches Ultralytics' exporter sets: inference outputs only, split-based C2f."""
    modules = require("ultralytics.nn.modules")
    for module in model.modules():
        if isinstance(module, modules.Detect):
            module.export, module.format, module.dynamic = True, "onnx", info.dynamic_batch
        elif isinstance(module, modules.C2f):
            module.forward = module.forward_split


def _drop_noop_weight_clips(model: Any) -> None:
    """Remove the Clip of each 8-bit weight: it bounds the full int8 / uint8 range its values already lie in.

    Without it the weight is TensorRT's plain int8 initializer -> DequantizeLinear. A 4-bit weight keeps
    its Clip: that is where the graph says "4 bits".
    """
    numpy_helper = require("onnx.numpy_helper")
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    renamed: dict[str, str] = {}
    for node in list(graph.node):
        if node.op_type != "Clip" or node.input[0] not in inits or len(node.input) < 3:
            continue
        bounds = [inits.get(name) for name in node.input[1:3]]
        if any(b is None for b in bounds):
            continue
        low, high = (float(numpy_helper.to_array(b)) for b in bounds)
        values = numpy_helper.to_array(inits[node.input[0]])
        if high - low >= 254 and low <= values.min() and values.max() <= high:
            renamed[node.output[0]] = node.input[0]
            graph.node.remove(node)
    for node in graph.node:
        for k, name in enumerate(node.input):
            node.input[k] = renamed.get(name, name)


def export_qcdq(model: Any, info: ModelInfo, float_onnx: Path, target: Path, *, opset: int, cleanup: bool) -> Any:
    """Write ``model`` to ``target`` as QCDQ ONNX with ``float_onnx``'s metadata, atomically; returns it.

    Args:
        model: A detector whose convs are Brevitas quant layers, calibrated.
        info: Input name, size and batch mode of the float model it replaces.
        float_onnx: The float export; its metadata (names, imgsz, stride, head) is copied over.
        target: The ``.onnx`` to write.
        opset: ONNX opset (13..21).
        cleanup: Run onnxoptimizer's Q/DQ-preserving cleanup passes.
    """
    torch = require("torch")
    onnx = require("onnx")
    brevitas_export = require("brevitas.export")
    _export_mode(model, info)
    example = torch.zeros(1, 3, *info.imgsz)
    float_model = onnx.load(str(float_onnx), load_external_data=False)
    outputs = [o.name for o in float_model.graph.output]  # output0 (+ output1: seg prototypes), as exported
    dynamic = {n: {0: "batch"} for n in (info.input_name, *outputs)} if info.dynamic_batch else None
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".brevitas-export-") as tmp:
        raw = Path(tmp) / "model.onnx"
        try:
            with torch.no_grad():
                brevitas_export.export_onnx_qcdq(
                    model,
                    example,
                    export_path=str(raw),
                    opset_version=opset,
                    dynamo=False,
                    input_names=[info.input_name],
                    output_names=outputs,
                    dynamic_axes=dynamic,
                    keep_initializers_as_inputs=False,  # Brevitas defaults to True: biases would be graph inputs
                )
        except Exception as exc:  # torch.onnx / Brevitas raise many types; translate at the boundary
            msg = f"Brevitas could not export the quantized model to QCDQ ONNX (opset {opset}): {exc}"
            raise QuantizationError(msg, artifact=target) from exc
        exported = onnx.load(str(raw))
        _drop_noop_weight_clips(exported)
        if cleanup:
            exported = require("onnxoptimizer").optimize(exported, list(_CLEANUP_PASSES))
        rewrite_dfl_softmax(exported)
        copy_metadata(float_model, exported)
        onnx.checker.check_model(exported)
        with atomic_path(target) as staged:
            onnx.save(exported, str(staged))
    return exported
