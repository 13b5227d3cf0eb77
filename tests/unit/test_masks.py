"""Segmentation decode on hand-made prototypes and coefficients, checked by hand and against Ultralytics' own ops."""

from __future__ import annotations

import numpy as np
import pytest

from yoloquant.artifacts import ModelInfo
from yoloquant.config import HeadType
from yoloquant.data.letterbox import LetterboxMeta, scale_detections
from yoloquant.errors import InferenceError
from yoloquant.eval.coco import _encode_masks, _gt_from_labels, _mask_results, _Prediction
from yoloquant.postprocess.decode import decode
from yoloquant.postprocess.masks import crop_masks, process_masks

pytest.importorskip("cv2")

SEG = ModelInfo(names={0: "a", 1: "b"}, task="segment", head=HeadType.END2END)


def _half_protos() -> np.ndarray:
    """Two 4 x 4 prototypes (a 16 x 16 model input): +1 on the left half and -1 on the right; all ones."""
    protos = np.ones((2, 4, 4), np.float32)
    protos[0, :, 2:] = -1
    return protos


def test_a_known_coefficient_and_prototype_give_the_expected_cropped_mask() -> None:
    # logits +1 | -1 upsampled x4 (half-pixel centres): column 7 samples 0.25, column 8 samples -0.25
    masks = process_masks(_half_protos(), np.array([[1.0, 0.0]]), np.array([[2.0, 4.0, 12.0, 10.0]]), (16, 16))
    expected = np.zeros((16, 16), bool)
    expected[4:10, 2:8] = True  # the left half, cropped to the box (x2, y2 exclusive)
    np.testing.assert_array_equal(masks[0], expected)


def test_the_sign_of_the_coefficients_picks_the_half_and_a_bias_can_fill_the_box() -> None:
    box = np.array([[0.0, 0.0, 16.0, 16.0]])
    right = process_masks(_half_protos(), np.array([[-1.0, 0.0]]), box, (16, 16))[0]
    assert right[:, 8:].all() and not right[:, :8].any()
    full = process_masks(_half_protos(), np.array([[1.0, 2.0]]), box, (16, 16))[0]  # logits 3 | 1: all positive
    assert full.all()
    assert process_masks(_half_protos(), np.zeros((0, 2)), np.zeros((0, 4)), (16, 16)).shape == (0, 16, 16)


def test_crop_keeps_pixels_whose_index_is_inside_the_box() -> None:
    out = crop_masks(np.ones((1, 3, 3), bool), np.array([[0.5, 1.0, 2.0, 3.0]]))
    assert out[0].astype(int).tolist() == [[0, 0, 0], [0, 1, 0], [0, 1, 0]]


def test_masks_agree_with_ultralytics_process_mask() -> None:
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("ultralytics.utils.ops")
    rng = np.random.default_rng(0)
    protos = rng.normal(size=(32, 40, 40)).astype(np.float32)
    coeffs = rng.normal(size=(8, 32)).astype(np.float32)
    xy = rng.uniform(0, 100, size=(8, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 60, size=(8, 2))], axis=1).astype(np.float32)
    ours = process_masks(protos, coeffs, boxes, (160, 160))
    theirs = ops.process_mask(
        torch.from_numpy(protos), torch.from_numpy(coeffs), torch.from_numpy(boxes), (160, 160), upsample=True
    )
    agree = (ours == theirs.numpy().astype(bool)).mean()
    assert agree > 0.9995, agree  # cv2 and torch bilinear differ only in float rounding at logit 0


def _outputs(rows: list[list[float]]) -> list[np.ndarray]:
    pred = np.zeros((1, 4, 8), np.float32)
    if rows:
        pred[0, : len(rows)] = rows
    return [pred, _half_protos()[None]]


def test_decode_fills_masks_for_rows_above_conf_in_model_order() -> None:
    rows = [[2, 4, 12, 10, 0.9, 1, 1, 0], [0, 0, 16, 16, 0.1, 0, -1, 0], [0, 0, 16, 16, 0.5, 0, -1, 0]]
    (d,) = decode(_outputs(rows), SEG, conf=0.25)
    assert d.classes.tolist() == [1, 0] and d.masks is not None and d.masks.shape == (2, 16, 16)
    assert d.masks[0].sum() == 36 and d.masks[1][:, 8:].all() and not d.masks[1][:, :8].any()


