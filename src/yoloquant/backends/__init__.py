"""Runtimes. ``backends/ort`` is the only package that imports onnxruntime, ``backends/openvino`` openvino,
``backends/trt`` tensorrt."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack

from yoloquant.artifacts import OnnxModel
from yoloquant.config import Backend
from yoloquant.protocols import Engine

__all__ = ["PROVIDERS", "build_engine", "check_backend", "open_engines"]

# What each backend's engine reports first in ``Engine.providers``: ONNX Runtime's execution provider, or for
# ``openvino`` OpenVINO's own runtime on its CPU device (not ONNX Runtime's OpenVINO provider).
PROVIDERS = {
    Backend.ORT_CPU: "CPUExecutionProvider",
    Backend.OPENVINO: "OpenVINO:CPU",
    Backend.ORT_CUDA: "CUDAExecutionProvider",
    Backend.TORCH: "torch-inductor",
}


def check_backend(backend: Backend) -> None:
    """Fail now, before any work, if ``backend``'s runtime (ONNX Runtime provider, OpenVINO) is not installed.

    Raises:
        MissingDependencyError: Naming the provider, the providers there are, and what to install.
    """
    from yoloquant.backends.registry import runtime_for

    runtime_for(backend).check()


def build_engine(model: OnnxModel, backend: Backend, *, threads: int | None = None) -> Engine:
    """An engine for ``model`` on ``backend``: an ONNX Runtime CPU session, OpenVINO's runtime, the CUDA engine,
    or a TensorRT engine (each backend registers its builder: ``yoloquant.backends.registry``).

    Example:
        >>> with build_engine(OnnxModel.load("yolov8n.onnx"), Backend.ORT_CPU) as engine:  # doctest: +SKIP
        ...     engine.infer(batch)
    """
    from yoloquant.backends.registry import runtime_for

    return runtime_for(backend).build(model, threads)


def open_engines(
    stack: ExitStack, models: Mapping[str, tuple[OnnxModel, Backend]], *, threads: int | None = None
) -> dict[str, Engine]:
    """An engine per name, each on its own backend, closed with ``stack`` (what an interleaved benchmark times).

    Example:
        >>> with ExitStack() as stack:  # doctest: +SKIP
        ...     engines = open_engines(stack, {"fp32": (model, Backend.ORT_CPU)}, threads=1)
    """
    return {
        name: stack.enter_context(build_engine(model, backend, threads=threads))
        for name, (model, backend) in models.items()
    }
