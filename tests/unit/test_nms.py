"""NMS and decode: hand-computed cases, and agreement with Ultralytics on a real model output."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from yoloquant.artifacts import ModelInfo
from yoloquant.config import HeadType
from yoloquant.errors import InferenceError
from yoloquant.postprocess.decode import decode, decode_dfl, decode_end2end
from yoloquant.postprocess.nms import nms

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def _dfl(rows: list[tuple[float, float, float, float, list[float]]]) -> np.ndarray:
    """Build a [4 + nc, anchors] DFL output from (cx, cy, w, h, scores) rows."""
    return np.array([[*box, *scores] for *box, scores in rows], np.float32).T


def test_nms_suppresses_overlap_keeps_disjoint_and_orders_by_score() -> None:
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [1, 0, 11, 10], [0, 0, 10, 5]], np.float32)
    scores = np.array([0.8, 0.7, 0.9, 0.6], np.float32)
    # IoU(box2, box0) = 90/110 = 0.82 > 0.7: box0 goes. IoU(box3, box2) = 45/100 = 0.45: box3 stays.
    assert nms(boxes, scores, 0.7).tolist() == [2, 1, 3]
    assert nms(boxes, scores, 0.4).tolist() == [2, 1]
    assert nms(boxes, scores, 0.9).tolist() == [2, 0, 1, 3]
    assert nms(boxes, scores, 0.7, max_det=2).tolist() == [2, 1]
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).tolist() == []


def test_decode_same_class_suppressed_different_class_kept() -> None:
    pred = _dfl([(50, 50, 20, 20, [0.9, 0.0]), (51, 50, 20, 20, [0.8, 0.0]), (51, 50, 20, 20, [0.0, 0.7])])
    det = decode_dfl(pred, conf=0.25, iou=0.7, max_det=300)
    assert det.classes.tolist() == [0, 1]
    np.testing.assert_allclose(det.scores, [0.9, 0.7])
    np.testing.assert_allclose(det.boxes[0], [40, 40, 60, 60])


def test_decode_multi_label_and_max_det() -> None:
    pred = _dfl([(50, 50, 20, 20, [0.9, 0.6, 0.1]), (200, 200, 10, 10, [0.3, 0.0, 0.0])])
    multi = decode_dfl(pred, conf=0.25, iou=0.7, max_det=300)
    assert sorted(zip([round(x, 2) for x in multi.scores.tolist()], multi.classes.tolist(), strict=True)) == [
        (0.3, 0),
        (0.6, 1),
        (0.9, 0),
    ]
    best = decode_dfl(pred, conf=0.25, iou=0.7, max_det=300, multi_label=False)
    assert best.classes.tolist() == [0, 0]
    assert [round(x, 2) for x in decode_dfl(pred, conf=0.25, iou=0.7, max_det=2).scores.tolist()] == [0.9, 0.6]
    assert len(decode_dfl(pred, conf=0.95, iou=0.7, max_det=300)) == 0


def test_end2end_threshold_and_cap_without_nms() -> None:
    pred = np.array([[0, 0, 10, 10, 0.9, 3], [0, 0, 10, 10, 0.8, 3], [5, 5, 9, 9, 0.2, 1]], np.float32)
    det = decode_end2end(pred, conf=0.25, max_det=300)
    assert det.classes.tolist() == [3, 3]  # identical boxes both kept: no NMS
    assert len(decode_end2end(pred, conf=0.1, max_det=1)) == 1
    info = ModelInfo(names={i: str(i) for i in range(4)}, head=HeadType.END2END)
    assert len(decode([pred[None]], info, conf=0.001)[0]) == 3
    with pytest.raises(InferenceError, match=r"end2end head should output \[B, N, 6\]"):
        decode([np.zeros((1, 300, 4), np.float32)], info)


@pytest.fixture(scope="module")
def real_output() -> np.ndarray:
    """Raw [1, 84, 8400] output of the bundled YOLOv8n on a real image (torch, no export needed)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    torch = pytest.importorskip("torch")
    ultralytics = pytest.importorskip("ultralytics")
    from yoloquant.data.images import read_image
    from yoloquant.data.letterbox import preprocess

    model = ultralytics.YOLO(str(ASSETS / "weights" / "yolov8n.pt")).model.float().eval()
    image, _ = preprocess(read_image(ASSETS / "coco64" / "images" / "000000000036.jpg"), 640)
    with torch.no_grad():
        out = model(torch.from_numpy(image[None].astype(np.float32) / 255.0))
    return np.asarray((out[0] if isinstance(out, (list, tuple)) else out).numpy())


@pytest.mark.parametrize(("conf", "multi_label"), [(0.001, True), (0.25, False), (0.05, True)])
def test_matches_ultralytics_non_max_suppression(real_output: np.ndarray, conf: float, multi_label: bool) -> None:
    torch = pytest.importorskip("torch")
    from ultralytics.utils.nms import non_max_suppression

    batch = torch.from_numpy(real_output)
    theirs = non_max_suppression(batch, conf, 0.7, multi_label=multi_label, max_det=300, nc=0)[0].numpy()
    info = ModelInfo(names={i: str(i) for i in range(80)})
    ours = decode([real_output], info, conf=conf, iou=0.7, max_det=300, multi_label=multi_label)[0]
    assert len(ours) == len(theirs) > 0
    np.testing.assert_allclose(ours.boxes, theirs[:, :4], atol=1e-3)
    np.testing.assert_allclose(ours.scores, theirs[:, 4], atol=1e-6)
    np.testing.assert_array_equal(ours.classes, theirs[:, 5].astype(np.int64))
