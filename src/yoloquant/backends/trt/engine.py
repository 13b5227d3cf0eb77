"""``TrtEngine``: a serialized TensorRT engine behind the Engine protocol, run with ``execute_async_v3``.

Device buffers are allocated once for the largest batch of the engine's profile and bound with
``set_tensor_address``; each call sets the input shape (dynamic batch), uploads from pinned memory,
enqueues ``execute_async_v3`` on the caller's stream (or the engine's own) and downloads into pinned
memory, all without synchronizing; ``PendingOutputs.wait()`` synchronizes on an event.

Unlike ONNX Runtime, TensorRT takes the stream per call, so ``infer_async(batch, stream)`` runs on
``stream`` directly. One engine (execution context) must not be used by two threads at once: build
one :class:`TrtEngine` per stream / thread (they can share nothing but the file).

Written against the documented TensorRT 10 / 11 Python API; it has not run here (TensorRT cannot be
installed in this project's environments, see docs/gpu.md).

Example:
    >>> with TrtEngine.load("runs/yolov8n-int8.engine") as engine:  # doctest: +SKIP
    ...     (out,) = engine.infer(batch)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from yoloquant._lifecycle import ClosesOnExit
from yoloquant._optional import require
from yoloquant.artifacts import ModelInfo
from yoloquant.backends._cuda import PinnedBuffer, check, cudart, stream_handle
from yoloquant.backends.trt.builder import TrtEngineFile
from yoloquant.backends.trt.inspect import PrecisionAudit, audit_engine
from yoloquant.config import HeadType
from yoloquant.errors import EngineBuildError, InferenceError

__all__ = ["TrtEngine", "TrtPending"]

log = logging.getLogger(__name__)


def _info(metadata: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        names={int(k): str(v) for k, v in metadata["names"].items()},
        imgsz=(int(metadata["imgsz"][0]), int(metadata["imgsz"][1])),
        stride=int(metadata.get("stride", 32)),
        task=str(metadata.get("task", "detect")),
        head=HeadType(metadata.get("head", "dfl")),
        input_name=str(metadata.get("input_name", "images")),
        dynamic_batch=bool(metadata.get("dynamic_batch", False)),
    )


class _Slot:
    def __init__(self, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, Any]) -> None:
        rt = cudart()
        self.host = {name: PinnedBuffer(shape, np.dtype(dtypes[name])) for name, shape in shapes.items()}
        self.event: Any = check(rt.cudaEventCreateWithFlags(rt.cudaEventDisableTiming), "cudaEventCreate")
        self.generation = 0
        self.shapes: dict[str, tuple[int, ...]] = {}

    def free(self) -> None:
        rt = cudart()
        check(rt.cudaEventSynchronize(self.event), "cudaEventSynchronize")
        check(rt.cudaEventDestroy(self.event), "cudaEventDestroy")
        for buf in self.host.values():
            buf.free()


class TrtPending:
    """Outputs of one :meth:`TrtEngine.infer_async` call; ``wait()`` synchronizes and returns them."""

    def __init__(self, slot: _Slot, outputs: list[str], device: dict[str, int], download: bool) -> None:
        self._slot, self._outputs, self._download = slot, outputs, download
        self._generation = slot.generation
        self.device_outputs = [(device[n], slot.shapes[n], slot.host[n].array.dtype) for n in outputs]

    def wait(self, *, copy: bool = True) -> list[np.ndarray]:
        if self._slot.generation != self._generation:
            msg = "these outputs were overwritten by later calls; call wait() before queuing `depth` more"
            raise InferenceError(msg)
        check(cudart().cudaEventSynchronize(self._slot.event), "cudaEventSynchronize")
        if not self._download:
            return []
        views = [self._slot.host[n].array.reshape(-1)[: int(np.prod(self._slot.shapes[n]))] for n in self._outputs]
        shaped = [v.reshape(self._slot.shapes[n]) for v, n in zip(views, self._outputs, strict=True)]
        return [np.array(v, copy=True) if copy else v for v in shaped]


class TrtEngine(ClosesOnExit):
    """A deserialized TensorRT engine with one execution context, device buffers and pinned slots."""

    def __init__(self, engine_file: TrtEngineFile, *, stream: Any = None, depth: int = 2) -> None:
        trt = require("tensorrt")
        self.file = engine_file
        self.info = _info(engine_file.metadata)
        built_with = engine_file.metadata.get("tensorrt")
        if built_with != str(trt.__version__):
            msg = (
                f"{engine_file.path} was built with TensorRT {built_with} but {trt.__version__} is installed; "
                "engines are not portable across TensorRT versions: rebuild it with TrtEngineBuilder"
            )
            raise EngineBuildError(msg, artifact=engine_file.path)
        from yoloquant.backends.trt.builder import _make_logger

        self._logger = _make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self.engine: Any = self._runtime.deserialize_cuda_engine(engine_file.path.read_bytes())
        if self.engine is None:
            errors = "; ".join(self._logger.errors[-3:])
            msg = f"TensorRT could not load {engine_file.path} ({errors}): rebuild it on this GPU"
            raise EngineBuildError(msg, artifact=engine_file.path)
        self.context: Any = self.engine.create_execution_context()
        rt = cudart()
        self._owns_stream = stream is None
        if self._owns_stream:
            flags = rt.cudaStreamNonBlocking
            self.stream = int(check(rt.cudaStreamCreateWithFlags(flags), "cudaStreamCreate"))
        else:
            self.stream = stream_handle(stream)
        self._setup(trt, depth)

    @classmethod
    def load(cls, source: TrtEngineFile | Path | str, *, stream: Any = None, depth: int = 2) -> TrtEngine:
        """Load an engine file written by :class:`TrtEngineBuilder` (its sidecar is checked too)."""
        return cls(
            source if isinstance(source, TrtEngineFile) else TrtEngineFile.load(source), stream=stream, depth=depth
        )

    def _setup(self, trt: Any, depth: int) -> None:
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        if len(self.inputs) != 1:
            msg = f"{self.file.path} has inputs {self.inputs}; a YOLO detector engine has exactly one image input"
            raise EngineBuildError(msg, artifact=self.file.path)
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        inp = self.inputs[0]
        shape = tuple(self.engine.get_tensor_shape(inp))
        self.max_batch = int(self.engine.get_tensor_profile_shape(inp, 0)[2][0]) if shape[0] == -1 else int(shape[0])
        self.dynamic = shape[0] == -1
        max_shape = (self.max_batch, *shape[1:])
        if self.dynamic:
            self.context.set_input_shape(inp, max_shape)
        shapes = {inp: max_shape} | {n: tuple(self.context.get_tensor_shape(n)) for n in self.outputs}
        rt = cudart()
        self._device: dict[str, int] = {}
        for name, dims in shapes.items():
            nbytes = int(np.prod(dims)) * self.dtypes[name].itemsize
            self._device[name] = int(check(rt.cudaMalloc(nbytes), "cudaMalloc"))
            if not self.context.set_tensor_address(name, self._device[name]):
                msg = f"TensorRT refused the device address of tensor {name!r}"
                raise EngineBuildError(msg, artifact=self.file.path)
        self._slots = [_Slot(shapes, self.dtypes) for _ in range(depth)]
        self._next = 0

    @property
    def providers(self) -> list[str]:
        return [f"TensorRT {self.file.metadata.get('tensorrt')}"] if self.context is not None else []

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run a ``[B, 3, H, W]`` batch (the engine input's dtype, float32 for YOLO exports)."""
        return self.infer_async(batch).wait()

    def infer_async(self, batch: np.ndarray, stream: Any = None, *, download: bool = True) -> TrtPending:
        """Queue upload, ``execute_async_v3`` and download on ``stream`` (or the engine's); no sync."""
        if self.context is None:
            msg = "engine is closed; load it again with TrtEngine.load(path)"
            raise InferenceError(msg)
        inp = self.inputs[0]
        h, w = self.info.imgsz
        n = batch.shape[0] if batch.ndim == 4 else -1
        if batch.ndim != 4 or batch.shape[1:] != (3, h, w) or not 1 <= n <= self.max_batch:
            msg = f"expected a batch of shape [1..{self.max_batch}, 3, {h}, {w}], got {batch.shape}"
            raise InferenceError(msg)
        if self.dynamic and not self.context.set_input_shape(inp, tuple(batch.shape)):
            msg = f"TensorRT rejected input shape {batch.shape}; the profile allows batch 1..{self.max_batch}"
            raise InferenceError(msg)
        if not self.dynamic and n != self.max_batch:
            msg = f"this engine was built for batch {self.max_batch}, got {n}; build it with a dynamic-batch ONNX"
            raise InferenceError(msg)
        handle = self.stream if stream is None else stream_handle(stream)
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        rt = cudart()
        check(rt.cudaEventSynchronize(slot.event), "cudaEventSynchronize")
        slot.generation += 1
        slot.shapes = {inp: tuple(batch.shape)} | {o: tuple(self.context.get_tensor_shape(o)) for o in self.outputs}
        host_in = slot.host[inp].array.reshape(-1)[: batch.size].reshape(batch.shape)
        np.copyto(host_in, batch, casting="same_kind")
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(rt.cudaMemcpyAsync(self._device[inp], slot.host[inp].ptr, host_in.nbytes, h2d, handle), "H2D")
        if not self.context.execute_async_v3(handle):
            msg = f"TensorRT execute_async_v3 failed: {'; '.join(self._logger.errors[-3:]) or 'see the TensorRT log'}"
            raise InferenceError(msg)
        for name in self.outputs if download else ():
            nbytes = int(np.prod(slot.shapes[name])) * self.dtypes[name].itemsize
            check(rt.cudaMemcpyAsync(slot.host[name].ptr, self._device[name], nbytes, d2h, handle), "D2H")
        check(rt.cudaEventRecord(slot.event, handle), "cudaEventRecord")
        return TrtPending(slot, self.outputs, self._device, download)

    def audit(self) -> PrecisionAudit:
        """Per-layer precisions of this engine (IEngineInspector)."""
        return audit_engine(self.engine, self.context)

    def close(self) -> None:
        """Wait for queued work and free everything. Safe to call more than once."""
        if self.context is None:
            return
        rt = cudart()
        for slot in self._slots:
            slot.free()
        for ptr in self._device.values():
            check(rt.cudaFree(ptr), "cudaFree")
        self._device.clear()
        self.context = None
        self.engine = None
        if self._owns_stream:
            check(rt.cudaStreamDestroy(self.stream), "cudaStreamDestroy")
            self._owns_stream = False
