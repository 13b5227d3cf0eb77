"""Versions of the packages a run depends on, for reports."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

__all__ = ["package_versions"]

_PACKAGES = (
    "yoloquant",
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-openvino",
    "openvino",
    "nncf",
    "onnxruntime-gpu",
    "ultralytics",
    "torch",
    "pycocotools",
    "opencv-python",
    "nvidia-modelopt",
    "tensorrt",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that matter to yoloquant's numbers (absent ones left out)."""
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
