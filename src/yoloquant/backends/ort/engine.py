"""``OrtEngine``: an ONNX Runtime session behind the Engine protocol."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from yoloquant._lifecycle import ClosesOnExit
from yoloquant._optional import require
from yoloquant.artifacts import ModelInfo, OnnxModel
from yoloquant.backends import PROVIDERS
from yoloquant.backends.registry import register_runtime
from yoloquant.config import Backend
from yoloquant.errors import EngineBuildError, InferenceError, MissingDependencyError

if TYPE_CHECKING:
    from yoloquant.protocols import Engine

__all__ = ["OrtEngine", "OrtEngineBuilder", "check_provider", "log_errors_only"]

log = logging.getLogger(__name__)

_PROVIDER_FIX = {
    "CUDAExecutionProvider": 'pip uninstall onnxruntime && pip install "yoloquant[gpu]" (needs an NVIDIA driver)',
}


def check_provider(provider: str) -> None:
    """Raise :class:`MissingDependencyError` if this ONNX Runtime build lacks ``provider``.

    Example:
        >>> check_provider("CPUExecutionProvider")  # doctest: +SKIP
    """
    ort = require("onnxruntime")
    if provider not in ort.get_available_providers():
        fix = _PROVIDER_FIX.get(provider, f"install an ONNX Runtime build with {provider}")
        msg = f"{provider} is not in this ONNX Runtime build (it has {ort.get_available_providers()}); {fix}"
        raise MissingDependencyError(msg)


def log_errors_only() -> None:
    """ONNX Runtime's default logger (the one its quantization tools' sessions use) logs errors only.

    Process-wide: the command line calls it for ``--quiet``; a library must not (its sessions set their own).
    """
    require("onnxruntime").set_default_logger_severity(3)


def session_options(threads: int | None) -> Any:
    """Session options for reproducible timing: no intra/inter-op spinning, full graph optimization.

    Spinning threads keep a core busy after a run ends, which distorts interleaved comparisons.
    """
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
    return opts


class OrtEngine(ClosesOnExit):
    """An ONNX Runtime inference session for one model.

    Example:
        >>> with OrtEngineBuilder().build(OnnxModel.load("yolov8n.onnx")) as engine:  # doctest: +SKIP
        ...     outputs = engine.infer(np.zeros((1, 3, 640, 640), np.float32))
    """

    def __init__(self, session: Any, info: ModelInfo, model_path: Path | None = None) -> None:
        self.info = info
        self.model_path = model_path
        self._session: Any = session
        self._input = session.get_inputs()[0]
        self._output_names = [o.name for o in session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        """Execution providers the session really uses (ORT falls back silently on some errors)."""
        return list(self._session.get_providers()) if self._session is not None else []

    def __repr__(self) -> str:
        h, w = self.info.imgsz
        batch = "dynamic" if self.info.dynamic_batch else self._input.shape[0]
        providers = self.providers
        backend = next((b.value for b, p in PROVIDERS.items() if providers[:1] == [p]), "closed")
        model = self.model_path.name if self.model_path is not None else "?"
        return f"OrtEngine(backend={backend}, providers={providers}, model={model!r}, imgsz={h}x{w}, batch={batch})"

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run a float32 ``[B, 3, H, W]`` batch in [0, 1]; returns the raw model outputs."""
        if self._session is None:
            msg = "engine is closed; build a new one with OrtEngineBuilder().build(model)"
            raise InferenceError(msg)
        self._check(batch)
        try:
            outputs: list[np.ndarray] = self._session.run(self._output_names, {self._input.name: batch})
        except Exception as exc:  # onnxruntime raises its own exception types, translated here
            msg = f"ONNX Runtime failed on a batch of shape {batch.shape}: {exc}"
            raise InferenceError(msg) from exc
        return outputs

    def _check(self, batch: np.ndarray) -> None:
        h, w = self.info.imgsz
        if batch.dtype != np.float32 or batch.ndim != 4 or batch.shape[1:] != (3, h, w):
            msg = f"expected a float32 batch of shape [B, 3, {h}, {w}], got {batch.dtype} {batch.shape}"
            raise InferenceError(msg)
        fixed = self._input.shape[0]
        if isinstance(fixed, int) and batch.shape[0] != fixed:
            msg = (
                f"this model was exported for batch {fixed} but got batch {batch.shape[0]}; run batches of {fixed}, "
                "or re-export with a dynamic batch (`yolo export model=yolov8n.pt format=onnx dynamic=True`, "
                "or QuantPipeline.from_ultralytics(..., dynamic=True))"
            )
            raise InferenceError(msg)

    def close(self) -> None:
        """Release the session. Safe to call more than once."""
        self._session = None


@dataclass(frozen=True, kw_only=True)
class OrtEngineBuilder:
    """Builds :class:`OrtEngine` sessions on ONNX Runtime's CPU execution provider.

    The ``openvino`` backend is OpenVINO's own runtime (:class:`~yoloquant.backends.openvino.OpenVinoEngineBuilder`),
    not ONNX Runtime's OpenVINO provider: the same CPU plugin with bit-identical outputs, and it installs
    next to ``onnxruntime`` (docs/quantizers.md).

    Attributes:
        backend: ``onnxruntime`` (CPU EP).
        threads: Intra-op threads; None lets ONNX Runtime use one per core.
    """

    backend: Backend = Backend.ORT_CPU
    threads: int | None = None
    name: str = "onnxruntime"

    def build(self, model: OnnxModel) -> OrtEngine:
        ort = require("onnxruntime")
        provider = PROVIDERS.get(self.backend)
        if provider is None or self.backend is not Backend.ORT_CPU:
            msg = (
                f"OrtEngineBuilder runs onnxruntime, not {self.backend.value!r}; "
                "for openvino use OpenVinoEngineBuilder, for cuda CudaEngineBuilder (or build_engine for either)"
            )
            raise EngineBuildError(msg, artifact=model.path)
        if provider not in ort.get_available_providers():
            msg = (
                f"{provider} is not available in this ONNX Runtime build (has {ort.get_available_providers()}); "
                'pip install "yoloquant[onnxruntime]"'
            )
            raise EngineBuildError(msg, artifact=model.path)
        providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(
                str(model.path), sess_options=session_options(self.threads), providers=providers
            )
        except Exception as exc:  # onnxruntime's own exception types
            msg = f"ONNX Runtime could not load {model.path}: {exc}"
            raise EngineBuildError(msg, artifact=model.path) from exc
        if session.get_providers()[0] != provider:
            log.warning("%s fell back to %s for %s", provider, session.get_providers(), model.path)
        return OrtEngine(session, model.info, model.path)


def _build(model: OnnxModel, threads: int | None) -> OrtEngine:
    return OrtEngineBuilder(backend=Backend.ORT_CPU, threads=threads).build(model)


def _build_cuda(model: OnnxModel, threads: int | None) -> Engine:
    from yoloquant.backends.ort.cuda import CudaEngineBuilder

    del threads  # the CUDA provider runs on the GPU: CPU threads do not apply
    return CudaEngineBuilder().build(model)


# this module registers both of ONNX Runtime's providers (cuda.py is the CUDA engine itself)
register_runtime(Backend.ORT_CPU, _build, check=lambda: check_provider(PROVIDERS[Backend.ORT_CPU]))
register_runtime(Backend.ORT_CUDA, _build_cuda, check=lambda: check_provider(PROVIDERS[Backend.ORT_CUDA]))
