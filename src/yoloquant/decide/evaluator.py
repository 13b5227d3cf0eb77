"""Evaluate a candidate model on a fixed labelled set, on an engine from the backend registry.

The accuracy budget and the sensitivity analysis measure dozens of candidate models on the same images;
they take this callable (``evaluate(model) -> EvalResult``) instead of loading data or building engines
themselves, so the runner decides which images and which backend.

Example:
    >>> from yoloquant.data.datasets import load_dataset
    >>> evaluate = ModelEvaluator(load_dataset("assets/coco64.yaml").select(8))  # doctest: +SKIP
    >>> evaluate(OnnxModel.load("yolov8n.onnx")).map50_95  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from yoloquant.config import Backend, EvalConfig

if TYPE_CHECKING:
    from yoloquant.artifacts import OnnxModel
    from yoloquant.data.datasets import Dataset
    from yoloquant.eval.coco import EvalResult

__all__ = ["Evaluate", "ModelEvaluator"]

Evaluate = Callable[["OnnxModel"], "EvalResult"]


@dataclass(frozen=True)
class ModelEvaluator:
    """COCO mAP of a model on ``data`` with ``config``, run on ``backend`` (``yoloquant.backends.build_engine``)."""

    data: Dataset
    config: EvalConfig = field(default_factory=EvalConfig)
    backend: Backend = Backend.ORT_CPU

    def __call__(self, model: OnnxModel) -> EvalResult:
        from yoloquant.backends import build_engine
        from yoloquant.eval.coco import evaluate

        with build_engine(model, self.backend) as engine:
            return evaluate(engine, self.data, self.config, progress=False)
