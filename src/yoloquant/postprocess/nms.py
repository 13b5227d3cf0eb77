"""Vectorised greedy non-maximum suppression in numpy, matching ``torchvision.ops.nms``."""

from __future__ import annotations

import numpy as np

__all__ = ["box_iou", "nms"]


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy ``box`` [4] with each of ``boxes`` [N, 4] (same dtype arithmetic as torchvision).

    Example:
        >>> box_iou(np.array([0, 0, 2, 2.0]), np.array([[1, 0, 3, 2.0]])).round(3).tolist()
        [0.333]
    """
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.asarray(inter / (area + areas - inter))


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_det: int | None = None) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, highest score first.

    A box is dropped when its IoU with a kept, higher-scoring box is above ``iou_threshold``.
    Ties in score keep input order (stable sort), as torchvision does on CPU.

    Args:
        boxes: ``[N, 4]`` xyxy.
        scores: ``[N]``.
        iou_threshold: Suppression threshold.
        max_det: Stop once this many boxes are kept (the same as truncating the full result).

    Example:
        >>> b = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
        >>> nms(b, np.array([0.9, 0.8, 0.7], np.float32), 0.5).tolist()
        [0, 2]
    """
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    keep: list[int] = []
    alive = np.ones(len(order), bool)
    limit = len(order) if max_det is None else max_det
    for i in range(len(order)):
        if len(keep) >= limit:
            break
        if not alive[i]:
            continue
        keep.append(i)
        rest = i + 1 + np.flatnonzero(alive[i + 1 :])
        if rest.size:
            alive[rest[box_iou(boxes[i], boxes[rest]) > iou_threshold]] = False
    return order[np.asarray(keep, np.int64)]
