"""yoloquant: Ultralytics YOLO -> fast quantized inference engines with a measured accuracy cost.

Example:
    >>> from yoloquant import QuantPipeline
    >>> plan = QuantPipeline.from_ultralytics("yolov8n.pt").calibrate("images/").quantize("int8")

Only numpy is imported here; backends import their heavy libraries when first used.
"""

from __future__ import annotations

from yoloquant.artifacts import CalibrationSet, ModelInfo, OnnxModel, QdqModel
from yoloquant.config import Backend, BenchConfig, CalibMethod, EvalConfig, ExportConfig, HeadType, Precision
from yoloquant.detections import Detections
from yoloquant.errors import (
    ConfigError,
    DataError,
    DiskFullError,
    EngineBuildError,
    ExecutorError,
    ExportError,
    InferenceError,
    MissingDependencyError,
    QuantizationError,
    StageError,
    YoloQuantError,
)
from yoloquant.pipeline import QuantPipeline
from yoloquant.protocols import Calibrator, Engine, EngineBuilder, Exporter, Quantizer
from yoloquant.quantize.float_scope import FloatScope
from yoloquant.report.result import PipelineResult, VariantResult

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BenchConfig",
    "CalibMethod",
    "CalibrationSet",
    "Calibrator",
    "ConfigError",
    "DataError",
    "Detections",
    "DiskFullError",
    "Engine",
    "EngineBuildError",
    "EngineBuilder",
    "EvalConfig",
    "ExecutorError",
    "ExportConfig",
    "ExportError",
    "Exporter",
    "FloatScope",
    "HeadType",
    "InferenceError",
    "MissingDependencyError",
    "ModelInfo",
    "OnnxModel",
    "PipelineResult",
    "Precision",
    "QdqModel",
    "QuantPipeline",
    "QuantizationError",
    "Quantizer",
    "StageError",
    "VariantResult",
    "YoloQuantError",
    "__version__",
]
