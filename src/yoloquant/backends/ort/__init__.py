"""ONNX Runtime backend: sessions on the CPU, OpenVINO and CUDA execution providers."""

from yoloquant.backends.ort.engine import OrtEngine, OrtEngineBuilder

__all__ = ["OrtEngine", "OrtEngineBuilder"]
