"""``TrtEngine``: a serialized TensorRT engine behind the Engine protocol, run with ``execute_async_v3``.

One execution context per CUDA stream: "Multiple IExecutionContexts may exist for one ICudaEngine
instance, allowing the same ICudaEngine to be used for the execution of multiple batches simultaneously"
(IExecutionContext), while one context's shapes, tensor addresses and activation memory belong to the
work queued with it. So the first call on a stream creates that stream's context, with its own device
buffers (sized for the largest shape of profile 0, ``get_tensor_profile_shape(name, 0)[2]``) bound with
``set_tensor_address`` and its own pinned slots; calls on different streams never share a context or a
buffer. A lock per context keeps two threads on one stream from interleaving ``set_input_shape`` and
``execute_async_v3``.

Each call sets the input shape (checking ``set_input_shape``'s return value: False means the shape is
outside the profile), uploads from pinned memory, enqueues ``execute_async_v3`` on the stream and
downloads into pinned memory, all without synchronizing; ``TrtPending.wait()`` synchronizes on an event.

Written against the documented TensorRT 10 / 11 Python API; it has run only against the test double
``tests/doubles/fake_tensorrt.py`` (TensorRT cannot be installed in this project's environments, see
docs/gpu.md).

Example:
    >>> with TrtEngine.load("runs/yolov8n-int8.engine") as engine:  # doctest: +SKIP
    ...     (out,) = engine.infer(batch)
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from yoloquant._lifecycle import ClosesOnExit
from yoloquant._optional import require
from yoloquant.artifacts import ModelInfo
from yoloquant.backends._cuda import PinnedBuffer, check, cudart, stream_handle
from yoloquant.backends.trt.builder import TrtEngineFile, _gpu_name, _make_logger
from yoloquant.backends.trt.inspect import PrecisionAudit, audit_engine
from yoloquant.config import HeadType
from yoloquant.errors import EngineBuildError, InferenceError

__all__ = ["TrtEngine", "TrtPending"]

log = logging.getLogger(__name__)


def _info(metadata: dict[str, Any]) -> ModelInfo:
    kpt = metadata.get("kpt_shape")
    return ModelInfo(
        names={int(k): str(v) for k, v in metadata["names"].items()},
        imgsz=(int(metadata["imgsz"][0]), int(metadata["imgsz"][1])),
        stride=int(metadata.get("stride", 32)),
        task=str(metadata.get("task", "detect")),
        source_task=str(metadata.get("source_task") or metadata.get("task", "detect")),
        head=HeadType(metadata.get("head", "dfl")),
        kpt_shape=(int(kpt[0]), int(kpt[1])) if kpt else None,
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


def _dims(low: tuple[int, ...], high: tuple[int, ...]) -> str:
    """A profile range as text: ``[1..16, 3, 640, 640]``."""
    return "[" + ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in zip(low, high, strict=True)) + "]"


class _StreamContext:
    """One execution context, its device buffers and pinned slots: used on one CUDA stream only."""

    def __init__(self, owner: TrtEngine, stream: int, depth: int) -> None:
        self.stream = stream
        self.owner = owner
        self.lock = threading.Lock()
        self.context: Any = owner.engine.create_execution_context()
        if self.context is None:
            msg = f"TensorRT could not create an execution context for {owner.file.path} (out of GPU memory?)"
            raise EngineBuildError(msg, artifact=owner.file.path)
        inp = owner.inputs[0]
        # getTensorShape: an output dim is -1 while "setInputShape() has not yet been called" for the
        # inputs it depends on (or when it depends on tensor values): set the profile's largest input
        # shape first and size every buffer for it.
        if owner.dynamic and not self.context.set_input_shape(inp, owner.max_shape):
            msg = f"TensorRT refused the profile's own max shape {owner.max_shape} for {inp!r}"
            raise EngineBuildError(msg, artifact=owner.file.path)
        shapes = {inp: owner.max_shape} | {n: tuple(self.context.get_tensor_shape(n)) for n in owner.outputs}
        unknown = {n: s for n, s in shapes.items() if -1 in s}
        if unknown:
            msg = f"{owner.file.path} has data-dependent output shapes {unknown}; YOLO detector outputs are static"
            raise EngineBuildError(msg, artifact=owner.file.path)
        self.device: dict[str, int] = {}
        self.slots: list[_Slot] = []
        try:
            self._allocate(shapes, depth)
        except BaseException:
            self.free()  # nothing half-built is left allocated
            raise
        self.next = 0

    def _allocate(self, shapes: dict[str, tuple[int, ...]], depth: int) -> None:
        rt, owner = cudart(), self.owner
        for name, dims in shapes.items():
            nbytes = int(np.prod(dims)) * owner.dtypes[name].itemsize
            self.device[name] = int(check(rt.cudaMalloc(nbytes), "cudaMalloc"))
            if not self.context.set_tensor_address(name, self.device[name]):
                msg = f"TensorRT refused the device address of tensor {name!r}"
                raise EngineBuildError(msg, artifact=owner.file.path)
        for _ in range(depth):
            self.slots.append(_Slot(shapes, owner.dtypes))

    def enqueue(self, batch: np.ndarray, download: bool) -> TrtPending:
        owner, inp = self.owner, self.owner.inputs[0]
        with self.lock:
            # IExecutionContext::setInputShape: "True on success, false if the provided name does not map to
            # an input tensor, or if some other error occurred"; "Each dimension must agree with the network
            # dimension unless the latter was -1", and a shape outside the profile is an error
            # (IOptimizationProfile). On False the context keeps the previous shape: never enqueue then.
            if owner.dynamic and not self.context.set_input_shape(inp, tuple(batch.shape)):
                msg = (
                    f"TensorRT rejected input shape {tuple(batch.shape)} for {inp!r}; "
                    f"profile 0 allows {_dims(owner.min_shape, owner.max_shape)}"
                )
                raise InferenceError(msg)
            slot = self.slots[self.next]
            self.next = (self.next + 1) % len(self.slots)
            rt = cudart()
            check(rt.cudaEventSynchronize(slot.event), "cudaEventSynchronize")
            slot.generation += 1
            outs = {o: tuple(self.context.get_tensor_shape(o)) for o in owner.outputs}
            slot.shapes = {inp: tuple(batch.shape)} | outs
            host_in = slot.host[inp].array.reshape(-1)[: batch.size].reshape(batch.shape)
            np.copyto(host_in, batch, casting="same_kind")
            h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
            check(rt.cudaMemcpyAsync(self.device[inp], slot.host[inp].ptr, host_in.nbytes, h2d, self.stream), "H2D")
            if not self.context.execute_async_v3(self.stream):
                errors = "; ".join(owner._logger.errors[-3:]) or "see the TensorRT log"
                msg = f"TensorRT execute_async_v3 failed: {errors}"
                raise InferenceError(msg)
            for name in owner.outputs if download else ():
                nbytes = int(np.prod(slot.shapes[name])) * owner.dtypes[name].itemsize
                check(rt.cudaMemcpyAsync(slot.host[name].ptr, self.device[name], nbytes, d2h, self.stream), "D2H")
            check(rt.cudaEventRecord(slot.event, self.stream), "cudaEventRecord")
            return TrtPending(slot, owner.outputs, self.device, download)

    def free(self) -> None:
        rt = cudart()
        for slot in self.slots:
            slot.free()
        self.slots.clear()
        for ptr in self.device.values():
            check(rt.cudaFree(ptr), "cudaFree")
        self.device.clear()
        self.context = None


class TrtEngine(ClosesOnExit):
    """A deserialized TensorRT engine with one execution context (+ buffers, pinned slots) per stream."""

    def __init__(self, engine_file: TrtEngineFile, *, stream: Any = None, depth: int = 2) -> None:
        trt = require("tensorrt")
        self.file = engine_file
        self.info = _info(engine_file.metadata)
        self.precision = str(engine_file.metadata.get("precision", "unknown"))
        self._check_portable(trt, engine_file)
        self._logger = _make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        # IRuntime.deserialize_cuda_engine returns None (and logs why) for a plan it cannot load.
        self.engine: Any = self._runtime.deserialize_cuda_engine(engine_file.path.read_bytes())
        if self.engine is None:
            errors = "; ".join(self._logger.errors[-3:])
            msg = f"TensorRT could not load {engine_file.path} ({errors}): rebuild it on this GPU"
            raise EngineBuildError(msg, artifact=engine_file.path)
        self._io(trt)
        rt = cudart()
        self._owns_stream = stream is None
        if self._owns_stream:
            flags = rt.cudaStreamNonBlocking
            self.stream = int(check(rt.cudaStreamCreateWithFlags(flags), "cudaStreamCreate"))
        else:
            self.stream = stream_handle(stream)
        self._depth = depth
        self._lock = threading.Lock()
        self._contexts: dict[int, _StreamContext] = {}
        self._closed = False
        try:
            self._context_for(self.stream)  # fail at load, not at the first call
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _check_portable(trt: Any, engine_file: TrtEngineFile) -> None:
        """Engines are specific to the TensorRT version and the GPU model that built them."""
        built_with = engine_file.metadata.get("tensorrt")
        if built_with != str(trt.__version__):
            msg = (
                f"{engine_file.path} was built with TensorRT {built_with} but {trt.__version__} is installed; "
                "engines are not portable across TensorRT versions: rebuild it with TrtEngineBuilder"
            )
            raise EngineBuildError(msg, artifact=engine_file.path)
        built_on, here = engine_file.metadata.get("gpu"), _gpu_name()
        if built_on is not None and here is not None and built_on != here:
            msg = (
                f"{engine_file.path} was built on a {built_on} but this GPU is a {here}; engines are tuned "
                "for the GPU model that built them: rebuild it here with TrtEngineBuilder"
            )
            raise EngineBuildError(msg, artifact=engine_file.path)

    @classmethod
    def load(cls, source: TrtEngineFile | Path | str, *, stream: Any = None, depth: int = 2) -> TrtEngine:
        """Load an engine file written by :class:`TrtEngineBuilder` (its sidecar is checked too)."""
        return cls(
            source if isinstance(source, TrtEngineFile) else TrtEngineFile.load(source), stream=stream, depth=depth
        )

    def _io(self, trt: Any) -> None:
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        if len(self.inputs) != 1:
            msg = f"{self.file.path} has inputs {self.inputs}; a YOLO detector engine has exactly one image input"
            raise EngineBuildError(msg, artifact=self.file.path)
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        inp = self.inputs[0]
        shape = tuple(int(d) for d in self.engine.get_tensor_shape(inp))
        # ICudaEngine.get_tensor_shape gives -1 for dynamic dims; the range is that of the profile:
        # get_tensor_profile_shape(name, profile_index) -> [min, opt, max].
        self.dynamic = -1 in shape
        if self.dynamic:
            low, _opt, high = self.engine.get_tensor_profile_shape(inp, 0)
            self.min_shape, self.max_shape = tuple(int(d) for d in low), tuple(int(d) for d in high)
        else:
            self.min_shape = self.max_shape = shape
        self.max_batch = self.max_shape[0]

    def _context_for(self, handle: int) -> _StreamContext:
        with self._lock:
            if handle not in self._contexts:
                self._contexts[handle] = _StreamContext(self, handle, self._depth)
            return self._contexts[handle]

    @property
    def context(self) -> Any:
        """The execution context of the engine's own stream (None once closed)."""
        state = self._contexts.get(self.stream)
        return state.context if state is not None else None

    @property
    def contexts(self) -> int:
        """How many execution contexts (one per stream used) this engine holds."""
        return len(self._contexts)

    @property
    def providers(self) -> list[str]:
        return [f"TensorRT {self.file.metadata.get('tensorrt')}"] if not self._closed else []

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run a ``[B, 3, H, W]`` batch (the engine input's dtype, float32 for YOLO exports)."""
        return self.infer_async(batch).wait()

    def infer_async(self, batch: np.ndarray, stream: Any = None, *, download: bool = True) -> TrtPending:
        """Queue upload, ``execute_async_v3`` and download on ``stream`` (or the engine's); no sync.

        The first call on a stream creates its execution context and buffers; the stream must outlive
        the engine (``close()`` waits for the work queued on it).
        """
        if self._closed:
            msg = "engine is closed; load it again with TrtEngine.load(path)"
            raise InferenceError(msg)
        shape = tuple(batch.shape)
        fits = len(shape) == len(self.max_shape) and all(
            lo <= d <= hi for d, lo, hi in zip(shape, self.min_shape, self.max_shape, strict=True)
        )
        if not fits:
            what = "dynamic-shape profile 0 allows" if self.dynamic else "this static engine takes"
            msg = f"input shape {shape} does not fit: {what} {_dims(self.min_shape, self.max_shape)}"
            if not self.dynamic and len(shape) == 4 and shape[1:] == self.max_shape[1:]:
                msg += "; build it from a dynamic-batch ONNX for other batch sizes"
            raise InferenceError(msg)
        handle = self.stream if stream is None else stream_handle(stream)
        return self._context_for(handle).enqueue(batch, download)

    def audit(self) -> PrecisionAudit:
        """Per-layer precisions of this engine (IEngineInspector)."""
        return audit_engine(self.engine, self.context)

    def close(self) -> None:
        """Wait for queued work and free everything. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            for state in self._contexts.values():
                state.free()
            self._contexts.clear()
        self.engine = None
        if self._owns_stream:
            check(cudart().cudaStreamDestroy(self.stream), "cudaStreamDestroy")
            self._owns_stream = False
