"""Decode a pose head: boxes as :mod:`~yoloquant.postprocess.decode` does, plus each detection's keypoints.

* DFL head (YOLOv8 / YOLO11 pose): ``[B, 4 + nc + K * D, anchors]``: cx, cy, w, h, class scores, then K
  keypoints of D values (x, y in model-input pixels, and a visibility already through its sigmoid when
  D is 3). NMS as for boxes; each kept detection takes its anchor's keypoints (Ultralytics carries them
  through its NMS the same way).
* End-to-end head (YOLO26 pose): ``[B, N, 6 + K * D]``: x1, y1, x2, y2, score, class, keypoints; no NMS.

Keypoints come out ``[N, K, 3]``: x, y, visibility (1.0 for a head without visibility, ``D == 2``).
:func:`~yoloquant.data.letterbox.scale_keypoints` maps them to the original image like boxes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from yoloquant.artifacts import ModelInfo
from yoloquant.config import HeadType
from yoloquant.detections import Detections
from yoloquant.errors import InferenceError
from yoloquant.postprocess.decode import decode_end2end, dfl_candidates

__all__ = ["as_keypoints", "check_pose_output", "decode_keypoints", "decode_keypoints_end2end", "decode_pose"]


def as_keypoints(values: np.ndarray, kpt_shape: tuple[int, int]) -> np.ndarray:
    """``[N, K * D]`` keypoint values -> float32 ``[N, K, 3]`` (x, y, visibility; 1.0 where D is 2).

    Example:
        >>> as_keypoints(np.array([[1.0, 2.0, 3.0, 4.0]]), (2, 2)).tolist()
        [[[1.0, 2.0, 1.0], [3.0, 4.0, 1.0]]]
    """
    k, dims = kpt_shape
    points = np.asarray(values, np.float32).reshape(-1, k, dims)
    if dims == 3:
        return np.ascontiguousarray(points)
    return np.concatenate([points[..., :2], np.ones((*points.shape[:2], 1), np.float32)], axis=2)


def decode_keypoints(
    pred: np.ndarray,
    *,
    nc: int,
    kpt_shape: tuple[int, int],
    conf: float,
    iou: float,
    max_det: int,
    multi_label: bool = True,
) -> Detections:
    """One image's DFL pose output ``[4 + nc + K * D, anchors]`` -> detections with keypoints.

    Example:
        >>> pred = np.zeros((8, 1), np.float32); pred[:4, 0] = [5, 5, 4, 4]; pred[4, 0] = 0.9
        >>> pred[5:, 0] = [4, 6, 0.8]  # one keypoint: x, y, visibility
        >>> decode_keypoints(pred, nc=1, kpt_shape=(1, 3), conf=0.25, iou=0.7, max_det=300).keypoints.tolist()
        [[[4.0, 6.0, 0.800000011920929]]]
    """
    x = np.asarray(pred, np.float32)
    dets, anchors = dfl_candidates(x, nc, conf=conf, iou=iou, max_det=max_det, multi_label=multi_label)
    return dataclasses.replace(dets, keypoints=as_keypoints(x[4 + nc :, anchors].T, kpt_shape))


def decode_keypoints_end2end(pred: np.ndarray, *, kpt_shape: tuple[int, int], conf: float, max_det: int) -> Detections:
    """One image's end-to-end pose output ``[N, 6 + K * D]`` -> detections with keypoints.

    Example:
        >>> pred = np.array([[0, 0, 4, 4, 0.9, 0, 1, 2, 0.5], [0, 0, 4, 4, 0.1, 0, 3, 3, 0.5]], np.float32)
        >>> decode_keypoints_end2end(pred, kpt_shape=(1, 3), conf=0.25, max_det=300).keypoints.tolist()
        [[[1.0, 2.0, 0.5]]]
    """
    x = np.asarray(pred, np.float32)
    keep = np.flatnonzero(x[:, 4] > conf)[:max_det]
    dets = decode_end2end(x[keep], conf=conf, max_det=max_det)
    return dataclasses.replace(dets, keypoints=as_keypoints(x[keep, 6:], kpt_shape))


def check_pose_output(shape: tuple[int, ...], info: ModelInfo) -> tuple[int, int]:
    """Check a pose head's first output ``shape`` against the model's metadata; returns ``info.kpt_shape``.

    Shared by :func:`decode_pose` and the torch decoder (:func:`yoloquant.postprocess.gpu.decode_pose_torch`),
    so both refuse the same outputs with the same message.

    Raises:
        InferenceError: The model has no ``kpt_shape`` metadata, or ``shape`` does not fit it.

    Example:
        >>> info = ModelInfo(names={0: "person"}, task="pose", source_task="pose", kpt_shape=(17, 3))
        >>> check_pose_output((1, 56, 8400), info)
        (17, 3)
    """
    if info.kpt_shape is None:
        msg = (
            "a pose model needs its keypoint shape, and this model's ONNX has no 'kpt_shape' metadata; "
            "export it with Ultralytics or yoloquant (which keep it)"
        )
        raise InferenceError(msg)
    width = info.kpt_shape[0] * info.kpt_shape[1]
    end2end = info.head is HeadType.END2END
    nc = info.num_classes
    want = 6 + width if end2end else 4 + nc + width
    if len(shape) != 3 or shape[2 if end2end else 1] != want:
        layout = f"[B, N, 6 + {width}]" if end2end else f"[B, 4 + {nc} + {width}, anchors]"
        msg = (
            f"a {info.head.value} pose head with {nc} classes and kpt_shape {list(info.kpt_shape)} outputs "
            f"{layout}; got {tuple(shape)}; check the model's metadata"
        )
        raise InferenceError(msg)
    return info.kpt_shape


def decode_pose(
    outputs: Sequence[np.ndarray], info: ModelInfo, *, conf: float, iou: float, max_det: int, multi_label: bool
) -> list[Detections]:
    """The pose task's decoder: boxes, class scores and keypoints in the first output; ``info.kpt_shape`` splits them.

    Raises:
        InferenceError: The model has no ``kpt_shape`` metadata, or an output shape that does not fit it.
    """
    pred = np.asarray(outputs[0])
    kpt_shape = check_pose_output(pred.shape, info)
    if info.head is HeadType.END2END:
        return [decode_keypoints_end2end(p, kpt_shape=kpt_shape, conf=conf, max_det=max_det) for p in pred]
    nc = info.num_classes
    return [
        decode_keypoints(p, nc=nc, kpt_shape=kpt_shape, conf=conf, iou=iou, max_det=max_det, multi_label=multi_label)
        for p in pred
    ]
