"""Decode a segmentation head: boxes as :mod:`~yoloquant.postprocess.decode` does, plus instance masks.

Each detection's mask is its 32 coefficients times the head's prototypes (``[32, H/4, W/4]``), as
``ultralytics.utils.ops.process_mask(..., upsample=True)`` builds it for ``yolo predict``: the logits are
upsampled bilinearly to the model input, thresholded at 0 (sigmoid 0.5) and cropped to the detection's box.
:func:`~yoloquant.data.letterbox.scale_masks` then maps them to the original image (bilinear, threshold 0.5).

Both heads output the prototypes ``output1 [B, 32, H/4, W/4]``; their ``output0`` differs:

* end-to-end (YOLO26): ``[B, N, 6 + 32]`` of x1, y1, x2, y2, score, class, coefficients; no NMS.
* DFL (YOLOv8 / YOLO11): ``[B, 4 + nc + 32, anchors]``; boxes and NMS as for a detector, each kept detection
  takes its anchor's coefficients (as Ultralytics' NMS carries them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from yoloquant._optional import require
from yoloquant.artifacts import ModelInfo
from yoloquant.config import HeadType
from yoloquant.detections import Detections
from yoloquant.errors import InferenceError
from yoloquant.postprocess.decode import decode_end2end, dfl_candidates

__all__ = ["crop_masks", "decode_masks", "decode_masks_dfl", "decode_segments", "process_masks"]


def crop_masks(masks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Zero ``[N, H, W]`` masks outside their xyxy ``boxes`` (a pixel is inside when ``x1 <= col < x2``).

    Example:
        >>> crop_masks(np.ones((1, 2, 4), bool), np.array([[1.0, 0.0, 3.0, 1.0]])).astype(int).tolist()
        [[[0, 1, 1, 0], [0, 0, 0, 0]]]
    """
    _, h, w = masks.shape
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
    cols = np.arange(w, dtype=np.float32)[None, None, :]
    rows = np.arange(h, dtype=np.float32)[None, :, None]
    return masks & (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)


def process_masks(
    protos: np.ndarray, coefficients: np.ndarray, boxes: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Boolean ``[N, *shape]`` masks from prototypes ``[C, mh, mw]``, coefficients ``[N, C]`` and xyxy boxes.

    The boxes are in ``shape`` pixels (the model input); Ultralytics' ``process_mask(..., upsample=True)``.

    Example:
        >>> protos = np.ones((1, 2, 2), np.float32)
        >>> process_masks(protos, np.array([[1.0]]), np.array([[0.0, 0.0, 2.0, 4.0]]), (4, 4)).sum()
        np.int64(8)
    """
    n = coefficients.shape[0]
    if n == 0:
        return np.zeros((0, *shape), bool)
    cv2 = require("cv2")
    c, mh, mw = protos.shape
    logits = (coefficients.astype(np.float32) @ protos.reshape(c, -1).astype(np.float32)).reshape(n, mh, mw)
    # cv2 INTER_LINEAR on float32 is torch's bilinear with align_corners=False (half-pixel centres)
    up = np.empty((n, *shape), bool)
    for i, m in enumerate(logits):
        up[i] = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) > 0
    return crop_masks(up, np.asarray(boxes, np.float32))


def decode_masks(
    pred: np.ndarray, protos: np.ndarray, *, conf: float, max_det: int, imgsz: tuple[int, int]
) -> Detections:
    """One image's end-to-end seg output ``[N, 6 + C]`` and prototypes ``[C, mh, mw]`` -> detections with masks.

    Example:
        >>> pred = np.zeros((2, 7), np.float32); pred[0, :6] = [0, 0, 2, 2, 0.9, 3]; pred[0, 6] = 1
        >>> d = decode_masks(pred, np.ones((1, 1, 1), np.float32), conf=0.25, max_det=300, imgsz=(4, 4))
        >>> d.classes.tolist(), d.masks.sum()
        ([3], np.int64(4))
    """
    x = np.asarray(pred, np.float32)
    keep = np.flatnonzero(x[:, 4] > conf)[:max_det]
    dets = decode_end2end(x[keep], conf=conf, max_det=max_det)
    masks = process_masks(np.asarray(protos), x[keep, 6:], dets.boxes, imgsz)
    return dataclasses.replace(dets, masks=masks)


def decode_masks_dfl(
    pred: np.ndarray,
    protos: np.ndarray,
    *,
    nc: int,
    conf: float,
    iou: float,
    max_det: int,
    imgsz: tuple[int, int],
    multi_label: bool = True,
) -> Detections:
    """One image's DFL seg output ``[4 + nc + C, anchors]`` and prototypes ``[C, mh, mw]`` -> detections with masks.

    Example:
        >>> pred = np.zeros((6, 2), np.float32); pred[:4, 1] = [1, 1, 2, 2]; pred[4, 1] = 0.9; pred[5, 1] = 1
        >>> d = decode_masks_dfl(pred, np.ones((1, 1, 1), np.float32), nc=1, conf=0.25, iou=0.7, max_det=300,
        ...                      imgsz=(4, 4))
        >>> d.boxes.tolist(), d.masks.sum()
        ([[0.0, 0.0, 2.0, 2.0]], np.int64(4))
    """
    x = np.asarray(pred, np.float32)
    dets, anchors = dfl_candidates(x, nc, conf=conf, iou=iou, max_det=max_det, multi_label=multi_label)
    masks = process_masks(np.asarray(protos), x[4 + nc :, anchors].T, dets.boxes, imgsz)
    return dataclasses.replace(dets, masks=masks)


def decode_segments(
    outputs: Sequence[np.ndarray], info: ModelInfo, *, conf: float, iou: float, max_det: int, multi_label: bool
) -> list[Detections]:
    """The segment task's decoder: boxes and mask coefficients in the first output, prototypes in the second.

    Raises:
        InferenceError: Outputs whose number or shapes do not fit the model's head.
    """
    if len(outputs) < 2:
        msg = f"a segmentation model outputs detections and mask prototypes; got {len(outputs)} output(s)"
        raise InferenceError(msg)
    pred, protos = np.asarray(outputs[0]), np.asarray(outputs[1])
    end2end = info.head is HeadType.END2END
    nc = info.num_classes
    fits = protos.ndim == 4 and pred.ndim == 3 and pred.shape[0] == protos.shape[0]
    if fits:
        c = protos.shape[1]
        fits = pred.shape[2] == 6 + c if end2end else pred.shape[1] == 4 + nc + c
    if not fits:
        layout = "[B, N, 6 + C]" if end2end else f"[B, 4 + {nc} + C, anchors]"
        msg = (
            f"a {info.head.value} seg head with {nc} classes outputs {layout} and [B, C, H/4, W/4] prototypes; "
            f"got {pred.shape} and {protos.shape}; check the model's outputs"
        )
        raise InferenceError(msg)
    imgsz = (4 * protos.shape[2], 4 * protos.shape[3])
    if end2end:  # already deduplicated, one class per row: no iou, no multi_label
        return [decode_masks(p, m, conf=conf, max_det=max_det, imgsz=imgsz) for p, m in zip(pred, protos, strict=True)]
    return [
        decode_masks_dfl(p, m, nc=nc, conf=conf, iou=iou, max_det=max_det, imgsz=imgsz, multi_label=multi_label)
        for p, m in zip(pred, protos, strict=True)
    ]
