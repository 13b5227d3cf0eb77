"""Build TensorRT engines from ONNX with the TensorRT Python API (10.x and 11.x).

* The engine's precision label (and its file name ``<model>-<label>.engine``) comes from what the network
  contains (:func:`~yoloquant.backends.trt.network.scan_onnx`: its Q/DQ types and float weight type) and,
  for a weakly typed TensorRT 10 FP16 build only, from the config; a request the network cannot meet
  is a ``ConfigError``, not a mislabelled file.
* Q/DQ models (INT8 / FP8 from ModelOpt) and FP16 models converted by
  :class:`~yoloquant.quantize.fp16.Fp16Converter` are built as **strongly typed** networks
  (``1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)`` passed to ``create_network``): the types in
  the graph are the types that run. TensorRT 11 builds every network strongly typed (the flag is
  deprecated and ignored there) and has no precision builder flags.
* An FP32 ONNX with ``precision="fp16"`` on TensorRT 10 uses the weakly typed ``BuilderFlag.FP16``
  (removed in 11: there, convert with ``Fp16Converter`` first).
* An optimization profile when any input dimension is dynamic (-1): "When building an ICudaEngine from an
  INetworkDefinition that has dynamically resizable inputs (at least one input tensor has one or more of its
  dimensions specified as -1) ... users need to specify at least one optimization profile" (IOptimizationProfile).
* A timing cache file, read before and written after each build, makes rebuilds fast.
* ``ProfilingVerbosity.DETAILED``, so :mod:`yoloquant.backends.trt.inspect` can audit layer precisions.
* The engine file and its JSON sidecar (names, imgsz, precision label, network types, profile, source
  hashes, TensorRT version, GPU) are written atomically (temp file + rename). ``build_file`` reuses an
  existing engine whose sidecar matches the source hash, config, TensorRT version and GPU; otherwise it
  rebuilds (``reuse=False`` always rebuilds).

Written against the documented API (docs.nvidia.com TensorRT 10 / 11 Python API and the 10.x -> 11.x
migration guide); TensorRT cannot be installed in this project's environments, so this module has run
only against the test double ``tests/doubles/fake_tensorrt.py`` (see docs/gpu.md).

Example:
    >>> builder = TrtEngineBuilder(TrtBuildConfig(max_batch=16))
    >>> engine = builder.build(qdq_model)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yoloquant._io import atomic_write_bytes
from yoloquant._optional import require
from yoloquant.artifacts import OnnxModel, QdqModel, file_sha256
from yoloquant.backends.registry import register_runtime
from yoloquant.backends.trt.network import NetworkTypes, engine_label, scan_onnx
from yoloquant.config import Backend, Precision, _Serializable, parse_enum
from yoloquant.errors import ConfigError, EngineBuildError

__all__ = ["ENGINE_FORMAT", "BuildPlan", "TrtBuildConfig", "TrtEngineBuilder", "TrtEngineFile", "engine_path"]

log = logging.getLogger(__name__)

ENGINE_FORMAT = "yoloquant-trt-engine/1"


@dataclass(frozen=True, kw_only=True)
class TrtBuildConfig(_Serializable):
    """How to build a TensorRT engine.

    Attributes:
        precision: None (default) builds what the network contains (its Q/DQ types, else its float type).
            fp16 / int8 / fp8 / fp32 are checked against the network: int8 / fp8 need those Q/DQ nodes;
            fp16 of an FP32 graph needs a weakly typed TensorRT 10 build (``BuilderFlag.FP16``).
        strongly_typed: None decides: weakly typed only for fp16 of an FP32 graph on TensorRT 10;
            always True on TensorRT 11.
        min_batch / opt_batch / max_batch: The batch range of the profile (dynamic-batch ONNX only).
        workspace_mib: Limit of the builder's workspace memory pool.
        optimization_level: Builder optimization level 0-5 (TensorRT's default is 3).
        timing_cache: File to load / save the timing cache; None keeps it in memory only.
        tf32: Let FP32 layers use TF32 math (``BuilderFlag.TF32``, on by default in TensorRT); False
            clears the flag, for FP32 results that match ONNX Runtime within a pixel.

    Example:
        >>> TrtBuildConfig(precision="fp16", max_batch=16).opt_batch
        1
    """

    precision: Precision | None = None
    strongly_typed: bool | None = None
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 1
    workspace_mib: int = 4096
    optimization_level: int = 3
    timing_cache: str | None = None
    tf32: bool = True

    def __post_init__(self) -> None:
        if self.precision is not None:
            object.__setattr__(self, "precision", parse_enum(Precision, self.precision, option="precision"))
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            batches = f"{self.min_batch}, {self.opt_batch}, {self.max_batch}"
            msg = f"need 1 <= min_batch <= opt_batch <= max_batch, got {batches}"
            raise ConfigError(msg)
        if self.workspace_mib < 16 or not 0 <= self.optimization_level <= 5:
            got = f"{self.workspace_mib}, {self.optimization_level}"
            msg = f"workspace_mib must be >= 16 and optimization_level in 0-5, got {got}"
            raise ConfigError(msg)

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"precision": self.precision.value if self.precision else None}


@dataclass(frozen=True, kw_only=True)
class TrtEngineFile:
    """A serialized engine on disk and its sidecar metadata (``<engine>.json``)."""

    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def sidecar(self) -> Path:
        return self.path.with_suffix(self.path.suffix + ".json")

    @classmethod
    def load(cls, path: Path | str) -> TrtEngineFile:
        """Read the sidecar and check that the engine bytes are the ones it describes."""
        path = Path(path)
        sidecar = path.with_suffix(path.suffix + ".json")
        if not path.is_file() or not sidecar.is_file():
            msg = f"engine {path} or its metadata {sidecar.name} is missing; build it with TrtEngineBuilder"
            raise EngineBuildError(msg, artifact=path)
        metadata = json.loads(sidecar.read_text())
        if metadata.get("format") != ENGINE_FORMAT:
            msg = f"{sidecar} is not a {ENGINE_FORMAT} sidecar (format={metadata.get('format')!r}); rebuild the engine"
            raise EngineBuildError(msg, artifact=path)
        if metadata.get("engine_sha256") != file_sha256(path):
            msg = f"{path} does not match the hash in {sidecar.name}: it was modified or truncated; rebuild it"
            raise EngineBuildError(msg, artifact=path)
        return cls(path=path, metadata=metadata)


def _make_logger(trt: Any) -> Any:
    """A TensorRT logger that forwards to :mod:`logging` and keeps errors for the exception message."""

    class _TrtLogger(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return _TrtLogger()


def _major(trt: Any) -> int:
    return int(str(trt.__version__).split(".", maxsplit=1)[0])


def engine_path(out_dir: Path, model: OnnxModel, label: str) -> Path:
    """``<out_dir>/<model stem without its precision suffix>-<label>.engine``."""
    stem = model.path.stem
    for suffix in ("-fp32", "-fp16", "-int8", "-fp8"):
        stem = stem.removesuffix(suffix)
    return out_dir / f"{stem}-{label}.engine"


@dataclass(frozen=True)
class BuildPlan:
    """What a build will make: the network's types, strongly typed or not, and the precision label."""

    types: NetworkTypes
    strongly_typed: bool
    label: str


@dataclass(frozen=True)
class TrtEngineBuilder:
    """Builds TensorRT engines (``name="tensorrt"``); ``build`` returns a ready :class:`TrtEngine`.

    Attributes:
        config: Build options.
        out_dir: Where ``<model>-<label>.engine`` and its sidecar go; None uses the ONNX's folder.
        reuse: Load an existing engine whose sidecar matches (source hash, config, TensorRT, GPU)
            instead of rebuilding it.
    """

    config: TrtBuildConfig = field(default_factory=TrtBuildConfig)
    out_dir: Path | None = None
    name: str = "tensorrt"
    reuse: bool = True

    def build(self, model: OnnxModel) -> Any:
        """Build (or reuse an up-to-date) engine file for ``model`` and load it."""
        from yoloquant.backends.trt.engine import TrtEngine

        return TrtEngine.load(self.build_file(model))

    def plan(self, model: OnnxModel) -> BuildPlan:
        """What a build of ``model`` would make (raises ConfigError for a request the network cannot meet)."""
        trt = require("tensorrt")
        types = scan_onnx(model.path)
        strongly = self._strongly_typed(trt, types, model)
        label = engine_label(types, self.config.precision, strongly_typed=strongly, source=model.path)
        return BuildPlan(types=types, strongly_typed=strongly, label=label)

    def build_file(self, model: OnnxModel) -> TrtEngineFile:
        """Build the engine file and its sidecar (or reuse matching ones); returns them without loading."""
        trt = require("tensorrt")
        plan = self.plan(model)
        path = engine_path(self.out_dir or model.path.parent, model, plan.label)
        if self.reuse:
            found = self._reusable(trt, model, path)
            if found is not None:
                return found
        logger = _make_logger(trt)
        start = time.perf_counter()
        builder = trt.Builder(logger)
        network, _parser = self._parse(trt, builder, logger, model, plan.strongly_typed)  # outlives the build
        config, profile = self._builder_config(trt, builder, network, model, plan)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            msg = f"TensorRT could not build {model.path}: {'; '.join(logger.errors[-5:]) or 'no error logged'}"
            raise EngineBuildError(msg, artifact=model.path)
        self._save_timing_cache(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, bytes(serialized))
        metadata = self._metadata(trt, model, path, plan, time.perf_counter() - start) | {"profile": profile}
        sidecar = path.with_suffix(path.suffix + ".json")
        atomic_write_bytes(sidecar, json.dumps(metadata, indent=2).encode())
        return TrtEngineFile(path=path, metadata=metadata)

    def _reusable(self, trt: Any, model: OnnxModel, path: Path) -> TrtEngineFile | None:
        if not path.is_file():
            return None
        try:
            found = TrtEngineFile.load(path)
        except EngineBuildError as exc:
            log.info("rebuilding %s: %s", path, exc)
            return None
        meta = found.metadata
        want = {
            "source_sha256": model.sha256(),
            "tensorrt": str(trt.__version__),
            "gpu": _gpu_name(),
            "config": self.config.to_dict(),
        }
        stale = [k for k, v in want.items() if meta.get(k) != v]
        if stale:
            log.info("rebuilding %s: its %s differ", path, ", ".join(stale))
            return None
        log.info("reusing %s (same source, config, TensorRT and GPU)", path)
        return found

    def _strongly_typed(self, trt: Any, types: NetworkTypes, model: OnnxModel) -> bool:
        cfg = self.config
        fp16_of_fp32 = cfg.precision is Precision.FP16 and not types.quantized and types.float_type == "fp32"
        if _major(trt) >= 11:
            if fp16_of_fp32 or cfg.strongly_typed is False:
                msg = (
                    f"TensorRT {trt.__version__} builds strongly typed networks only (BuilderFlag.FP16 was "
                    f"removed in 11), and {model.path} is an FP32 graph: convert it first (Fp16Converter)"
                    if fp16_of_fp32
                    else f"TensorRT {trt.__version__} has no weakly typed networks: leave strongly_typed None"
                )
                raise ConfigError(msg)
            return True
        if cfg.strongly_typed is not None:
            return cfg.strongly_typed
        return not fp16_of_fp32

    def _parse(self, trt: Any, builder: Any, logger: Any, model: OnnxModel, strongly: bool) -> tuple[Any, Any]:
        # TensorRT 11: "Strongly typed mode is always enabled"; the flag is deprecated there, so pass none.
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly and _major(trt) < 11 else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(model.path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            msg = f"TensorRT's ONNX parser rejected {model.path}: {'; '.join(errors[:5])}"
            raise EngineBuildError(msg, artifact=model.path)
        return network, parser

    def _builder_config(
        self, trt: Any, builder: Any, network: Any, model: OnnxModel, plan: BuildPlan
    ) -> tuple[Any, dict[str, list[list[int]]]]:
        cfg = self.config
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
        config.builder_optimization_level = cfg.optimization_level
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if not plan.strongly_typed and plan.label == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)  # TensorRT 10 weak typing (the flag is gone in 11)
        if not self.config.tf32:
            config.clear_flag(trt.BuilderFlag.TF32)  # BuilderFlag.TF32 is set by default
        profile = self._add_profile(builder, config, network, model)
        cache = self._load_timing_cache(config)
        config.set_timing_cache(cache, ignore_mismatch=False)
        return config, profile

    def _profile_shapes(self, shape: tuple[int, ...], model: OnnxModel, name: str) -> list[tuple[int, ...]]:
        """min / opt / max of one input with -1 dims: the batch from the config, C, H, W from the model."""
        cfg = self.config
        if len(shape) != 4:
            msg = f"input {name!r} of {model.path} has dynamic shape {shape}; only [N, C, H, W] images are handled"
            raise EngineBuildError(msg, artifact=model.path)
        fixed = (3, *model.info.imgsz)
        rest = tuple(int(d) if d != -1 else f for d, f in zip(shape[1:], fixed, strict=True))
        batches = (cfg.min_batch, cfg.opt_batch, cfg.max_batch) if shape[0] == -1 else (shape[0],) * 3
        return [(b, *rest) for b in batches]

    def _add_profile(self, builder: Any, config: Any, network: Any, model: OnnxModel) -> dict[str, list[list[int]]]:
        """Profile 0 for the inputs with -1 dims; returns it as ``{input: [min, opt, max]}`` ({} if static)."""
        profile, shapes = None, {}
        for i in range(network.num_inputs):
            inp = network.get_input(i)
            shape = tuple(int(d) for d in inp.shape)
            if -1 not in shape:  # static: TensorRT makes the default profile itself
                if shape and self.config.max_batch > 1 and shape[0] != self.config.max_batch:
                    log.warning("%s has a static batch %d; max_batch is ignored", model.path, shape[0])
                continue
            if profile is None:
                profile = builder.create_optimization_profile()
            low, opt, high = self._profile_shapes(shape, model, inp.name)
            profile.set_shape(inp.name, low, opt, high)
            shapes[str(inp.name)] = [list(low), list(opt), list(high)]
        # IBuilderConfig::addOptimizationProfile: "Returns the index of the optimization profile ... if the
        # input is valid, or -1 if the input is not valid".
        if profile is not None and config.add_optimization_profile(profile) < 0:
            msg = f"TensorRT rejected the optimization profile {shapes} of {model.path}"
            raise EngineBuildError(msg, artifact=model.path)
        return shapes

    def _load_timing_cache(self, config: Any) -> Any:
        path = self.config.timing_cache
        blob = Path(path).read_bytes() if path and Path(path).is_file() else b""
        return config.create_timing_cache(blob)

    def _save_timing_cache(self, config: Any) -> None:
        if self.config.timing_cache:
            cache = config.get_timing_cache()
            if cache is not None:
                atomic_write_bytes(Path(self.config.timing_cache), bytes(cache.serialize()))

    def _metadata(self, trt: Any, model: OnnxModel, path: Path, plan: BuildPlan, seconds: float) -> dict[str, Any]:
        info = model.info
        source = model.source if isinstance(model, QdqModel) else None
        return {
            "format": ENGINE_FORMAT,
            "tensorrt": str(trt.__version__),
            "gpu": _gpu_name(),
            "names": {str(k): v for k, v in info.names.items()},
            "imgsz": list(info.imgsz),
            "stride": info.stride,
            "task": info.task,
            "source_task": info.source_task,
            "kpt_shape": list(info.kpt_shape) if info.kpt_shape else None,
            "head": info.head.value,
            "input_name": info.input_name,
            "dynamic_batch": info.dynamic_batch,
            "precision": plan.label,
            "network_types": plan.types.to_dict(),
            "strongly_typed": plan.strongly_typed,
            "config": self.config.to_dict(),
            "source_onnx": str(model.path),
            "source_sha256": model.sha256(),
            "float_source_sha256": source.sha256() if source is not None else None,
            "engine_sha256": file_sha256(path),
            "build_seconds": round(seconds, 2),
        }


def _gpu_name() -> str | None:
    try:
        cudart = require("cuda.bindings.runtime")
        err, props = cudart.cudaGetDeviceProperties(0)
    except ImportError:
        return None
    if err != cudart.cudaError_t.cudaSuccess:
        return None
    name = props.name
    return name.decode(errors="replace").rstrip("\x00") if isinstance(name, bytes) else str(name)


def _build(model: OnnxModel, threads: int | None) -> Any:
    del threads  # TensorRT runs on the GPU: CPU threads do not apply
    return TrtEngineBuilder().build(model)


def _check() -> None:
    require("tensorrt")


register_runtime(Backend.TENSORRT, _build, check=_check)
