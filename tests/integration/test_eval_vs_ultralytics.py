"""Our evaluate() and predict() against Ultralytics' own `val` and `predict` on the same ONNX and images."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from yoloquant.artifacts import ModelInfo, OnnxModel
from yoloquant.backends.ort.engine import OrtEngine, OrtEngineBuilder
from yoloquant.config import EvalConfig, HeadType
from yoloquant.data.datasets import Dataset, load_dataset
from yoloquant.data.images import list_images, read_image
from yoloquant.data.letterbox import preprocess
from yoloquant.errors import DataError
from yoloquant.eval.coco import evaluate
from yoloquant.postprocess.predict import predict

ASSETS = Path(__file__).resolve().parents[2] / "assets"
TOLERANCE = 0.005  # mAP points (0-1 scale); measured gaps are 0.004-0.005, see docs/data-and-eval.md

pytest.importorskip("ultralytics")
pytest.importorskip("onnxruntime")
pytest.importorskip("pycocotools")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy of the bundled data (Ultralytics writes a labels cache next to the labels)."""
    os.environ["YOLO_OFFLINE"] = "1"
    root = tmp_path_factory.mktemp("eval")
    shutil.copytree(ASSETS / "coco64", root / "coco64")
    shutil.copy(ASSETS / "coco64.yaml", root / "coco64.yaml")
    return root


def _export(workdir: Path, name: str) -> Path:
    from ultralytics import YOLO

    pt = workdir / f"{name}.pt"
    shutil.copy(ASSETS / "weights" / f"{name}.pt", pt)
    return Path(YOLO(str(pt)).export(format="onnx", imgsz=640, opset=17, simplify=True))


@pytest.fixture(scope="module", params=["yolov8n", "yolo26n"])
def onnx_path(request: pytest.FixtureRequest, workdir: Path) -> Path:
    return _export(workdir, str(request.param))


@pytest.fixture(scope="module")
def engine(onnx_path: Path) -> Iterator[OrtEngine]:
    with OrtEngineBuilder().build(OnnxModel.load(onnx_path)) as built:
        yield built


def test_evaluate_agrees_with_yolo_val(onnx_path: Path, engine: OrtEngine, workdir: Path) -> None:
    from ultralytics import YOLO

    expected_head = HeadType.END2END if "26" in onnx_path.stem else HeadType.DFL
    assert engine.info.head is expected_head
    theirs = YOLO(str(onnx_path), task="detect").val(
        data=str(workdir / "coco64.yaml"), imgsz=640, batch=1, plots=False, verbose=False, project=str(workdir / "runs")
    )
    ours = evaluate(engine, load_dataset(workdir / "coco64.yaml"), EvalConfig(), progress=False)
    assert ours.num_images == 64 and ours.num_instances == int(theirs.nt_per_class.sum())
    assert abs(ours.map50_95 - theirs.box.map) < TOLERANCE, (ours, theirs.box.map)
    assert abs(ours.map50 - theirs.box.map50) < TOLERANCE, (ours, theirs.box.map50)


def test_evaluate_against_coco_json(engine: OrtEngine, workdir: Path) -> None:
    labels = evaluate(engine, load_dataset(workdir / "coco64.yaml"), EvalConfig(num_images=16), progress=False)
    json_ds = load_dataset(workdir / "coco64" / "annotations" / "instances_coco64.json", names=engine.info.names)
    from_json = evaluate(engine, json_ds, EvalConfig(num_images=16), progress=False)
    # The json holds the same boxes as the txt labels, plus crowd regions pycocotools ignores.
    assert from_json.num_images == 16
    assert abs(from_json.map50_95 - labels.map50_95) < 0.02


def test_predict_matches_yolo_predict(onnx_path: Path, engine: OrtEngine) -> None:
    from ultralytics import YOLO

    files = list_images(ASSETS / "coco64" / "images")[:4]
    images = [read_image(f) for f in files]
    ours = predict(engine, images)
    theirs = YOLO(str(onnx_path), task="detect").predict([im.copy() for im in images], imgsz=640, verbose=False)
    for d, r in zip(ours, theirs, strict=True):
        boxes = r.boxes.xyxy.numpy()
        assert len(d) == len(boxes) > 0
        np.testing.assert_allclose(d.boxes, boxes, atol=1.0)
        np.testing.assert_array_equal(d.classes, r.boxes.cls.numpy().astype(np.int64))


class _OracleEngine:
    """An end-to-end 'model' that outputs each image's ground truth, mapped into the letterboxed input."""

    def __init__(self, dataset: Dataset, drop_every: int = 0) -> None:
        self.info = ModelInfo(names=dataset.names or {}, head=HeadType.END2END)
        self._outputs: list[np.ndarray] = []
        for path, gt in zip(dataset.images, dataset.labels or (), strict=True):
            _, meta = preprocess(read_image(path), 640)
            (gy, gx), (px, py) = meta.gain, meta.pad
            boxes = gt.boxes * np.array([gx, gy, gx, gy], np.float32) + np.array([px, py, px, py], np.float32)
            rows = np.zeros((300, 6), np.float32)
            keep = [i for i in range(len(gt)) if not drop_every or i % drop_every]
            rows[: len(keep), :4], rows[: len(keep), 4], rows[: len(keep), 5] = boxes[keep], 0.9, gt.classes[keep]
            self._outputs.append(rows[None])
        self._calls = 0

    @property
    def providers(self) -> list[str]:
        return ["oracle"]

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        self._calls += 1
        return [self._outputs[self._calls - 1]]

    def close(self) -> None:
        pass

    def __enter__(self) -> _OracleEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_perfect_predictions_score_one_and_missing_ones_lower_recall() -> None:
    dataset = load_dataset(ASSETS / "coco64.yaml").select(8)
    perfect = evaluate(_OracleEngine(dataset), dataset, progress=False)
    assert perfect.map50_95 == pytest.approx(1.0, abs=1e-3) and perfect.map50 == pytest.approx(1.0, abs=1e-3)
    half = evaluate(_OracleEngine(dataset, drop_every=2), dataset, progress=False)
    assert 0.3 < half.map50 < 0.8


def test_evaluate_needs_labels(engine: OrtEngine) -> None:
    with pytest.raises(DataError, match=r"has no labels"):
        evaluate(engine, load_dataset(ASSETS / "coco64" / "images", labels=False), progress=False)
