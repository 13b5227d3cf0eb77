"""``TorchEngine``: the Ultralytics checkpoint, compiled by inductor and replayed as one CUDA graph per batch size.

The fastest engine that runs without TensorRT (benchmarks/gpu_torch.py on the lent H200: yolov8n FP16 model
only, batch 1 about 0.5 ms against ONNX Runtime CUDA's 1.4 ms). How it works:

* The checkpoint the ONNX model was exported from (``OnnxModel.checkpoint``) is loaded with Ultralytics, fused,
  cast to the variant's precision (fp32, or fp16 for an fp16 variant), channels-last, with its head in export
  mode: it returns what the exported ONNX returns (``[B, 4 + nc, anchors]``, or ``[B, 300, 6]`` end to end; a
  segmentation model also its ``[B, 32, H/4, W/4]`` prototypes, as a second output).
* A wrapper takes **uint8** ``[B, 3, H, W]`` RGB and divides by 255 on the GPU, so a frame crosses PCIe as
  a quarter of the float bytes.
* ``torch.compile`` (inductor, ``fullgraph=True``, static shapes) compiles it once per batch size, and each
  size is captured as a CUDA graph and replayed: one launch per call.
* The compiled code is saved next to the model (:mod:`yoloquant.backends.torch.compiled`) and loaded back
  by the next build on the same PyTorch and GPU; another PyTorch or GPU is refused with the fix.
* Work runs on one CUDA stream: the caller's (``TorchEngineConfig(stream=...)``: a ``torch.cuda.Stream``) or
  the engine's own. ``infer_async`` returns without waiting; ``infer_gpu`` takes and returns device tensors
  (GPU letterbox in, GPU decode out: :func:`yoloquant.postprocess.gpu.decode_torch`).

Example:
    >>> with TorchEngineBuilder(TorchEngineConfig(batch_sizes=(1, 16))).build(model) as engine:  # doctest: +SKIP
    ...     pending = engine.infer_async(batch_uint8)  # queued on engine.stream
    ...     outputs = pending.wait()  # numpy, float32
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yoloquant._lifecycle import ClosesOnExit
from yoloquant._optional import available, require
from yoloquant.artifacts import ModelInfo, OnnxModel
from yoloquant.backends.registry import register_runtime
from yoloquant.backends.torch.bytecode import warn_if_compiled_from_source
from yoloquant.backends.torch.compiled import (
    ARTIFACT_KINDS,
    ArtifactMeta,
    load_artifact,
    load_package,
    runtime_meta,
    save_artifact,
    save_meta,
    save_package,
)
from yoloquant.backends.torch.precompiled import PrecompiledModel, PrecompileError
from yoloquant.backends.torch.replay import Replay, TorchPending, copy_into
from yoloquant.config import Backend, Precision, parse_enum
from yoloquant.errors import ConfigError, EngineBuildError, InferenceError, MissingDependencyError

__all__ = ["TorchEngine", "TorchEngineBuilder", "TorchEngineConfig", "TorchPending"]

log = logging.getLogger(__name__)

_PRECISIONS = {Precision.FP32: "float32", Precision.FP16: "float16"}


@dataclass(frozen=True, kw_only=True)
class TorchEngineConfig:
    """Options of :class:`TorchEngineBuilder`.

    Attributes:
        precision: ``fp32`` or ``fp16``; None: the model's (an FP16 variant runs in fp16).
        batch_sizes: Batch sizes compiled and captured at build; another size is captured on first use.
        device: CUDA device index.
        compile: Compile with inductor (False: eager PyTorch, still CUDA-graph replayed).
        cuda_graph: Replay each batch size as a CUDA graph.
        artifact: What is saved and loaded back (:mod:`yoloquant.backends.torch.compiled`):
            ``"precompiled"`` (the default), one ahead-of-time compiled function per batch size that loads with
            no tracing (4.6-4.8 s for batch 1 and 16 on the lent H200, against 13.5-14.6 s for the inductor
            cache; it falls back to the inductor cache for a model Dynamo cannot trace as one graph);
            ``"inductor-cache"``, inductor's cache (Dynamo traces each batch size again at every load); or
            ``"aoti"``, an AOTInductor package (minutes to build, once).
        max_batch: An ``aoti`` package runs every batch size up to this one.
        artifact_dir: Where the compiled code is saved and looked for; default ``<model>.torch/`` beside it.
        rebuild: Compile again even if a matching artifact exists (and overwrite it).
        stream: The caller's ``torch.cuda.Stream`` to run on; None: the engine makes its own.
    """

    precision: Precision | str | None = None
    batch_sizes: tuple[int, ...] = (1,)
    device: int = 0
    compile: bool = True
    cuda_graph: bool = True
    artifact: str = "precompiled"
    max_batch: int = 32
    artifact_dir: Path | None = None
    rebuild: bool = False
    stream: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            msg = f"batch_sizes must be positive ints, got {self.batch_sizes!r}"
            raise ConfigError(msg)
        if self.artifact not in ARTIFACT_KINDS:
            msg = f"artifact must be one of {', '.join(ARTIFACT_KINDS)}, got {self.artifact!r}"
            raise ConfigError(msg)
        if self.max_batch < 1:
            msg = f"max_batch must be >= 1, got {self.max_batch}"
            raise ConfigError(msg)


class TorchEngine(ClosesOnExit):
    """A compiled, CUDA-graph-replayed PyTorch model on one CUDA stream. Not thread-safe: one engine per thread.

    Example:
        >>> (out,) = engine.infer(np.zeros((1, 3, 640, 640), np.uint8))  # doctest: +SKIP
    """

    def __init__(self, fn: Any, info: ModelInfo, config: TorchEngineConfig, *, stream: Any, compiled: bool) -> None:
        torch = require("torch")
        self.info = info
        self.config = config
        self.stream = stream
        self.device = torch.device("cuda", config.device)
        self.loaded_artifact = False
        self.build_seconds = 0.0
        self.build_phases: dict[str, float] = {}  # seconds per step of the build, for benchmarks/gpu_torch.py
        self._fn: Any = fn
        self._compiled = compiled
        self._replays: dict[int, Replay] = {}
        self._lock = threading.Lock()

    @property
    def providers(self) -> list[str]:
        return ["torch-inductor" if self._compiled else "torch-eager"] if self._fn is not None else []

    def on_stream(self, stream: Any = None) -> TorchEngine:
        """Another engine on ``stream`` (default: a new one) sharing this one's compiled code, with its own
        CUDA graphs and buffers: one per camera or thread, built in milliseconds instead of a compile."""
        torch = require("torch")
        if self._fn is None:
            msg = "this TorchEngine is closed"
            raise InferenceError(msg)
        twin = TorchEngine(self._fn, self.info, self.config, stream=stream or torch.cuda.Stream(self.device),
                           compiled=self._compiled)  # fmt: skip
        for b in self._replays:
            twin.prepare(b)
        return twin

    def prepare(self, batch_size: int) -> None:
        """Compile and capture ``batch_size`` now instead of at its first call."""
        self._replay(batch_size)

    def _replay(self, batch_size: int) -> Replay:
        if self._fn is None:
            msg = "this TorchEngine is closed"
            raise InferenceError(msg)
        if batch_size not in self._replays:
            h, w = self.info.imgsz
            self._replays[batch_size] = Replay(self._fn, (batch_size, 3, h, w), self.device, self.config.cuda_graph)
        return self._replays[batch_size]

    def capture(self, batch_size: int, post: Any) -> Replay:
        """A new replay of the model followed by ``post`` (its outputs -> tensors) in one CUDA graph, with its own
        input and outputs (:class:`~yoloquant.backends.torch.predictor.TorchPredictor` captures its decode so).
        Call it on the engine's stream's device; the replay runs on whatever stream is current when the caller
        launches it (the predictor gives each batch in flight its own)."""
        if self._fn is None:
            msg = "this TorchEngine is closed"
            raise InferenceError(msg)
        h, w = self.info.imgsz
        return Replay(self._fn, (batch_size, 3, h, w), self.device, self.config.cuda_graph, post)

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run a uint8 ``[B, 3, H, W]`` batch (or float32 in [0, 1], as ``normalize_pixels`` makes it)."""
        return self.infer_async(batch).wait()

    def infer_async(self, batch: np.ndarray, *, download: bool = True) -> TorchPending:
        """Queue upload, run and (``download``) the copy back of a host batch on the engine's stream and return
        without waiting. Uploads and downloads go through pinned memory, so they run asynchronously."""
        torch = require("torch")
        pixels = _as_uint8(batch, self.info)
        with self._lock, torch.cuda.stream(self.stream):
            replay = self._replay(pixels.shape[0])
            if pixels.ctypes.data != replay.staging.data_ptr():  # not filled in place (staging_buffer)
                replay.staged.synchronize()  # the previous upload from this staging buffer has left it
                copy_into(replay.staging, pixels)
            replay.input.copy_(replay.staging, non_blocking=True)
            replay.staged.record()
            outputs = replay.run()
            host = [torch.empty(o.shape, dtype=o.dtype, pin_memory=True) for o in outputs] if download else None
            for h, o in zip(host or (), outputs, strict=False):
                h.copy_(o, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        return TorchPending(outputs, done, host)

    def staging_buffer(self, batch_size: int) -> np.ndarray:
        """The pinned host buffer that :meth:`infer` uploads a ``batch_size`` batch from, as uint8
        ``[B, 3, H, W]``: letterbox frames straight into it and pass it to :meth:`infer` / :meth:`infer_async`,
        which then skip their host copy. Ask for it again before each fill: this waits until the last upload
        from it has left.

        Example:
            >>> buf = engine.staging_buffer(1)  # doctest: +SKIP
            >>> buf[0] = preprocess(frame, 640)[0]  # doctest: +SKIP
            >>> (out,) = engine.infer(buf)  # doctest: +SKIP
        """
        with self._lock:
            replay = self._replay(batch_size)
            replay.staged.synchronize()
            array: np.ndarray = replay.staging.numpy()
        return array

    def infer_gpu(self, pixels: Any) -> list[Any]:
        """Run a uint8 ``[B, 3, H, W]`` device tensor; returns float32 device tensors, ordered on the stream."""
        torch = require("torch")
        if pixels.dtype != torch.uint8 or tuple(pixels.shape[1:]) != (3, *self.info.imgsz):
            h, w = self.info.imgsz
            msg = f"infer_gpu takes uint8 [B, 3, {h}, {w}] device pixels, got {pixels.dtype} {tuple(pixels.shape)}"
            raise InferenceError(msg)
        caller = torch.cuda.current_stream(self.device)
        with self._lock, torch.cuda.stream(self.stream):
            self.stream.wait_stream(caller)  # the pixels were made on the caller's stream
            outputs = self._replay(int(pixels.shape[0])).run(pixels)
        caller.wait_stream(self.stream)
        return outputs

    def close(self) -> None:
        """Drop the graphs, buffers and compiled function (idempotent)."""
        self._replays.clear()
        self._fn = None


def _as_uint8(batch: np.ndarray, info: ModelInfo) -> np.ndarray:
    want = (3, *info.imgsz)
    if batch.ndim != 4 or tuple(batch.shape[1:]) != want:
        msg = f"expected a [B, {want[0]}, {want[1]}, {want[2]}] batch, got shape {batch.shape}"
        raise InferenceError(msg)
    if batch.dtype == np.uint8:
        return batch
    if batch.dtype != np.float32:
        msg = f"expected uint8 pixels or float32 in [0, 1], got {batch.dtype}"
        raise InferenceError(msg)
    return np.rint(batch * np.float32(255)).clip(0, 255).astype(np.uint8)  # exact for normalize_pixels' k/255


def _checkpoint(model: OnnxModel) -> Path:
    source = getattr(model, "source", None)
    path = model.checkpoint or (source.checkpoint if source is not None else None)
    if path is None or not Path(path).is_file():
        msg = (
            f"the torch backend compiles the Ultralytics checkpoint {model.path.name} was exported from, and none is "
            "known; start the plan from QuantPipeline.from_ultralytics('model.pt')"
        )
        raise EngineBuildError(msg, artifact=model.path)
    return Path(path)


def _precision(model: OnnxModel, config: TorchEngineConfig) -> Precision:
    chosen = parse_enum(Precision, config.precision, option="precision") if config.precision else model.precision
    if chosen not in _PRECISIONS:
        msg = f"the torch backend runs fp32 and fp16 variants, not {chosen.value!r} (use TensorRT for int8 / fp8)"
        raise ConfigError(msg)
    return chosen


def _module(checkpoint: Path, precision: Precision, device: Any) -> Any:
    """The checkpoint as a uint8-input module: fused, in ``precision``, channels-last, head in export mode."""
    torch = require("torch")
    yolo = require("ultralytics").YOLO(str(checkpoint)).model
    dtype = getattr(torch, _PRECISIONS[precision])
    net = yolo.fuse().eval().to(device=device, dtype=dtype).to(memory_format=torch.channels_last)
    for m in net.modules():
        if hasattr(m, "export") and hasattr(m, "format") and type(m).__name__ != "YOLO":
            m.export, m.format = True, "onnx"  # Detect & co. return what the ONNX export returns
            # make_anchors reads each stride with .item() (a 0-d tensor): Dynamo cannot trace that in fp16
            # (an unbacked symbol); plain floats give the same anchors
            m.stride = [float(s) for s in m.stride]

    return _uint8_input(net, dtype).eval()


def _uint8_input(net: Any, dtype: Any) -> Any:
    """``net`` behind a uint8 input (``/255`` on the GPU), as an instance of a module-level class: a precompiled
    function's saved guard state names it by module and name (so it must exist before a load, which
    ``_module`` ensures), and Dynamo refuses to save classes defined in a function's scope."""
    cls = globals().get("_UInt8Input")
    if cls is None:  # made on first use: torch is imported lazily, so the class cannot be defined at import
        torch = require("torch")

        class _UInt8Input(torch.nn.Module):  # type: ignore[misc,name-defined]
            def __init__(self, net: Any, dtype: Any) -> None:
                super().__init__()
                self.net, self.dtype, self.layout = net, dtype, torch.channels_last

            def forward(self, x: Any) -> Any:
                out = self.net(x.to(self.dtype).div(255).contiguous(memory_format=self.layout))
                return tuple(out) if isinstance(out, (list, tuple)) else out  # seg: detections and prototypes

        _UInt8Input.__qualname__ = "_UInt8Input"  # importable by module and name, like a top-level class
        globals()["_UInt8Input"] = cls = _UInt8Input
    return cls(net, dtype)


class TorchEngineBuilder:
    """Builds :class:`TorchEngine` s: compile (or load the saved compiled code), capture, warm up.

    Example:
        >>> engine = TorchEngineBuilder(TorchEngineConfig(batch_sizes=(1,))).build(model)  # doctest: +SKIP
    """

    name = "torch"

    def __init__(self, config: TorchEngineConfig | None = None) -> None:
        self.config = config or TorchEngineConfig()

    def build(self, model: OnnxModel) -> TorchEngine:
        check_torch_cuda()
        torch = require("torch")
        cfg = self.config
        clock = _Clock()
        checkpoint, precision = _checkpoint(model), _precision(model, cfg)
        folder = cfg.artifact_dir or model.path.with_suffix(".torch")
        kind = cfg.artifact if cfg.compile else None
        meta = runtime_meta(checkpoint, precision=precision.value, batch_sizes=cfg.batch_sizes, imgsz=model.info.imgsz,
                            device=cfg.device, kind=kind or "inductor-cache")  # fmt: skip
        clock("checkpoint_hash")
        loaded = load_artifact(folder, meta) if kind and not cfg.rebuild else None
        clock("artifact")
        fn, module, meta = self._function(model, meta, loaded, source=(checkpoint, precision), folder=folder,
                                          clock=clock)  # fmt: skip
        stream = cfg.stream or torch.cuda.Stream(device=cfg.device)
        saves = kind in ("precompiled", "inductor-cache")
        engine: TorchEngine | None = None
        try:
            if saves:
                try:
                    _compile_all(fn, cfg.batch_sizes, model.info.imgsz, cfg.device, clock)
                except Exception as exc:
                    if "fullgraph" not in str(exc):
                        raise
                    # Dynamo broke the graph somewhere (YOLO26's head on torch 2.11): compile the pieces instead;
                    # the CUDA graph still captures all of them, so a call is still one replay
                    fn = torch.compile(module, dynamic=False)
                    clock("graph_break_recompile")
                    _compile_all(fn, cfg.batch_sizes, model.info.imgsz, cfg.device, clock)
                _save(fn, folder, loaded, meta)  # the compiled code is kept even if a capture fails next
            engine = TorchEngine(fn, model.info, cfg, stream=stream, compiled=cfg.compile)
            _prepare_all(engine, cfg.batch_sizes, clock)
        except Exception as exc:  # inductor / CUDA raise assorted types
            if engine is not None:
                engine.close()
            msg = f"compiling {checkpoint.name} for the torch backend failed: {exc}"
            raise EngineBuildError(msg, artifact=checkpoint) from exc
        engine.loaded_artifact, engine.build_seconds = loaded is not None, clock.total()
        engine.build_phases = {k: round(v, 3) for k, v in clock.phases.items()}
        dynamo = sys.modules.get("torch._dynamo")
        if dynamo is not None and dynamo.__file__:  # imported by this build: did Python compile it from source?
            warn_if_compiled_from_source(Path(dynamo.__file__))
        return engine

    def _function(self, model: OnnxModel, meta: ArtifactMeta, loaded: ArtifactMeta | None, *,
                  source: tuple[Path, Precision], folder: Path,
                  clock: _Clock) -> tuple[Any, Any, ArtifactMeta]:  # fmt: skip
        """What the engine runs, the module it came from (None for a loaded package) and the metadata of what
        is to be saved. ``source``: the checkpoint and the precision it runs in."""
        torch = require("torch")
        cfg = self.config
        checkpoint, precision = source
        device = torch.device("cuda", cfg.device)
        if cfg.compile and cfg.artifact == "aoti":
            if loaded is None:
                module = _module(checkpoint, precision, device)
                clock("ultralytics_load")
                max_batch = max(cfg.max_batch, *cfg.batch_sizes)
                save_package(folder, module, dataclasses.replace(meta, max_batch=max_batch))
                clock("aoti_compile")
            fn = load_package(folder, single_threaded=cfg.cuda_graph)
            clock("aoti_load")
            return fn, None, meta
        module = _module(checkpoint, precision, device)
        clock("ultralytics_load")
        if cfg.compile and cfg.artifact == "precompiled":
            if loaded is not None and loaded.fallback is not None:  # tried before: Dynamo breaks the graph
                meta = dataclasses.replace(meta, kind="inductor-cache", fallback=loaded.fallback)
            else:
                precompiled, meta = _precompiled(module, model.info.imgsz, meta, loaded, folder=folder, clock=clock)
                if precompiled is not None:
                    return precompiled, module, meta
        return (torch.compile(module, fullgraph=True, dynamic=False) if cfg.compile else module), module, meta


class _Clock:
    """Seconds per step of a build (``TorchEngine.build_phases``, for benchmarks/gpu_torch.py)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.phases: dict[str, float] = {}

    def __call__(self, step: str) -> None:
        self.phases[step] = self.total() - sum(self.phases.values())

    def total(self) -> float:
        return time.perf_counter() - self.start


def _precompiled(module: Any, imgsz: tuple[int, int], meta: ArtifactMeta, loaded: ArtifactMeta | None, *,
                 folder: Path, clock: _Clock) -> tuple[PrecompiledModel | None, ArtifactMeta]:  # fmt: skip
    """The saved compiled functions of ``meta``'s batch sizes, the missing ones compiled; or None and the
    metadata of an inductor-cache fallback when Dynamo cannot trace the model as one graph."""
    fn = PrecompiledModel(module, imgsz, saved=folder if loaded is not None else None)
    if loaded is not None:
        fn.load(folder, tuple(b for b in meta.batch_sizes if b in loaded.batch_sizes))
        clock("precompiled_load")
    try:
        for b in meta.batch_sizes:
            if b not in fn.by_batch:
                fn.compile(b)
                clock(f"precompile_b{b}")
    except PrecompileError as exc:
        log.warning("%s; saving an inductor cache instead (artifact='inductor-cache')", exc)
        return None, dataclasses.replace(meta, kind="inductor-cache", fallback=str(exc)[:300])
    return fn, meta


def _save(fn: Any, folder: Path, loaded: ArtifactMeta | None, meta: ArtifactMeta) -> None:
    """Save what this build compiled that the folder did not hold yet, then the metadata (``meta.kind``: what
    was built, the inductor cache also where a precompile fell back)."""
    before = set(loaded.batch_sizes) if loaded is not None and loaded.kind == meta.kind else set()
    if isinstance(fn, PrecompiledModel) and fn.unsaved:
        fn.save(folder)
        save_meta(folder, dataclasses.replace(meta, batch_sizes=tuple(sorted(before | set(fn.by_batch)))))
    elif meta.kind == "inductor-cache" and not set(meta.batch_sizes) <= before:
        save_artifact(folder, dataclasses.replace(meta, batch_sizes=tuple(sorted(before | set(meta.batch_sizes)))))


def _compile_all(fn: Any, sizes: tuple[int, ...], imgsz: tuple[int, int], device: int, clock: _Clock) -> None:
    """Run ``fn`` once per batch size, so each is compiled (or its saved code loaded and warmed) before saving."""
    torch = require("torch")
    with torch.inference_mode():
        for b in sizes:
            fn(torch.zeros((b, 3, *imgsz), dtype=torch.uint8, device=torch.device("cuda", device)))
            clock(f"compile_b{b}")


def _prepare_all(engine: TorchEngine, sizes: tuple[int, ...], clock: _Clock) -> None:
    for b in sizes:
        engine.prepare(b)
        clock(f"capture_b{b}")


def check_torch_cuda() -> None:
    """Fail now if PyTorch with CUDA, a GPU, or Ultralytics is missing, naming what to install."""
    if not available("torch") or not available("ultralytics"):
        msg = 'the torch backend needs PyTorch with CUDA and Ultralytics: pip install "yoloquant[ultralytics]"'
        raise MissingDependencyError(msg)
    if not require("torch").cuda.is_available():
        msg = "the torch backend needs a CUDA GPU, and PyTorch sees none here (torch.cuda.is_available() is False)"
        raise MissingDependencyError(msg)


def _build(model: OnnxModel, threads: int | None) -> TorchEngine:
    del threads  # a GPU engine: CPU threads do not apply
    return TorchEngineBuilder().build(model)


register_runtime(Backend.TORCH, _build, check=check_torch_cuda)
