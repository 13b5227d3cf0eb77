"""COCO evaluation (pycocotools) of an engine on a dataset."""

from __future__ import annotations

from yoloquant.eval.coco import EvalResult, evaluate

__all__ = ["EvalResult", "evaluate"]
