"""FakeCudart: a TEST DOUBLE of the part of ``cuda.bindings.runtime`` the backends use, on host memory.

Not CUDA. "Device" and "pinned" memory are numpy byte arrays whose host addresses stand in for device
pointers; ``cudaMemcpyAsync`` copies at once (``ctypes.memmove``) after checking that both ranges lie
inside live allocations; streams and events are counters. It follows the cuda-python calling
convention (every call returns ``(cudaError_t, *values)``).

What it does not model: asynchrony (every copy and kernel has finished when the call returns, so
missing synchronization cannot be caught, only wrong addresses, sizes and leaks), device/host address
spaces (a host pointer passed as a device pointer is not caught), multiple devices, graphs.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidResourceHandle = 400


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3


class FakeCudart(ModuleType):
    """Stands in for ``cuda.bindings.runtime`` through ``yoloquant._optional.substitute``."""

    cudaError_t = cudaError_t
    cudaMemcpyKind = cudaMemcpyKind
    cudaStreamNonBlocking = 1
    cudaEventDisableTiming = 2

    def __init__(self, gpu_name: str = "FakeGPU (test double)") -> None:
        super().__init__("cuda.bindings.runtime")
        self.gpu_name = gpu_name
        self.device: dict[int, np.ndarray] = {}
        self.pinned: dict[int, np.ndarray] = {}
        self.streams: set[int] = set()
        self.events: set[int] = set()
        self.copies: list[tuple[int, int, int, int]] = []  # (dst, src, nbytes, stream)
        self._ids = itertools.count(0x1000)

    # --- errors ---------------------------------------------------------------------------------
    def cudaGetErrorName(self, err: cudaError_t) -> tuple[cudaError_t, bytes]:
        return cudaError_t.cudaSuccess, cudaError_t(err).name.encode()

    # --- memory ---------------------------------------------------------------------------------
    def _alloc(self, table: dict[int, np.ndarray], nbytes: int) -> tuple[cudaError_t, int]:
        if nbytes <= 0:
            return cudaError_t.cudaErrorInvalidValue, 0
        buf = np.zeros(int(nbytes), np.uint8)
        ptr = int(buf.ctypes.data)
        table[ptr] = buf
        return cudaError_t.cudaSuccess, ptr

    def cudaMalloc(self, nbytes: int) -> tuple[cudaError_t, int]:
        return self._alloc(self.device, nbytes)

    def cudaMallocHost(self, nbytes: int) -> tuple[cudaError_t, int]:
        return self._alloc(self.pinned, nbytes)

    def cudaFree(self, ptr: int) -> tuple[cudaError_t]:
        return (
            cudaError_t.cudaSuccess
            if self.device.pop(int(ptr), None) is not None
            else cudaError_t.cudaErrorInvalidValue,
        )

    def cudaFreeHost(self, ptr: int) -> tuple[cudaError_t]:
        return (
            cudaError_t.cudaSuccess
            if self.pinned.pop(int(ptr), None) is not None
            else cudaError_t.cudaErrorInvalidValue,
        )

    def inside(self, ptr: int, nbytes: int) -> bool:
        """Whether ``[ptr, ptr + nbytes)`` lies inside one live allocation."""
        for table in (self.device, self.pinned):
            for base, buf in table.items():
                if base <= ptr and ptr + nbytes <= base + buf.nbytes:
                    return True
        return False

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: cudaMemcpyKind, stream: int) -> tuple[cudaError_t]:
        del kind
        dst, src, nbytes = int(dst), int(src), int(nbytes)
        if not (self.inside(dst, nbytes) and self.inside(src, nbytes)):
            return (cudaError_t.cudaErrorInvalidValue,)
        if stream and int(stream) not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        ctypes.memmove(dst, src, nbytes)
        self.copies.append((dst, src, nbytes, int(stream)))
        return (cudaError_t.cudaSuccess,)

    def cudaMemGetInfo(self) -> tuple[cudaError_t, int, int]:
        used = sum(b.nbytes for b in self.device.values())
        total = 80 << 30
        return cudaError_t.cudaSuccess, total - used, total

    # --- streams and events ---------------------------------------------------------------------
    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[cudaError_t, int]:
        del flags
        handle = next(self._ids)
        self.streams.add(handle)
        return cudaError_t.cudaSuccess, handle

    def cudaStreamDestroy(self, stream: int) -> tuple[cudaError_t]:
        if int(stream) not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self.streams.discard(int(stream))
        return (cudaError_t.cudaSuccess,)

    def cudaStreamSynchronize(self, stream: int) -> tuple[cudaError_t]:
        del stream
        return (cudaError_t.cudaSuccess,)

    def cudaEventCreateWithFlags(self, flags: int) -> tuple[cudaError_t, int]:
        del flags
        handle = next(self._ids)
        self.events.add(handle)
        return cudaError_t.cudaSuccess, handle

    def _event(self, event: int) -> tuple[cudaError_t]:
        ok = int(event) in self.events
        return (cudaError_t.cudaSuccess if ok else cudaError_t.cudaErrorInvalidResourceHandle,)

    def cudaEventRecord(self, event: int, stream: int) -> tuple[cudaError_t]:
        del stream
        return self._event(event)

    def cudaEventSynchronize(self, event: int) -> tuple[cudaError_t]:
        return self._event(event)

    def cudaEventDestroy(self, event: int) -> tuple[cudaError_t]:
        result = self._event(event)
        self.events.discard(int(event))
        return result

    # --- device ---------------------------------------------------------------------------------
    def cudaGetDeviceCount(self) -> tuple[cudaError_t, int]:
        return cudaError_t.cudaSuccess, 1

    def cudaGetDeviceProperties(self, device: int) -> tuple[cudaError_t, Any]:
        if device != 0:
            return cudaError_t.cudaErrorInvalidValue, None
        return cudaError_t.cudaSuccess, SimpleNamespace(name=self.gpu_name.encode() + b"\x00" * 4, major=9, minor=0)

    def live(self) -> dict[str, int]:
        """Counts of what is still allocated (all zero after a clean close)."""
        return {
            "device": len(self.device),
            "pinned": len(self.pinned),
            "streams": len(self.streams),
            "events": len(self.events),
        }
