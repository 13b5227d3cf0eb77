"""Pose: our export, decode and evaluate() of YOLOv8n-pose against Ultralytics' own ``val`` of the same ONNX.

Ultralytics' val writes its predictions (boxes and keypoints) with ``save_json=True``; scored by pycocotools
against ground truth built here from the label files (as ``yolo val`` scores them: OKS area = box area x 0.53)
or against the official ``person_keypoints_val.json``, they are the reference our evaluation must match, so
only the preprocessing and the decode differ. Uses ``../shared/data`` (YOLOv8n-pose and coco-val-pose).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yolo_folders import yolo_subset
from yoloquant.artifacts import OnnxModel
from yoloquant.backends.ort.engine import OrtEngineBuilder
from yoloquant.config import EvalConfig
from yoloquant.data.datasets import Dataset, load_dataset
from yoloquant.eval.coco import EvalResult, evaluate

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
POSE_PT = SHARED / "weights" / "yolov8n-pose_coco_from_int8ir" / "yolov8n-pose.pt"
POSE_DATA = SHARED / "coco-val-pose"
IMGSZ = 640
TOLERANCE = 0.005  # mAP50-95 (0-1 scale); measured on all 220 label images: box 0.0000, pose 0.0000
FEW = 6  # images in the default run (the CI budget): the full sets are marked slow

pytestmark = pytest.mark.skipif(not POSE_PT.exists() or not POSE_DATA.exists(), reason="needs ../shared/data (pose)")
pytest.importorskip("ultralytics")
pytest.importorskip("onnxruntime")
pytest.importorskip("pycocotools")


@pytest.fixture(scope="module")
def pose_onnx(yolov8n_pose_onnx: OnnxModel) -> OnnxModel:
    assert yolov8n_pose_onnx.info.imgsz == (IMGSZ, IMGSZ)
    return yolov8n_pose_onnx


def _gt_from_label_files(dataset: Dataset) -> dict[str, Any]:
    """COCO keypoint ground truth straight from the label text, image id = file stem (as Ultralytics writes)."""
    import cv2

    images, anns = [], []
    for image in dataset.images:
        h, w = cv2.imread(str(image)).shape[:2]
        images.append({"id": int(image.stem), "height": h, "width": w})
        label = POSE_DATA / "labels" / f"{image.stem}.txt"
        for line in label.read_text().splitlines() if label.exists() else []:
            v = np.asarray(line.split(), np.float64)
            cx, cy, bw, bh = v[1] * w, v[2] * h, v[3] * w, v[4] * h
            k = v[5:].reshape(17, 3) * [w, h, 1]
            anns.append({
                "id": len(anns) + 1, "image_id": int(image.stem), "category_id": 1, "iscrowd": 0,
                "bbox": [cx - bw / 2, cy - bh / 2, bw, bh], "area": bw * bh * 0.53,
                "keypoints": k.ravel().tolist(), "num_keypoints": int((k[:, 2] > 0).sum()),
            })  # fmt: skip
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}


def _pycocotools(predictions: list[dict[str, Any]], gt_data: dict[str, Any] | Path, image_ids: list[int]) -> dict:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_data)) if isinstance(gt_data, Path) else COCO()
        if not isinstance(gt_data, Path):
            gt.dataset = gt_data
            gt.createIndex()
        for iou_type, prefix in (("bbox", ""), ("keypoints", "pose_")):
            ev = COCOeval(gt, gt.loadRes([dict(p) for p in predictions]), iou_type)
            ev.params.imgIds, ev.params.maxDets = image_ids, [1, 10, 300]
            ev.evaluate()
            ev.accumulate()
            precision = ev.eval["precision"][:, :, :, 0, -1]  # [OKS / IoU, recall, class] at area all, maxDets 300
            per_iou = [float(np.mean(p[p > -1])) for p in precision]
            out[f"{prefix}map50_95"], out[f"{prefix}map50"] = float(np.mean(per_iou)), per_iou[0]
    return out


def _val(pose_onnx: OnnxModel, dataset: Dataset, tmp_path: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Ultralytics' val of the ONNX on these images: its predictions.json and its own metrics."""
    from ultralytics import YOLO

    val = YOLO(str(pose_onnx.path), task="pose").val(
        data=str(yolo_subset(dataset.images, POSE_DATA, tmp_path / "data")), imgsz=IMGSZ, batch=1, plots=False,
        verbose=False, save_json=True, project=str(tmp_path / "runs"),
    )  # fmt: skip
    own = {"map50_95": float(val.box.map), "pose_map50_95": float(val.pose.map)}
    return json.loads((Path(val.save_dir) / "predictions.json").read_text()), own


