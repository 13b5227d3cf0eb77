"""Lazy access to optional heavy dependencies.

Nothing here imports a heavy library at module import time. ``require("onnxruntime")`` imports it
on first use and, when it is missing, raises :class:`MissingDependencyError` naming the extra.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType

from yoloquant.errors import MissingDependencyError

# top-level package -> (human name, extra that installs it; None for a core dependency of yoloquant itself).
# A dotted module (``onnxruntime.quantization``) resolves through its top-level package.
_EXTRAS: dict[str, tuple[str, str | None]] = {
    "onnxruntime": ("ONNX Runtime", "onnxruntime"),
    "onnx": ("onnx", "onnxruntime"),
    "cv2": ("OpenCV", "onnxruntime"),
    "pycocotools": ("pycocotools", "onnxruntime"),
    "ultralytics": ("Ultralytics", "ultralytics"),
    "torch": ("PyTorch", "ultralytics"),
    "torchvision": ("torchvision", "ultralytics"),
    "PIL": ("Pillow", "ultralytics"),  # Ultralytics depends on Pillow
    "modelopt": ("NVIDIA ModelOpt", "modelopt"),
    "tensorrt": ("TensorRT", "trt"),
    "cuda": ("cuda-python", "gpu"),
    "brevitas": ("Brevitas", "brevitas"),
    "onnxoptimizer": ("onnxoptimizer", "brevitas"),
    "openvino": ("OpenVINO", "openvino"),
    "nncf": ("NNCF", "openvino"),
    "matplotlib": ("matplotlib", "plot"),
    "supervision": ("supervision", "stream"),
    "trackers": ("trackers (Roboflow)", "stream"),
    "motmetrics": ("py-motmetrics", "stream"),
    "ray": ("Ray", "ray"),
    "yaml": ("PyYAML", None),
    "tqdm": ("tqdm", None),
}


def install_hint(module: str) -> str:
    """The pip command that installs ``module``: its extra, or the package itself when it is in no extra.

    Example:
        >>> install_hint("onnxruntime.quantization")
        'pip install "yoloquant[onnxruntime]"'
    """
    top = module.split(".", maxsplit=1)[0]
    if top not in _EXTRAS:
        return f'pip install "{top}"'
    name, extra = _EXTRAS[top]
    if extra is None:
        return f"{name} is a dependency of yoloquant itself: pip install --force-reinstall yoloquant"
    return f'pip install "yoloquant[{extra}]"'


# Test doubles that ``require`` returns instead of importing (see ``substitute``); empty outside tests.
_SUBSTITUTES: dict[str, ModuleType] = {}


@contextmanager
def substitute(doubles: Mapping[str, ModuleType]) -> Iterator[None]:
    """Make ``require(name)`` return a test double for each name while the block runs (tests only).

    Nothing is patched in ``sys.modules``: only code that goes through ``require`` sees the doubles,
    and they are gone when the block ends.

    Example:
        >>> import types
        >>> with substitute({"tensorrt": types.ModuleType("fake")}):
        ...     require("tensorrt").__name__
        'fake'
    """
    before = dict(_SUBSTITUTES)
    _SUBSTITUTES.update(doubles)
    try:
        yield
    finally:
        _SUBSTITUTES.clear()
        _SUBSTITUTES.update(before)


def require(module: str) -> ModuleType:
    """Import ``module`` or raise an error that says which extra installs it.

    Example:
        >>> np = require("numpy")
    """
    if module in _SUBSTITUTES:
        return _SUBSTITUTES[module]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        name = _EXTRAS.get(module.split(".", maxsplit=1)[0], (module, None))[0]
        msg = f"{name} is not installed (import {module!r} failed: {exc}); {install_hint(module)}"
        raise MissingDependencyError(msg) from exc


def available(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    return importlib.util.find_spec(module.split(".", maxsplit=1)[0]) is not None
