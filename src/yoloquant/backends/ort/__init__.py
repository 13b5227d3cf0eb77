"""ONNX Runtime backend: sessions on the CPU, OpenVINO and CUDA execution providers."""

from yoloquant.backends.ort.cuda import CudaEngine, CudaEngineBuilder
from yoloquant.backends.ort.engine import OrtEngine, OrtEngineBuilder

__all__ = ["CudaEngine", "CudaEngineBuilder", "OrtEngine", "OrtEngineBuilder"]
