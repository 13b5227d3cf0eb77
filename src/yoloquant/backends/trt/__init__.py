"""TensorRT backend: engine builds (strongly typed Q/DQ, FP16, dynamic batch), runtime, precision audit.

The only package that imports ``tensorrt`` (lazily, inside functions). Written against the documented
TensorRT 10 / 11 Python API; TensorRT cannot be installed in this project's environments, so it has
not run here (docs/gpu.md says what has).
"""

from yoloquant.backends.trt.builder import TrtBuildConfig, TrtEngineBuilder, TrtEngineFile
from yoloquant.backends.trt.engine import TrtEngine
from yoloquant.backends.trt.inspect import PrecisionAudit, audit_engine, audit_engine_json

__all__ = [
    "PrecisionAudit",
    "TrtBuildConfig",
    "TrtEngine",
    "TrtEngineBuilder",
    "TrtEngineFile",
    "audit_engine",
    "audit_engine_json",
]
