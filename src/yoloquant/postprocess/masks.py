"""Decode a segmentation head: boxes as :mod:`~yoloquant.postprocess.decode` does, plus instance masks.

Each detection's mask is its 32 coefficients times the head's prototypes (``[32, H/4, W/4]``), as
``ultralytics.utils.ops.process_mask(..., upsample=True)`` builds it for ``yolo predict``: the logits are
upsampled bilinearly to the model input, thresholded at 0 (sigmoid 0.5) and cropped to the detection's box.
:func:`~yoloquant.data.letterbox.scale_masks` then maps them to the original image (bilinear, threshold 0.5).

Only the end-to-end head (YOLO26: ``output0 [B, N, 6 + 32]``, ``output1 [B, 32, H/4, W/4]``) is decoded;
a DFL segmentation head (YOLOv8 / YOLO11) is refused.
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
from yoloquant.postprocess.decode import decode_end2end

__all__ = ["crop_masks", "decode_masks", "decode_segments", "process_masks"]


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


def decode_segments(
    outputs: Sequence[np.ndarray], info: ModelInfo, *, conf: float, iou: float, max_det: int, multi_label: bool
) -> list[Detections]:
    """The segment task's decoder: boxes and mask coefficients in the first output, prototypes in the second.

    Raises:
        InferenceError: A DFL (YOLOv8 / YOLO11) segmentation head, or outputs whose shapes do not fit.
    """
    del iou, multi_label  # the end-to-end head is already deduplicated, one class per row
    if info.head is not HeadType.END2END:
        msg = (
            "segmentation is decoded for the YOLO26 end-to-end head only; this model has a "
            f"{info.head.value} head (YOLOv8 / YOLO11 seg); export a YOLO26 seg model instead"
        )
        raise InferenceError(msg)
    if len(outputs) < 2:
        msg = f"a segmentation model outputs detections and mask prototypes; got {len(outputs)} output(s)"
        raise InferenceError(msg)
    pred, protos = np.asarray(outputs[0]), np.asarray(outputs[1])
    if pred.ndim != 3 or protos.ndim != 4 or pred.shape[2] != 6 + protos.shape[1] or pred.shape[0] != protos.shape[0]:
        msg = (
            f"a YOLO26 seg head outputs [B, N, 6 + C] and [B, C, H/4, W/4] prototypes; got {pred.shape} and "
            f"{protos.shape}; check the model's outputs"
        )
        raise InferenceError(msg)
    imgsz = (4 * protos.shape[2], 4 * protos.shape[3])
    return [decode_masks(p, m, conf=conf, max_det=max_det, imgsz=imgsz) for p, m in zip(pred, protos, strict=True)]