def _ours(pose_onnx: OnnxModel, dataset: Dataset) -> EvalResult:
    with OrtEngineBuilder().build(pose_onnx) as engine:
        return evaluate(engine, dataset, EvalConfig(), progress=False)


def _assert_agrees(ours: EvalResult, theirs: dict[str, float]) -> None:
    for name in ("map50_95", "pose_map50_95"):
        assert abs(ours.value(name) - theirs[name]) < TOLERANCE, (name, ours, theirs)


def _labels(num: int | None, names: dict[int, str]) -> Dataset:
    dataset = load_dataset(POSE_DATA / "data.yaml", names=names)
    return dataset.select(num) if num else dataset


def test_export_reads_the_pose_task(pose_onnx: OnnxModel) -> None:
    info = pose_onnx.info
    assert info.task == "pose" and info.head.value == "dfl" and info.kpt_shape == (17, 3)
    assert info.names == {0: "person"}


def test_box_and_pose_map_agree_with_yolo_val_on_a_few_label_images(pose_onnx: OnnxModel, tmp_path: Path) -> None:
    dataset = _labels(FEW, pose_onnx.info.names)
    ours = _ours(pose_onnx, dataset)
    predictions, _ = _val(pose_onnx, dataset, tmp_path)
    theirs = _pycocotools(predictions, _gt_from_label_files(dataset), [int(p.stem) for p in dataset.images])
    assert ours.num_images == FEW and ours.primary_metric == "pose_map50_95"
    assert set(ours.metrics) == {"map50_95", "map50", "pose_map50_95", "pose_map50"}
    assert all(m.low is not None and m.low <= m.value <= (m.high or 0) for m in ours.metrics.values())
    assert theirs["pose_map50_95"] > 0.3  # a real pose model on real people: not a trivially empty comparison
    _assert_agrees(ours, theirs)


@pytest.mark.slow
def test_box_and_pose_map_agree_with_yolo_val_on_all_220_label_images(pose_onnx: OnnxModel, tmp_path: Path) -> None:
    dataset = _labels(None, pose_onnx.info.names)
    ours = _ours(pose_onnx, dataset)
    predictions, own = _val(pose_onnx, dataset, tmp_path)
    theirs = _pycocotools(predictions, _gt_from_label_files(dataset), [int(p.stem) for p in dataset.images])
    assert ours.num_images == 220
    _assert_agrees(ours, theirs)
    _assert_agrees(ours, own)  # Ultralytics' own metric (its OKS, its interpolation) too


@pytest.mark.slow
def test_box_and_pose_map_agree_with_yolo_val_on_the_50_official_json_images(
    pose_onnx: OnnxModel, tmp_path: Path
) -> None:
    official = POSE_DATA / "person_keypoints_val.json"
    dataset = load_dataset(official, names=pose_onnx.info.names, images_dir=POSE_DATA / "images")
    ours = _ours(pose_onnx, dataset)
    predictions, _ = _val(pose_onnx, dataset, tmp_path)
    theirs = _pycocotools(predictions, official, list(dataset.image_ids or ()))
    assert ours.num_images == 50
    _assert_agrees(ours, theirs)
