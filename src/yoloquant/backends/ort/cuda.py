"""``CudaEngine``: ONNX Runtime's CUDA execution provider with IOBinding, CUDA streams and CUDA graphs.

How it works:

* The session runs on one CUDA stream, passed to ONNX Runtime as the ``user_compute_stream`` provider
  option: the caller's (``CudaEngineBuilder(stream=...)``) or one the engine creates and owns.
* Inputs and outputs are bound with IOBinding to device buffers the engine allocates once per batch
  size (ONNX Runtime ``OrtValue`` on ``"cuda"``), so a run copies nothing it does not have to.
* Uploads and downloads are ``cudaMemcpyAsync`` from / to pinned (page-locked) host buffers on the same
  stream, and the run is issued with ``disable_synchronize_execution_providers=1``: ``infer_async``
  returns as soon as the work is queued. Every step is ordered on one stream, so the device buffers
  can be reused without waiting; only the pinned host buffers are a ring of ``depth`` slots.
* ``cuda_graph=True`` sets ONNX Runtime's ``enable_cuda_graph``: after warm-up runs the whole model is
  captured once and replayed on every later run (fixed input shape and fixed buffer addresses, which
  IOBinding gives; every node must run on the CUDA EP, so export with a static batch).

Streams, events and pinned memory come from NVIDIA's ``cuda-python`` (``cuda.bindings.runtime``,
the ``cuda-bindings`` package), the one CUDA runtime binding that exists both on our GPU machine and
in a plain ``pip install cuda-python``. A stream is a plain ``cudaStream_t`` handle, so streams made by
PyTorch (``torch.cuda.Stream().cuda_stream``) or CuPy (``cupy.cuda.Stream().ptr``) work as well.

Example:
    >>> builder = CudaEngineBuilder(cuda_graph=True)
    >>> with builder.build(OnnxModel.load("yolov8n.onnx")) as engine:  # doctest: +SKIP
    ...     pending = engine.infer_async(batch)  # queued on engine.stream, not waited for
    ...     outputs = pending.wait()  # synchronizes, returns numpy arrays
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yoloquant._lifecycle import ClosesOnExit
from yoloquant._optional import require
from yoloquant.artifacts import ModelInfo, OnnxModel
from yoloquant.backends._cuda import check, cudart, gpu_memory_used, stream_handle
from yoloquant.backends.ort.cuda_io import PendingOutputs, _BatchBuffers, _Slot
from yoloquant.errors import ConfigError, EngineBuildError, InferenceError

__all__ = ["CudaEngine", "CudaEngineBuilder", "PendingOutputs", "gpu_memory_used", "stream_handle"]

log = logging.getLogger(__name__)

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}
_CONV_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
_FIX_GPU = (
    'install the GPU build of ONNX Runtime (pip uninstall onnxruntime && pip install "yoloquant[gpu]", '
    "i.e. onnxruntime-gpu + cuda-python) on a machine with an NVIDIA driver"
)


class CudaEngine(ClosesOnExit):
    """An ONNX Runtime CUDA-EP session bound to device buffers and run on one CUDA stream.

    Not thread-safe: use one engine per thread (engines are cheap; several can share a stream or each
    have their own). ``infer`` is ``infer_async(...).wait()``.

    Example:
        >>> with CudaEngineBuilder().build(OnnxModel.load("yolov8n.onnx")) as engine:  # doctest: +SKIP
        ...     (out,) = engine.infer(np.zeros((1, 3, 640, 640), np.float32))
    """

    def __init__(
        self,
        session: Any,
        info: ModelInfo,
        *,
        stream: int,
        owns_stream: bool,
        device_id: int,
        depth: int,
        cuda_graph: bool,
    ) -> None:
        self.info = info
        self.session: Any = session
        self.stream = stream
        self.device_id = device_id
        self.cuda_graph = cuda_graph
        self._owns_stream = owns_stream
        self._depth = depth
        inp = session.get_inputs()[0]
        self.input_name: str = inp.name
        self.input_dtype: Any = _ORT_TYPES.get(inp.type, np.float32)
        self._fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        outs = session.get_outputs()
        self.output_names: list[str] = [o.name for o in outs]
        self.output_dtypes: list[Any] = [_ORT_TYPES.get(o.type, np.float32) for o in outs]
        self._static_out = [o.shape if all(isinstance(d, int) for d in o.shape) else None for o in outs]
        self._buffers: dict[int, _BatchBuffers] = {}
        self._run_options: Any = None
        self._lock = threading.Lock()
        # ONNX Runtime keeps a CUDA graph per calling thread, and capturing in one thread while others
        # use the GPU invalidates the capture; so a graph engine issues every run from one thread of its
        # own, which captures once (at build, in the builder's warm-up) and replays from then on.
        self._runner = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="yoloquant-cuda-graph") if cuda_graph else None
        )
        self._events: list[Any] = []

    @property
    def providers(self) -> list[str]:
        """Execution providers the session really uses."""
        return list(self.session.get_providers()) if self.session is not None else []

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run a float32 ``[B, 3, H, W]`` batch in [0, 1]; returns the raw outputs as numpy arrays."""
        return self.infer_async(batch).wait()

    def infer_async(self, batch: np.ndarray, stream: Any = None, *, download: bool = True) -> PendingOutputs:
        """Queue upload, run and download of ``batch`` and return without waiting for the GPU.

        Args:
            batch: float32 ``[B, 3, H, W]`` in [0, 1] (uint8 in [0, 255] when the engine was built
                with ``uint8_input=True``).
            stream: A stream the work must be ordered with (cuda-python, torch, cupy or int handle).
                None, or the engine's own stream, queues directly. Another stream is joined with events:
                the engine's stream waits for work already queued on ``stream``, and ``stream`` waits
                for this call, so stream order holds as if the work ran there.
            download: Copy the outputs to pinned host memory. False leaves them on the device only, for
                GPU postprocessing (:func:`yoloquant.postprocess.gpu.decode_pending`); ``wait()`` then
                returns no arrays.

        Returns:
            A :class:`PendingOutputs`; ``wait()`` synchronizes and returns the numpy outputs.
        """
        if self.session is None:
            msg = "engine is closed; build a new one with CudaEngineBuilder().build(model)"
            raise InferenceError(msg)
        batch = self.check(batch)
        rt = cudart()
        caller = None if stream is None else stream_handle(stream)
        buffers = self._buffers_for(batch.shape[0])
        slot = buffers.slots[buffers.next]
        buffers.next = (buffers.next + 1) % len(buffers.slots)
        # The pinned slot may still be in flight from `depth` calls ago: wait for it before overwriting.
        check(rt.cudaEventSynchronize(slot.event), "cudaEventSynchronize")
        slot.generation += 1
        if batch.ctypes.data != slot.input.ptr:  # not already written in place via staging_buffer()
            np.copyto(slot.input.array, batch, casting="same_kind")
        if caller is not None and caller != self.stream:
            self._join(caller, self.stream)
        self._queue(buffers, slot, download)
        if caller is not None and caller != self.stream:
            self._join(self.stream, caller)
        return PendingOutputs(self, buffers, slot, download)

    def staging_buffer(self, batch: int) -> np.ndarray:
        """The pinned host array the next ``infer_async`` of this batch size uploads from.

        Writing the batch straight into it (``np.stack(images, out=engine.staging_buffer(16))``) and
        passing it to :meth:`infer_async` saves one host copy of the whole batch.
        """
        if self.session is None:
            msg = "engine is closed; build a new one with CudaEngineBuilder().build(model)"
            raise InferenceError(msg)
        buffers = self._buffers_for(batch)
        slot = buffers.slots[buffers.next]
        check(cudart().cudaEventSynchronize(slot.event), "cudaEventSynchronize")
        return slot.input.array

    def _queue(self, buffers: _BatchBuffers, slot: _Slot, download: bool) -> None:
        rt = cudart()
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        dev_in = int(buffers.input.data_ptr())
        check(rt.cudaMemcpyAsync(dev_in, slot.input.ptr, slot.input.nbytes, h2d, self.stream), "cudaMemcpyAsync")
        try:
            if self._runner is None:
                self.session.run_with_iobinding(buffers.binding, self._options())
            else:
                self._runner.submit(self.session.run_with_iobinding, buffers.binding, self._options()).result()
        except Exception as exc:  # onnxruntime's own exception types, translated here
            msg = f"ONNX Runtime CUDA EP failed on a batch of {buffers.batch}: {exc}"
            raise InferenceError(msg) from exc
        for value, pinned in zip(buffers.outputs, slot.outputs, strict=True):
            if not download:
                break
            ptr = int(value.data_ptr())
            check(rt.cudaMemcpyAsync(pinned.ptr, ptr, pinned.nbytes, d2h, self.stream), "cudaMemcpyAsync")
        check(rt.cudaEventRecord(slot.event, self.stream), "cudaEventRecord")

    def _join(self, waited: int, waiter: int) -> None:
        """Make stream ``waiter`` wait for the work queued so far on stream ``waited``."""
        rt = cudart()
        event = check(rt.cudaEventCreateWithFlags(rt.cudaEventDisableTiming), "cudaEventCreate")
        check(rt.cudaEventRecord(event, waited), "cudaEventRecord")
        check(rt.cudaStreamWaitEvent(waiter, event, 0), "cudaStreamWaitEvent")
        check(rt.cudaEventDestroy(event), "cudaEventDestroy")  # released once the wait completes

    def _options(self) -> Any:
        if self._run_options is None:
            ort = require("onnxruntime")
            opts = ort.RunOptions()
            # Return as soon as the kernels are queued; the caller synchronizes through the event.
            opts.add_run_config_entry("disable_synchronize_execution_providers", "1")
            self._run_options = opts
        return self._run_options

    def _buffers_for(self, batch: int) -> _BatchBuffers:
        found = self._buffers.get(batch)
        if found is not None:
            return found
        if self.cuda_graph and self._buffers:
            msg = (
                f"a CUDA-graph engine runs one input shape; it was captured for batch {next(iter(self._buffers))} "
                f"and got batch {batch}: build one engine per batch size, or set cuda_graph=False"
            )
            raise InferenceError(msg)
        shapes = self._output_shapes(batch)
        with self._lock:
            self._buffers[batch] = _BatchBuffers(self, batch, shapes, self._depth)
        return self._buffers[batch]

    def _output_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """Output shapes for a batch size: from the graph when static, else from one probe run."""
        if all(s is not None for s in self._static_out):
            return [tuple(int(d) for d in s) for s in self._static_out if s is not None]
        h, w = self.info.imgsz
        probe = np.zeros((batch, 3, h, w), self.input_dtype)
        try:
            outputs = self.session.run(self.output_names, {self.input_name: probe})
        except Exception as exc:  # onnxruntime's own exception types
            msg = f"ONNX Runtime CUDA EP could not run a probe batch of {batch}: {exc}"
            raise InferenceError(msg) from exc
        return [tuple(o.shape) for o in outputs]

    def check(self, batch: np.ndarray) -> np.ndarray:
        h, w = self.info.imgsz
        want = np.dtype(self.input_dtype)
        ok_dtype = batch.dtype == want or (batch.dtype == np.float32 and want == np.float16)
        if not ok_dtype or batch.ndim != 4 or batch.shape[1:] != (3, h, w):
            msg = f"expected a {want} batch of shape [B, 3, {h}, {w}], got {batch.dtype} {batch.shape}"
            raise InferenceError(msg)
        if self._fixed_batch is not None and batch.shape[0] != self._fixed_batch:
            msg = (
                f"this model was exported for batch {self._fixed_batch} but got batch {batch.shape[0]}; "
                "export with dynamic=True to run other batch sizes"
            )
            raise InferenceError(msg)
        return batch

    def synchronize(self) -> None:
        """Block until all work queued on the engine's stream is done."""
        if self.session is not None:
            check(cudart().cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def close(self) -> None:
        """Wait for queued work, free buffers, the session and an owned stream. Safe to call twice."""
        if self.session is None:
            return
        rt = cudart()
        check(rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        for buffers in self._buffers.values():
            buffers.free()
        self._buffers.clear()
        self.session = None
        if self._runner is not None:
            self._runner.shutdown()
            self._runner = None
        if self._owns_stream:
            check(rt.cudaStreamDestroy(self.stream), "cudaStreamDestroy")
        self._owns_stream = False


@dataclass(frozen=True, kw_only=True)
class CudaEngineBuilder:
    """Builds :class:`CudaEngine` sessions on ONNX Runtime's CUDA execution provider.

    Attributes:
        device_id: CUDA device ordinal.
        stream: A stream to run on (int handle, torch / cupy / cuda-python stream); None creates one
            per engine, owned and destroyed by it.
        cuda_graph: Capture the model into a CUDA graph and replay it (static input shape only).
        depth: Pinned host slots per batch size: how many ``infer_async`` calls may be in flight.
        tf32: Allow TF32 math in FP32 convolutions (faster on Ampere+, not bit-comparable with CPU).
        conv_algo_search: cuDNN algorithm search: ``EXHAUSTIVE`` (best kernels, slower build),
            ``HEURISTIC`` or ``DEFAULT``.
        warmup: Runs at build time (CUDA-graph capture happens on ONNX Runtime's third run).
        batch: Batch size to warm up (and capture) at build; None uses the model's static batch or 1.
        uint8_input: Take uint8 ``[B, 3, H, W]`` letterboxed pixels and divide by 255 on the GPU (a
            ``Cast`` + ``Div`` prepended to the graph): a quarter of the upload bytes, same values.
        prefer_nhwc: ONNX Runtime's ``prefer_nhwc`` CUDA option: channels-last convolutions, which
            tensor cores run without layout transposes (helps FP16).
    """

    device_id: int = 0
    stream: Any = field(default=None, compare=False)
    cuda_graph: bool = False
    depth: int = 2
    tf32: bool = False
    conv_algo_search: str = "EXHAUSTIVE"
    warmup: int = 3
    batch: int | None = None
    uint8_input: bool = False
    prefer_nhwc: bool = False
    name: str = "onnxruntime-cuda"

    def __post_init__(self) -> None:
        if self.depth < 1 or self.warmup < 0 or self.device_id < 0:
            msg = f"depth must be >= 1, warmup and device_id >= 0; got {self.depth}, {self.warmup}, {self.device_id}"
            raise ConfigError(msg)
        if self.conv_algo_search not in _CONV_SEARCH:
            msg = f"conv_algo_search must be one of {_CONV_SEARCH}, got {self.conv_algo_search!r}"
            raise ConfigError(msg)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "cuda_graph": self.cuda_graph,
            "depth": self.depth,
            "tf32": self.tf32,
            "conv_algo_search": self.conv_algo_search,
            "warmup": self.warmup,
            "batch": self.batch,
            "uint8_input": self.uint8_input,
            "prefer_nhwc": self.prefer_nhwc,
        }

    def provider_options(self, stream: int) -> dict[str, str]:
        """The CUDA EP provider options this builder passes (documented ONNX Runtime keys)."""
        return {
            "device_id": str(self.device_id),
            "user_compute_stream": str(stream),
            "enable_cuda_graph": "1" if self.cuda_graph else "0",
            "use_tf32": "1" if self.tf32 else "0",
            "cudnn_conv_algo_search": self.conv_algo_search,
            "cudnn_conv_use_max_workspace": "1",
            "arena_extend_strategy": "kSameAsRequested",
            "prefer_nhwc": "1" if self.prefer_nhwc else "0",
        }

    def build(self, model: OnnxModel) -> CudaEngine:
        ort = require("onnxruntime")
        rt = _require_cuda(model)
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            msg = f"CUDAExecutionProvider is not in this ONNX Runtime ({ort.get_available_providers()}); {_FIX_GPU}"
            raise EngineBuildError(msg, artifact=model.path)
        check(rt.cudaSetDevice(self.device_id), "cudaSetDevice")
        owns = self.stream is None
        if owns:
            stream = int(check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreate"))
        else:
            stream = stream_handle(self.stream)
        try:
            session = self._session(ort, model, stream)
            engine = CudaEngine(
                session,
                model.info,
                stream=stream,
                owns_stream=owns,
                device_id=self.device_id,
                depth=self.depth,
                cuda_graph=self.cuda_graph,
            )
        except BaseException:
            if owns:
                rt.cudaStreamDestroy(stream)
            raise
        self._warm_up(engine, model)
        return engine

    def _session(self, ort: Any, model: OnnxModel, stream: int) -> Any:
        from yoloquant.backends.ort.engine import session_options

        opts = session_options(None)
        providers = [("CUDAExecutionProvider", self.provider_options(stream)), "CPUExecutionProvider"]
        source: str | bytes = with_uint8_input(model.path) if self.uint8_input else str(model.path)
        try:
            session = ort.InferenceSession(source, sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime's own exception types
            hint = (
                "; CUDA graphs need every node on the CUDA EP: export with a static batch (dynamic=False)"
                if self.cuda_graph
                else ""
            )
            msg = f"ONNX Runtime CUDA EP could not load {model.path}: {exc}{hint}"
            raise EngineBuildError(msg, artifact=model.path) from exc
        if session.get_providers()[0] != "CUDAExecutionProvider":
            msg = f"ONNX Runtime fell back to {session.get_providers()} for {model.path}; {_FIX_GPU}"
            raise EngineBuildError(msg, artifact=model.path)
        return session

    def _warm_up(self, engine: CudaEngine, model: OnnxModel) -> None:
        if not self.warmup:
            return
        h, w = model.info.imgsz
        batch = self.batch or engine._fixed_batch or 1
        x = np.zeros((batch, 3, h, w), engine.input_dtype)
        try:
            for _ in range(self.warmup):
                engine.infer(x)
        except InferenceError as exc:
            engine.close()
            msg = f"warm-up of {model.path} on the CUDA EP failed: {exc}"
            raise EngineBuildError(msg, artifact=model.path) from exc


def with_uint8_input(path: Path) -> bytes:
    """The model at ``path`` with a uint8 image input scaled by ``Cast`` + ``Div(255)`` inside the graph.

    ``Div`` by 255 in float32 gives the same values as ``x.astype(np.float32) / 255.0`` on the CPU.
    """
    onnx = require("onnx")
    proto = onnx.load(str(path))
    graph = proto.graph
    inp = graph.input[0]
    scaled = f"{inp.name}_scaled"
    for node in graph.node:
        node.input[:] = [scaled if name == inp.name else name for name in node.input]
    raw = f"{inp.name}_float"
    divisor = onnx.helper.make_tensor(f"{inp.name}_255", onnx.TensorProto.FLOAT, [], [255.0])
    graph.initializer.append(divisor)
    cast = onnx.helper.make_node("Cast", [inp.name], [raw], to=onnx.TensorProto.FLOAT, name="yoloquant_uint8_cast")
    div = onnx.helper.make_node("Div", [raw, divisor.name], [scaled], name="yoloquant_uint8_scale")
    graph.node.insert(0, div)
    graph.node.insert(0, cast)
    inp.type.tensor_type.elem_type = onnx.TensorProto.UINT8
    return bytes(proto.SerializeToString())


def _require_cuda(model: OnnxModel) -> Any:
    """cuda-python's runtime module, loading the CUDA libraries ONNX Runtime needs from pip wheels."""
    try:
        rt = cudart()
    except ImportError as exc:
        msg = f"cuda-python is needed for streams and pinned memory ({exc}); pip install cuda-python"
        raise EngineBuildError(msg, artifact=model.path) from exc
    ort = require("onnxruntime")
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:  # onnxruntime-gpu >= 1.21 finds cuDNN / cuBLAS in nvidia-* wheels this way
        try:
            preload()
        except Exception as exc:  # best effort: a system CUDA install may still work
            log.debug("onnxruntime.preload_dlls failed: %s", exc)
    return rt
