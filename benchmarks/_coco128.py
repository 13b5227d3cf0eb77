"""What the coco128 benchmarks share: the calibrate 0-63 / evaluate 64-127 split and the mAP of a model."""

from __future__ import annotations

from pathlib import Path

from yoloquant.artifacts import OnnxModel
from yoloquant.backends.ort.engine import OrtEngineBuilder
from yoloquant.config import EvalConfig
from yoloquant.data.datasets import Dataset, load_dataset
from yoloquant.eval.coco import evaluate


def coco128_split(data: Path) -> tuple[Path, Dataset]:
    """coco128's image folder (calibrate on its first 64 images) and the evaluation set (images 64-127)."""
    images = data / "images" / "train2017"
    return images, load_dataset(images).select(None, offset=64)


def score(model: OnnxModel, dataset: Dataset) -> dict[str, float]:
    """mAP50-95 / mAP50 in points, and the evaluation's seconds, through ONNX Runtime's CPU provider."""
    with OrtEngineBuilder().build(model) as engine:
        result = evaluate(engine, dataset, EvalConfig(), progress=False)
    return {"map50_95": result.map50_95 * 100, "map50": result.map50 * 100, "eval_s": result.seconds}
