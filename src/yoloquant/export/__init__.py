"""Exporters: Ultralytics ``.pt`` -> ONNX, and pass-through of an existing ONNX file."""

from yoloquant.export.onnx_file import OnnxFileExporter
from yoloquant.export.ultralytics import UltralyticsExporter, exporter_for

__all__ = ["OnnxFileExporter", "UltralyticsExporter", "exporter_for"]
