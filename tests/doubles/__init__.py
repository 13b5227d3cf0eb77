"""Test doubles, named as such: ``FakeTensorRT`` (the TensorRT Python API surface) and ``FakeCudart``
(``cuda.bindings.runtime`` on host memory). See each module for what they model and what they do not."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from doubles.fake_cudart import FakeCudart
from doubles.fake_tensorrt import FakeTensorRT
from yoloquant._optional import substitute

__all__ = ["FakeCudart", "FakeTensorRT", "fake_gpu"]


@contextmanager
def fake_gpu(
    version: str = "10.16.1", *, gpu_name: str = "FakeGPU (test double)"
) -> Iterator[tuple[FakeTensorRT, FakeCudart]]:
    """``require("tensorrt")`` / ``require("cuda.bindings.runtime")`` return the doubles inside the block."""
    cudart = FakeCudart(gpu_name)
    trt = FakeTensorRT(version, memory=cudart)
    with substitute({"tensorrt": trt, "cuda.bindings.runtime": cudart}):
        yield trt, cudart
