"""Run results: per-variant numbers, the FP32-vs-quantized table, report.json / report.md."""

from yoloquant.report.result import PipelineResult, VariantResult

__all__ = ["PipelineResult", "VariantResult"]
