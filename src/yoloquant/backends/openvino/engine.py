"""``OpenVinoEngine``: a model compiled by OpenVINO's own runtime (``openvino.Core``) behind the Engine protocol.

OpenVINO reads the ONNX file itself (float or Q/DQ; it fuses QuantizeLinear / DequantizeLinear pairs into its
integer kernels when activations are uint8) or an OpenVINO IR ``.xml``. No ONNX Runtime is involved, so this
runs in the same environment as the ``onnxruntime`` extra, unlike ONNX Runtime's OpenVINO provider.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yoloquant._lifecycle import ClosesOnExit
from yoloquant._optional import require
from yoloquant.artifacts import ModelInfo, OnnxModel
from yoloquant.backends.registry import register_runtime
from yoloquant.config import Backend
from yoloquant.errors import ConfigError, EngineBuildError, InferenceError

__all__ = [
    "OPENVINO_CPU",
    "OpenVinoEngine",
    "OpenVinoEngineBuilder",
    "check_runtime",
    "compile_options",
    "signed_activation_quantizers",
]

log = logging.getLogger(__name__)

# What OpenVinoEngine.providers reports, in the place of ONNX Runtime's provider names.
OPENVINO_CPU = "OpenVINO:CPU"


def check_runtime() -> None:
    """Raise :class:`MissingDependencyError` naming the ``openvino`` extra if OpenVINO cannot be imported."""
    require("openvino")


def compile_options(threads: int | None) -> dict[str, str]:
    """CPU plugin options: latency mode (batch 1 on all cores), fp32 math, ``threads`` when given.

    The fp32 hint matters on CPUs with bf16 (AMX / AVX512-BF16), where the plugin's default
    inference precision is bf16 and float models would no longer match ONNX Runtime's outputs.
    """
    options = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads is not None:
        options["INFERENCE_NUM_THREADS"] = str(threads)
    return options


class OpenVinoEngine(ClosesOnExit):
    """One compiled OpenVINO model and its infer request.

    Example:
        >>> with OpenVinoEngineBuilder().build(OnnxModel.load("yolov8n-int8.onnx")) as engine:  # doctest: +SKIP
        ...     outputs = engine.infer(np.zeros((1, 3, 640, 640), np.float32))
    """

    def __init__(self, compiled: Any, info: ModelInfo, device: str = "CPU") -> None:
        self.info = info
        self.device = device
        self._compiled: Any = compiled
        self._request: Any = compiled.create_infer_request()
        self._batch = _static_batch(compiled.inputs[0])

    @property
    def providers(self) -> list[str]:
        """``["OpenVINO:<device>"]`` while open, ``[]`` once closed (as ``OrtEngine`` reports providers)."""
        return [f"OpenVINO:{self.device}"] if self._compiled is not None else []

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run a float32 ``[B, 3, H, W]`` batch in [0, 1]; returns the raw model outputs (copies)."""
        if self._request is None:
            msg = "engine is closed; build a new one with OpenVinoEngineBuilder().build(model)"
            raise InferenceError(msg)
        self._check(batch)
        try:
            results = self._request.infer({0: np.ascontiguousarray(batch)}, share_inputs=True, share_outputs=False)
        except Exception as exc:  # openvino raises RuntimeError and its own types
            msg = f"OpenVINO failed on a batch of shape {batch.shape}: {exc}"
            raise InferenceError(msg) from exc
        return [np.asarray(results[out]) for out in self._compiled.outputs]

    def _check(self, batch: np.ndarray) -> None:
        h, w = self.info.imgsz
        if batch.dtype != np.float32 or batch.ndim != 4 or batch.shape[1:] != (3, h, w):
            msg = f"expected a float32 batch of shape [B, 3, {h}, {w}], got {batch.dtype} {batch.shape}"
            raise InferenceError(msg)
        if self._batch is not None and batch.shape[0] != self._batch:
            msg = (
                f"this model was exported for batch {self._batch} but got batch {batch.shape[0]}; "
                f"run batches of {self._batch}, or re-export with a dynamic batch "
                "(`yolo export model=yolov8n.pt format=onnx dynamic=True`, "
                "or QuantPipeline.from_ultralytics(..., dynamic=True))"
            )
            raise InferenceError(msg)

    def close(self) -> None:
        """Release the infer request and the compiled model. Safe to call more than once."""
        self._request = None
        self._compiled = None

    def __repr__(self) -> str:
        state = "closed" if self._compiled is None else "open"
        return f"OpenVinoEngine(device={self.device!r}, imgsz={self.info.imgsz}, {state})"


def signed_activation_quantizers(path: Path) -> int:
    """How many QuantizeLinear nodes of an ONNX file quantize an activation to *signed* int8.

    OpenVINO's CPU plugin mis-executes those (measured with openvino 2026.4.1 and the OpenVINO EP's 2025.4.1:
    NNCF's int8 ONNX output scored mAP50-95 0.2 instead of 48.7; ModelOpt's TensorRT layout 2.0 instead of 49.5).
    """
    if path.suffix != ".onnx":
        return 0
    onnx = require("onnx")
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name: i for i in model.graph.initializer}
    return sum(
        1
        for n in model.graph.node
        if n.op_type == "QuantizeLinear"
        and n.input[0] not in inits
        and len(n.input) > 2
        and n.input[2] in inits
        and inits[n.input[2]].data_type == onnx.TensorProto.INT8
    )


def _static_batch(port: Any) -> int | None:
    dim = port.get_partial_shape()[0]
    return None if dim.is_dynamic else int(dim.get_length())


@dataclass(frozen=True, kw_only=True)
class OpenVinoEngineBuilder:
    """Compiles a model with ``openvino.Core().compile_model`` for the CPU.

    Attributes:
        device: OpenVINO device; only ``CPU`` is measured and tested here.
        threads: Inference threads; None lets OpenVINO use one per physical core.

    Example:
        >>> OpenVinoEngineBuilder().name
        'openvino'
    """

    device: str = "CPU"
    threads: int | None = None
    name: str = "openvino"

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            msg = f"threads must be >= 1 or None (one per core), got {self.threads}"
            raise ConfigError(msg)

    def build(self, model: OnnxModel) -> OpenVinoEngine:
        ov = require("openvino")
        core = ov.Core()
        if self.device not in core.available_devices:
            msg = f"OpenVINO has no device {self.device!r} here (has {core.available_devices}); use device='CPU'"
            raise EngineBuildError(msg, artifact=model.path)
        try:
            compiled = core.compile_model(str(model.path), self.device, compile_options(self.threads))
        except Exception as exc:  # openvino raises RuntimeError and its own types
            msg = f"OpenVINO could not compile {model.path}: {exc}"
            raise EngineBuildError(msg, artifact=model.path) from exc
        signed = signed_activation_quantizers(model.path)
        if signed:
            log.warning(
                "%s has %d signed int8 activation Q/DQ pairs, which OpenVINO's CPU plugin mis-executes (mAP near 0); "
                "quantize for it with backend='openvino' (uint8 activations)",
                model.path.name,
                signed,
            )
        return OpenVinoEngine(compiled, model.info, self.device)


def _build(model: OnnxModel, threads: int | None) -> OpenVinoEngine:
    return OpenVinoEngineBuilder(threads=threads).build(model)


register_runtime(Backend.OPENVINO, _build, check=check_runtime)
