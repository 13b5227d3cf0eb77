"""Runtimes. ``backends/ort`` is the only package that imports onnxruntime, ``backends/trt`` tensorrt."""

from __future__ import annotations

from yoloquant.artifacts import OnnxModel
from yoloquant.config import Backend
from yoloquant.errors import ConfigError
from yoloquant.protocols import Engine

__all__ = ["PROVIDERS", "build_engine", "check_backend"]

# The ONNX Runtime execution provider each backend runs on.
PROVIDERS = {
    Backend.ONNXRUNTIME: "CPUExecutionProvider",
    Backend.OPENVINO: "OpenVINOExecutionProvider",
    Backend.CUDA: "CUDAExecutionProvider",
}


def check_backend(backend: Backend) -> None:
    """Fail now, before any work, if ``backend``'s ONNX Runtime execution provider is not installed.

    Raises:
        MissingDependencyError: Naming the provider, the providers there are, and what to install.
    """
    if backend in PROVIDERS:
        from yoloquant.backends.ort.engine import check_provider

        check_provider(PROVIDERS[backend])


def build_engine(model: OnnxModel, backend: Backend, *, threads: int | None = None) -> Engine:
    """An engine for ``model`` on ``backend``: the CPU / OpenVINO session, or the CUDA engine.

    Example:
        >>> with build_engine(OnnxModel.load("yolov8n.onnx"), Backend.ONNXRUNTIME) as engine:  # doctest: +SKIP
        ...     engine.infer(batch)
    """
    from yoloquant.backends.ort import CudaEngineBuilder, OrtEngineBuilder

    if backend is Backend.CUDA:
        return CudaEngineBuilder().build(model)
    if backend in (Backend.ONNXRUNTIME, Backend.OPENVINO):
        return OrtEngineBuilder(backend=backend, threads=threads).build(model)
    msg = f"no engine for backend {backend.value!r} in the pipeline yet; use onnxruntime, openvino or cuda"
    raise ConfigError(msg)
