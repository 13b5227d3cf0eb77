"""Runtimes. ``backends/ort`` is the only package that imports onnxruntime, ``backends/openvino`` openvino,
``backends/trt`` tensorrt."""

from __future__ import annotations

from yoloquant.artifacts import OnnxModel
from yoloquant.config import Backend
from yoloquant.errors import ConfigError
from yoloquant.protocols import Engine

__all__ = ["PROVIDERS", "build_engine", "check_backend"]

# What each backend's engine reports first in ``Engine.providers``: ONNX Runtime's execution provider, or for
# ``openvino`` OpenVINO's own runtime on its CPU device (not ONNX Runtime's OpenVINO provider).
PROVIDERS = {
    Backend.ONNXRUNTIME: "CPUExecutionProvider",
    Backend.OPENVINO: "OpenVINO:CPU",
    Backend.CUDA: "CUDAExecutionProvider",
}


def check_backend(backend: Backend) -> None:
    """Fail now, before any work, if ``backend``'s runtime (ONNX Runtime provider, OpenVINO) is not installed.

    Raises:
        MissingDependencyError: Naming the provider, the providers there are, and what to install.
    """
    if backend is Backend.OPENVINO:
        from yoloquant.backends.openvino.engine import check_runtime

        check_runtime()
    elif backend in PROVIDERS:
        from yoloquant.backends.ort.engine import check_provider

        check_provider(PROVIDERS[backend])


def build_engine(model: OnnxModel, backend: Backend, *, threads: int | None = None) -> Engine:
    """An engine for ``model`` on ``backend``: an ONNX Runtime CPU session, OpenVINO's runtime, or the CUDA engine.

    Example:
        >>> with build_engine(OnnxModel.load("yolov8n.onnx"), Backend.ONNXRUNTIME) as engine:  # doctest: +SKIP
        ...     engine.infer(batch)
    """
    from yoloquant.backends.ort import CudaEngineBuilder, OrtEngineBuilder

    if backend is Backend.CUDA:
        return CudaEngineBuilder().build(model)
    if backend is Backend.OPENVINO:
        from yoloquant.backends.openvino import OpenVinoEngineBuilder

        return OpenVinoEngineBuilder(threads=threads).build(model)
    if backend is Backend.ONNXRUNTIME:
        return OrtEngineBuilder(backend=backend, threads=threads).build(model)
    msg = f"no engine for backend {backend.value!r} in the pipeline yet; use onnxruntime, openvino or cuda"
    raise ConfigError(msg)
