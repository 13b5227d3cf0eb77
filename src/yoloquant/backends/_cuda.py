"""CUDA runtime helpers shared by the ONNX Runtime CUDA and TensorRT backends (``cuda.bindings.runtime``)."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from yoloquant._optional import require
from yoloquant.errors import ConfigError, InferenceError

__all__ = ["PinnedBuffer", "check", "cudart", "gpu_memory_used", "stream_handle"]


def cudart() -> Any:
    """``cuda.bindings.runtime``, or the fix when cuda-python is missing."""
    module = require("cuda.bindings.runtime")
    return module


def check(result: Any, what: str) -> Any:
    """Unpack a ``cuda.bindings`` ``(err, *values)`` tuple, raising InferenceError on an error."""
    rt = cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        _, name = rt.cudaGetErrorName(err)
        msg = f"CUDA call {what} failed with {name.decode() if isinstance(name, bytes) else name}"
        raise InferenceError(msg)
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def stream_handle(stream: Any) -> int:
    """The ``cudaStream_t`` address of a stream from cuda-python, PyTorch, CuPy, or a plain int.

    Example:
        >>> stream_handle(0)
        0
    """
    if isinstance(stream, int):
        return stream
    for attr in ("cuda_stream", "ptr", "handle"):  # torch.cuda.Stream, cupy Stream, cuda.core Stream
        value = getattr(stream, attr, None)
        if isinstance(value, int):
            return value
    try:
        return int(stream)  # cuda.bindings cudaStream_t / CUstream
    except (TypeError, ValueError):
        kind = type(stream).__name__
        msg = f"cannot get a CUDA stream handle from {kind}; pass an int, torch, cupy or cuda-python stream"
        raise ConfigError(msg) from None


def gpu_memory_used() -> int:
    """Bytes of device memory in use on the current device (total - free, as ``nvidia-smi`` counts)."""
    rt = cudart()
    free, total = check(rt.cudaMemGetInfo(), "cudaMemGetInfo")
    return int(total) - int(free)


class PinnedBuffer:
    """A page-locked host buffer viewed as a numpy array."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        rt = cudart()
        self.nbytes = int(np.prod(shape)) * dtype.itemsize
        self.ptr: int = int(check(rt.cudaMallocHost(self.nbytes), "cudaMallocHost"))
        raw = (ctypes.c_byte * self.nbytes).from_address(self.ptr)
        self.array: np.ndarray = np.frombuffer(memoryview(raw).cast("B"), dtype=dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            check(cudart().cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0
