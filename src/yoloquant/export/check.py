"""Checks of a model file made before any work: readable, a graph, finite weights.

They run in ``QuantPipeline.run()``'s validation, before anything is copied into the run folder, so a
truncated or random-bytes file fails in a second with one line naming it, not as a protobuf traceback
after export, and NaN / inf weights are named by initializer before calibration, not found later as a
"scale" failure on an internal temp file.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from yoloquant._optional import require
from yoloquant.errors import ExportError

__all__ = ["check_model_file", "check_onnx_model"]


def check_model_file(path: Path) -> None:
    """Check an Ultralytics ``.pt`` or an ``.onnx`` file can be read; raise ExportError naming it if not."""
    if path.suffix.lower() == ".pt":
        _check_checkpoint(path)
    elif path.suffix.lower() == ".onnx":
        check_onnx_model(path)


def _check_checkpoint(path: Path) -> None:
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; truncation cuts its directory off
        msg = (
            f"{path} is not a readable PyTorch checkpoint (not a zip archive: truncated or not a .pt file); "
            "copy or download it again, or pass an exported .onnx"
        )
        raise ExportError(msg, artifact=path)


def check_onnx_model(path: Path) -> None:
    """Parse ``path`` and check its graph and weights; raise ExportError naming the file (and initializer)."""
    onnx = require("onnx")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError, onnx's own errors, OSError: one line, naming the file
        first = (str(exc).splitlines() or [""])[0]
        msg = (
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {first}); the file is truncated or not "
            "ONNX: export it again (QuantPipeline.from_ultralytics(pt) or `yolo export format=onnx`)"
        )
        raise ExportError(msg, artifact=path) from exc
    if not model.graph.node or not model.graph.input:
        msg = f"{path} holds no ONNX graph (no nodes or inputs); export the YOLO model again"
        raise ExportError(msg, artifact=path)
    for name, tensor in _weights(model, onnx):
        _check_finite(path, name, tensor)


def _weights(model: Any, onnx: Any) -> list[tuple[str, Any]]:
    """Initializers and Constant-node tensors held in the file (external data is not loaded)."""
    out = [(t.name, t) for t in model.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
    for node in model.graph.node:
        if node.op_type == "Constant":
            out += [(node.output[0], a.t) for a in node.attribute if a.name == "value"]
    return out


def _check_finite(path: Path, name: str, tensor: Any) -> None:
    array = require("onnx.numpy_helper").to_array(tensor)
    if not np.issubdtype(array.dtype, np.floating):
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    nan = int(np.isnan(array).sum())
    inf = int(array.size - finite.sum()) - nan
    msg = (
        f"{path}: initializer {name!r} holds {nan} NaN and {inf} inf values of {array.size}; the weights are "
        "corrupt (a diverged training run or a broken conversion), so no quantization can work: export again "
        "from a checkpoint whose weights are finite"
    )
    raise ExportError(msg, artifact=path)
