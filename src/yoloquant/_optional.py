"""Lazy access to optional heavy dependencies.

Nothing here imports a heavy library at module import time. ``require("onnxruntime")`` imports it
on first use and, when it is missing, raises :class:`MissingDependencyError` naming the extra.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from yoloquant.errors import MissingDependencyError

# module -> (human name, extra that installs it)
_EXTRAS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("ONNX Runtime", "onnxruntime"),
    "onnxruntime.quantization": ("ONNX Runtime", "onnxruntime"),
    "onnx": ("onnx", "onnxruntime"),
    "cv2": ("OpenCV", "onnxruntime"),
    "pycocotools": ("pycocotools", "onnxruntime"),
    "pycocotools.coco": ("pycocotools", "onnxruntime"),
    "pycocotools.cocoeval": ("pycocotools", "onnxruntime"),
    "ultralytics": ("Ultralytics", "ultralytics"),
    "torch": ("PyTorch", "ultralytics"),
    "modelopt.onnx.quantization": ("NVIDIA ModelOpt", "modelopt"),
    "tensorrt": ("TensorRT", "trt"),
    "cuda.bindings.runtime": ("cuda-python", "gpu"),
    "torchvision.ops": ("torchvision", "ultralytics"),
    "brevitas": ("Brevitas", "brevitas"),
    "openvino": ("OpenVINO", "openvino"),
    "nncf": ("NNCF", "openvino"),
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise an error that says which extra installs it.

    Example:
        >>> np = require("numpy")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        name, extra = _EXTRAS.get(module, (module, "all"))
        msg = f'{name} is not installed (import {module!r} failed: {exc}); pip install "yoloquant[{extra}]"'
        raise MissingDependencyError(msg) from exc


def available(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    return importlib.util.find_spec(module.split(".", maxsplit=1)[0]) is not None
