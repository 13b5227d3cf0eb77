"""Decode raw YOLO outputs into :class:`~yoloquant.detections.Detections`, as Ultralytics' validator does.

* DFL head (YOLOv8 / YOLO11): ``[B, 4 + nc, anchors]`` of cx, cy, w, h and class scores. Every
  (box, class) pair above ``conf`` is a candidate (``multi_label=True``), at most 30000 by score, then
  class-aware NMS (boxes offset by ``class * 7680`` so classes never suppress each other), then ``max_det``.
* End-to-end head (YOLOv10 / YOLO26): ``[B, N, 6]`` of x1, y1, x2, y2, score, class, already
  deduplicated: keep rows with score > ``conf``, in model order, up to ``max_det``; no NMS.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from yoloquant.artifacts import ModelInfo
from yoloquant.config import HeadType
from yoloquant.detections import Detections
from yoloquant.errors import InferenceError
from yoloquant.postprocess.nms import nms

__all__ = ["MAX_NMS", "MAX_WH", "decode", "decode_boxes", "decode_dfl", "decode_end2end", "dfl_candidates"]

MAX_NMS = 30000  # candidates kept before NMS (Ultralytics' max_nms)
MAX_WH = 7680  # per-class coordinate offset for class-aware NMS (Ultralytics' max_wh)


def decode_dfl(pred: np.ndarray, *, conf: float, iou: float, max_det: int, multi_label: bool = True) -> Detections:
    """Decode one image's ``[4 + nc, anchors]`` DFL-head output with class-aware multi-label NMS.

    Example:
        >>> pred = np.zeros((6, 1), np.float32); pred[:4, 0] = [5, 5, 4, 4]; pred[4, 0] = 0.9
        >>> decode_dfl(pred, conf=0.25, iou=0.7, max_det=300).boxes.tolist()
        [[3.0, 3.0, 7.0, 7.0]]
    """
    return dfl_candidates(pred, pred.shape[0] - 4, conf=conf, iou=iou, max_det=max_det, multi_label=multi_label)[0]


def dfl_candidates(
    pred: np.ndarray, nc: int, *, conf: float, iou: float, max_det: int, multi_label: bool = True
) -> tuple[Detections, np.ndarray]:
    """:func:`decode_dfl` of ``pred[:4 + nc]``, and the anchor (column) index of each kept detection.

    A seg or pose head's channels after the class scores (mask coefficients, keypoints) are gathered with
    those indices, as Ultralytics' NMS carries them along.

    Example:
        >>> pred = np.zeros((7, 2), np.float32); pred[:4, 1] = [5, 5, 4, 4]; pred[4, 1] = 0.9; pred[6] = [1, 2]
        >>> dets, anchors = dfl_candidates(pred, 1, conf=0.25, iou=0.7, max_det=300)
        >>> anchors.tolist(), pred[6, anchors].tolist()
        ([1], [2.0])
    """
    x = np.asarray(pred, np.float32)[: 4 + nc].T  # [anchors, 4 + nc]
    anchors = np.flatnonzero(x[:, 4:].max(1) > conf)
    x = x[anchors]
    if not x.shape[0]:
        return Detections.empty(), np.zeros(0, np.int64)
    cx, cy, w, h = x[:, 0], x[:, 1], x[:, 2], x[:, 3]
    box = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    if multi_label and nc > 1:  # one candidate per (box, class) above conf
        i, j = np.nonzero(x[:, 4:] > conf)
    else:  # best class only
        j = x[:, 4:].argmax(1)
        i = np.flatnonzero(x[np.arange(len(x)), 4 + j] > conf)
        j = j[i]
    boxes, scores, classes = box[i], x[i, 4 + j], j.astype(np.int64)
    if scores.shape[0] > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        boxes, scores, classes, i = boxes[top], scores[top], classes[top], i[top]
    offset = classes.astype(np.float32)[:, None] * np.float32(MAX_WH)
    keep = nms(boxes + offset, scores, iou, max_det)
    return Detections(boxes[keep], scores[keep], classes[keep]), anchors[i[keep]]


def decode_end2end(pred: np.ndarray, *, conf: float, max_det: int) -> Detections:
    """Decode one image's ``[N, 6]`` end-to-end output: score threshold and ``max_det``, no NMS.

    Example:
        >>> pred = np.array([[1, 2, 3, 4, 0.9, 7], [1, 2, 3, 4, 0.1, 2]], np.float32)
        >>> decode_end2end(pred, conf=0.25, max_det=300).classes.tolist()
        [7]
    """
    x = np.asarray(pred, np.float32)
    x = x[x[:, 4] > conf][:max_det]
    return Detections(np.ascontiguousarray(x[:, :4]), np.ascontiguousarray(x[:, 4]), x[:, 5].astype(np.int64))


def decode(
    outputs: Sequence[np.ndarray],
    info: ModelInfo,
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    multi_label: bool = True,
) -> list[Detections]:
    """Decode a batch of raw model outputs into per-image detections in model-input pixels.

    The model's task (``info.task``) picks the decoder (see :mod:`yoloquant.tasks`); a detector's is
    :func:`decode_boxes`.

    Args:
        outputs: The engine's outputs, all of them.
        info: The model's info; ``info.task`` picks the task's decoder, ``info.head`` the head's.
        conf: Score threshold (``yolo val`` uses 0.001, ``yolo predict`` 0.25).
        iou: NMS IoU threshold (DFL head only).
        max_det: Most detections per image.
        multi_label: A box may yield one detection per class above ``conf`` (``yolo val``); False keeps
            only its best class (``yolo predict``).

    Raises:
        InferenceError: If the output shape does not fit the head type.
        ConfigError: If the model's task is not supported.

    Example:
        >>> dets = decode(engine.infer(batch), engine.info, conf=0.001)  # doctest: +SKIP
    """
    from yoloquant.tasks import task_spec  # the task registry names this module's decoder

    spec = task_spec(info.task)
    return spec.decode(outputs, info, conf=conf, iou=iou, max_det=max_det, multi_label=multi_label)


def decode_boxes(
    outputs: Sequence[np.ndarray], info: ModelInfo, *, conf: float, iou: float, max_det: int, multi_label: bool
) -> list[Detections]:
    """The detect task's decoder: the first output is the box tensor, ``info.head`` picks its layout.

    Raises:
        InferenceError: If the output shape does not fit the head type.
    """
    pred = np.asarray(outputs[0])
    end2end = info.head is HeadType.END2END
    if pred.ndim != 3 or (end2end and pred.shape[2] < 6) or (not end2end and pred.shape[1] < 5):
        want = "[B, N, 6]" if end2end else "[B, 4 + nc, anchors]"
        msg = f"a {info.head.value} head should output {want}, got shape {pred.shape}; check the model's head metadata"
        raise InferenceError(msg)
    if end2end:
        return [decode_end2end(p, conf=conf, max_det=max_det) for p in pred]
    nc = pred.shape[1] - 4
    if info.source_task != "detect" and info.num_classes and nc > info.num_classes:
        # a seg / pose head run as a detector: mask coefficients or keypoints follow the class scores
        pred, nc = pred[:, : 4 + info.num_classes], info.num_classes
    if nc != info.num_classes and info.num_classes:
        msg = f"model output has {nc} class channels but the model names {info.num_classes} classes"
        raise InferenceError(msg)
    return [decode_dfl(p, conf=conf, iou=iou, max_det=max_det, multi_label=multi_label) for p in pred]
