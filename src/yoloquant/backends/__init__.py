"""Runtimes. ``backends/ort`` is the only package that imports onnxruntime, ``backends/trt`` tensorrt."""
