"""Build TensorRT engines from ONNX with the TensorRT Python API (10.x and 11.x).

* Q/DQ models (INT8 / FP8 from ModelOpt) and FP16 models converted by
  :class:`~yoloquant.quantize.fp16.Fp16Converter` are built as **strongly typed** networks
  (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``): the types in the graph are the types that run.
  TensorRT 11 builds every network strongly typed and has no precision builder flags.
* An FP32 ONNX with ``precision="fp16"`` on TensorRT 10 uses the weakly typed ``BuilderFlag.FP16``
  (deprecated in 10.12, removed in 11: there, convert with ``Fp16Converter`` first).
* One optimization profile for the batch (min / opt / max) when the ONNX batch is dynamic.
* A timing cache file, read before and written after each build, makes rebuilds fast.
* ``ProfilingVerbosity.DETAILED``, so :mod:`yoloquant.backends.trt.inspect` can audit layer precisions.
* The engine file and its JSON sidecar (names, imgsz, precision, profile, source hashes, TensorRT
  version, GPU) are written atomically (temp file + rename).

Written against the documented API (docs.nvidia.com TensorRT 10 / 11 Python API and the 10.x -> 11.x
migration guide); TensorRT cannot be installed in this project's environments, so this module has not
run (see docs/gpu.md).

Example:
    >>> builder = TrtEngineBuilder(TrtBuildConfig(precision="int8", max_batch=16))
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
from yoloquant.config import Backend, Precision, _Serializable, parse_enum
from yoloquant.errors import ConfigError, EngineBuildError

__all__ = ["ENGINE_FORMAT", "TrtBuildConfig", "TrtEngineBuilder", "TrtEngineFile"]

log = logging.getLogger(__name__)

ENGINE_FORMAT = "yoloquant-trt-engine/1"


@dataclass(frozen=True, kw_only=True)
class TrtBuildConfig(_Serializable):
    """How to build a TensorRT engine.

    Attributes:
        precision: fp32, fp16, int8 or fp8. int8 / fp8 need a Q/DQ model (explicit quantization).
        strongly_typed: None decides: True for Q/DQ and pre-converted FP16 models and on TensorRT 11.
        min_batch / opt_batch / max_batch: The batch profile (dynamic-batch ONNX only).
        workspace_mib: Limit of the builder's workspace memory pool.
        optimization_level: Builder optimization level 0-5 (TensorRT's default is 3).
        timing_cache: File to load / save the timing cache; None keeps it in memory only.

    Example:
        >>> TrtBuildConfig(precision="fp16", max_batch=16).opt_batch
        1
    """

    precision: Precision = Precision.FP16
    strongly_typed: bool | None = None
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 1
    workspace_mib: int = 4096
    optimization_level: int = 3
    timing_cache: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", parse_enum(Precision, self.precision, option="precision"))
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            batches = f"{self.min_batch}, {self.opt_batch}, {self.max_batch}"
            msg = f"need 1 <= min_batch <= opt_batch <= max_batch, got {batches}"
            raise ConfigError(msg)
        if self.workspace_mib < 16 or not 0 <= self.optimization_level <= 5:
            got = f"{self.workspace_mib}, {self.optimization_level}"
            msg = f"workspace_mib must be >= 16 and optimization_level in 0-5, got {got}"
            raise ConfigError(msg)


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


@dataclass(frozen=True)
class TrtEngineBuilder:
    """Builds TensorRT engines (``name="tensorrt"``); ``build`` returns a ready :class:`TrtEngine`.

    Attributes:
        config: Build options.
        out_dir: Where ``<model>-<precision>.engine`` and its sidecar go; None uses the ONNX's folder.
    """

    config: TrtBuildConfig = field(default_factory=TrtBuildConfig)
    out_dir: Path | None = None
    name: str = "tensorrt"

    def build(self, model: OnnxModel) -> Any:
        """Build (or reuse an up-to-date) engine file for ``model`` and load it."""
        from yoloquant.backends.trt.engine import TrtEngine

        return TrtEngine.load(self.build_file(model))

    def build_file(self, model: OnnxModel) -> TrtEngineFile:
        """Build the engine file and its sidecar; returns them without loading the engine."""
        trt = require("tensorrt")
        logger = _make_logger(trt)
        strongly = self._strongly_typed(trt, model)
        start = time.perf_counter()
        builder = trt.Builder(logger)
        network, _parser = self._parse(trt, builder, logger, model, strongly)  # the parser outlives the build
        config = self._builder_config(trt, builder, network, model, strongly)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            msg = f"TensorRT could not build {model.path}: {'; '.join(logger.errors[-5:]) or 'no error logged'}"
            raise EngineBuildError(msg, artifact=model.path)
        self._save_timing_cache(config)
        out_dir = self.out_dir or model.path.parent
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{model.path.stem}-{self.config.precision.value}.engine"
        atomic_write_bytes(path, bytes(serialized))
        metadata = self._metadata(trt, model, path, strongly, time.perf_counter() - start)
        sidecar = path.with_suffix(path.suffix + ".json")
        atomic_write_bytes(sidecar, json.dumps(metadata, indent=2).encode())
        return TrtEngineFile(path=path, metadata=metadata)

    def _strongly_typed(self, trt: Any, model: OnnxModel) -> bool:
        cfg = self.config
        needs = isinstance(model, QdqModel) or model.precision is not Precision.FP32
        if _major(trt) >= 11:
            if cfg.precision is not Precision.FP32 and not needs:
                msg = (
                    f"TensorRT {trt.__version__} builds strongly typed networks only, and {model.path} is FP32: "
                    "convert it first (Fp16Converter for fp16, ModelOpt for int8 / fp8)"
                )
                raise ConfigError(msg)
            return True
        if cfg.strongly_typed is not None:
            return cfg.strongly_typed
        if cfg.precision in (Precision.INT8, Precision.FP8) and not isinstance(model, QdqModel):
            msg = (
                f"{cfg.precision.value} engines need a Q/DQ model (explicit quantization); quantize {model.path} first"
            )
            raise ConfigError(msg)
        return needs

    def _parse(self, trt: Any, builder: Any, logger: Any, model: OnnxModel, strongly: bool) -> tuple[Any, Any]:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(model.path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            msg = f"TensorRT's ONNX parser rejected {model.path}: {'; '.join(errors[:5])}"
            raise EngineBuildError(msg, artifact=model.path)
        return network, parser

    def _builder_config(self, trt: Any, builder: Any, network: Any, model: OnnxModel, strongly: bool) -> Any:
        cfg = self.config
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
        config.builder_optimization_level = cfg.optimization_level
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if not strongly and cfg.precision is Precision.FP16:
            config.set_flag(trt.BuilderFlag.FP16)  # TensorRT 10 weak typing
        inp = network.get_input(0)
        shape = tuple(inp.shape)
        if shape[0] == -1:
            profile = builder.create_optimization_profile()
            rest = tuple(int(d) if d != -1 else s for d, s in zip(shape[1:], (3, *model.info.imgsz), strict=True))
            profile.set_shape(inp.name, (cfg.min_batch, *rest), (cfg.opt_batch, *rest), (cfg.max_batch, *rest))
            config.add_optimization_profile(profile)
        elif cfg.max_batch != shape[0] and cfg.max_batch > 1:
            log.warning("%s has a static batch %d; max_batch=%d is ignored", model.path, shape[0], cfg.max_batch)
        cache = self._load_timing_cache(config)
        config.set_timing_cache(cache, ignore_mismatch=False)
        return config

    def _load_timing_cache(self, config: Any) -> Any:
        path = self.config.timing_cache
        blob = Path(path).read_bytes() if path and Path(path).is_file() else b""
        return config.create_timing_cache(blob)

    def _save_timing_cache(self, config: Any) -> None:
        if self.config.timing_cache:
            cache = config.get_timing_cache()
            if cache is not None:
                atomic_write_bytes(Path(self.config.timing_cache), bytes(cache.serialize()))

    def _metadata(self, trt: Any, model: OnnxModel, path: Path, strongly: bool, seconds: float) -> dict[str, Any]:
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
            "head": info.head.value,
            "input_name": info.input_name,
            "dynamic_batch": info.dynamic_batch,
            "precision": self.config.precision.value,
            "strongly_typed": strongly,
            "profile": [self.config.min_batch, self.config.opt_batch, self.config.max_batch],
            "config": self.config.to_dict() | {"precision": self.config.precision.value},
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
