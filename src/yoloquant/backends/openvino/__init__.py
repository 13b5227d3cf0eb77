"""OpenVINO's own runtime (the ``openvino`` package): the only package that imports openvino."""

from yoloquant.backends.openvino.engine import OPENVINO_CPU, OpenVinoEngine, OpenVinoEngineBuilder

__all__ = ["OPENVINO_CPU", "OpenVinoEngine", "OpenVinoEngineBuilder"]