def test_masks_go_back_to_the_original_image() -> None:
    (d,) = decode(_outputs([[0, 0, 16, 16, 0.9, 0, 1, 0]]), SEG, conf=0.25)
    meta = LetterboxMeta(shape=(16, 32), gain=(0.5, 0.5), pad=(0, 4))  # a 32 x 16 image letterboxed into 16 x 16
    scaled = scale_detections(d, meta)
    assert scaled.masks is not None and scaled.masks.shape == (1, 16, 32)
    assert scaled.masks[0, :, :16].all() and not scaled.masks[0, :, 16:].any()


def test_a_dfl_seg_head_keeps_the_coefficients_of_the_anchors_nms_keeps() -> None:
    dfl = ModelInfo(names={0: "a", 1: "b"}, task="segment", head=HeadType.DFL)
    pred = np.zeros((1, 4 + 2 + 2, 3), np.float32)  # 3 anchors: cx cy w h, 2 class scores, 2 coefficients
    pred[0, :, 0] = [8, 8, 16, 16, 0.9, 0.0, 1, 0]  # full box, class 0, left half
    pred[0, :, 1] = [8, 8, 15, 15, 0.8, 0.0, -1, 0]  # overlaps anchor 0 (IoU 0.88): suppressed
    pred[0, :, 2] = [8, 8, 16, 16, 0.0, 0.6, -1, 0]  # same box, class 1, right half: kept (class-aware NMS)
    (d,) = decode([pred, _half_protos()[None]], dfl, conf=0.25)
    assert d.classes.tolist() == [0, 1] and d.scores.tolist() == pytest.approx([0.9, 0.6])
    assert d.masks is not None and d.masks[0][:, :8].all() and not d.masks[0][:, 8:].any()
    assert d.masks[1][:, 8:].all() and not d.masks[1][:, :8].any()


def test_bad_seg_outputs_are_refused_with_the_reason() -> None:
    dfl = ModelInfo(names={0: "a"}, task="segment", head=HeadType.DFL)
    with pytest.raises(InferenceError, match=r"a dfl seg head with 1 classes outputs \[B, 4 \+ 1 \+ C, anchors\]"):
        decode([np.zeros((1, 4 + 2 + 2, 8), np.float32), _half_protos()[None]], dfl)
    with pytest.raises(InferenceError, match="detections and mask prototypes; got 1 output"):
        decode(_outputs([])[:1], SEG)
    with pytest.raises(InferenceError, match=r"\[B, N, 6 \+ C\]"):
        decode([np.zeros((1, 4, 9), np.float32), _half_protos()[None]], SEG)


def test_a_mask_equal_to_its_ground_truth_polygon_scores_one() -> None:
    """pycocotools segm on an RLE of the rasterized label polygon: mask mAP 1.0 (and 0 for a shifted mask)."""
    pytest.importorskip("pycocotools")
    from pycocotools import mask as mask_utils

    from yoloquant.config import EvalConfig
    from yoloquant.data.datasets import Dataset
    from yoloquant.data.labels import GroundTruth
    from yoloquant.detections import Detections
    from yoloquant.eval.coco import _score

    poly = np.array([[10, 10], [50, 12], [40, 60], [12, 50]], np.float32)
    gt = GroundTruth(np.array([[10, 10, 50, 60]], np.float32), np.array([0]), (80, 100), polygons=(poly,))
    dataset = Dataset(images=(), labels=(gt,), names={0: "a"})
    data, ids, cats = _gt_from_labels(dataset, masks=True)
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    raster = mask_utils.decode(mask_utils.frPyObjects([poly.reshape(-1).tolist()], 80, 100))[..., 0].astype(bool)
    shifted = np.roll(raster, 30, axis=1)
    for mask, expected in ((raster, 1.0), (shifted, 0.0)):
        dets = Detections(np.array([[10, 10, 50, 60]], np.float32), np.array([0.9], np.float32), np.array([0]))
        pred = _Prediction(dets, _encode_masks(mask[None]))
        scored = _score(coco, _mask_results([pred], ids, cats), ids, EvalConfig(resamples=0), "segm")
        assert scored.maps.mean() == pytest.approx(expected), mask.sum()
