"""Letterbox preprocessing identical to what ``yolo val`` feeds a static ONNX model.

Ultralytics' validation dataset first resizes the long side to ``imgsz`` (``BaseDataset.load_image``:
``ceil`` of each side, capped at ``imgsz``, bilinear), then ``LetterBox(scaleup=False, center=True)``
pads to ``imgsz x imgsz`` with gray 114 (``round(d - 0.1)`` before, ``round(d + 0.1)`` after), then BGR -> RGB.
Boxes go back with the gains and padding the validator passes to ``ops.scale_boxes`` as ``ratio_pad``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from yoloquant._optional import require

if TYPE_CHECKING:
    from yoloquant.detections import Detections

__all__ = ["PREPROCESS_VERSION", "VAL_MASK_THRESHOLD", "LetterboxMeta", "normalize_pixels", "preprocess", "scale_boxes"]

# Bump when the pixels preprocess() produces change; it is part of the calibration cache key.
PREPROCESS_VERSION = "ultralytics-8.4-val-letterbox-v1"

PAD_VALUE = 114

# ``yolo val`` resizes its uint8 masks bilinearly to the original image and casts with ``.byte()``, which
# truncates: a pixel stays in the mask only where the interpolated value is 1 (below 1 by float rounding at most).
VAL_MASK_THRESHOLD = 1 - 1e-5


@dataclass(frozen=True)
class LetterboxMeta:
    """How an image was mapped into the model input.

    Attributes:
        shape: Original image (height, width).
        gain: (gain_y, gain_x): resized size / original size per axis.
        pad: (left, top) padding in input pixels.
    """

    shape: tuple[int, int]
    gain: tuple[float, float]
    pad: tuple[int, int]


def _resize_long_side(image: np.ndarray, imgsz: int) -> np.ndarray:
    cv2 = require("cv2")
    h0, w0 = image.shape[:2]
    r = imgsz / max(h0, w0)
    if r == 1:
        return image
    w, h = min(math.ceil(w0 * r), imgsz), min(math.ceil(h0 * r), imgsz)
    return np.asarray(cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR))


def _letterbox(
    image: np.ndarray, imgsz: int, *, scaleup: bool
) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Ultralytics ``LetterBox(center=True, auto=False)``: returns the padded HWC image, its gain and pad."""
    cv2 = require("cv2")
    h, w = image.shape[:2]
    r = min(imgsz / h, imgsz / w)
    if not scaleup:
        r = min(r, 1.0)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    if (w, h) != (new_w, new_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (imgsz - new_w) / 2, (imgsz - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return np.asarray(padded), (new_h / h, new_w / w), (left, top)


def preprocess(
    image_bgr: np.ndarray, imgsz: int, *, mode: Literal["val", "predict"] = "val"
) -> tuple[np.ndarray, LetterboxMeta]:
    """Letterbox one BGR image into a uint8 RGB ``[3, imgsz, imgsz]`` model input.

    Args:
        image_bgr: uint8 ``[H, W, 3]`` as :func:`~yoloquant.data.images.read_image` returns it.
        imgsz: Square model input size.
        mode: ``"val"`` reproduces ``yolo val`` (long side to imgsz with ``ceil``, then letterbox);
            ``"predict"`` reproduces ``yolo predict`` (one letterbox resize with ``round``). They differ
            only for images whose long side is not ``imgsz``, by at most one pixel of resized size.

    Returns:
        The CHW RGB uint8 input and the :class:`LetterboxMeta` to map boxes back.

    Example:
        >>> img, meta = preprocess(np.zeros((480, 640, 3), np.uint8), 640)
        >>> img.shape, meta.pad
        ((3, 640, 640), (0, 80))
    """
    h0, w0 = image_bgr.shape[:2]
    if mode == "val":
        resized = _resize_long_side(image_bgr, imgsz)
        h1, w1 = resized.shape[:2]
        padded, (gy, gx), pad = _letterbox(resized, imgsz, scaleup=False)
        gain = (h1 / h0 * gy, w1 / w0 * gx)
    else:
        padded, gain, pad = _letterbox(image_bgr, imgsz, scaleup=True)
    chw = np.ascontiguousarray(padded.transpose(2, 0, 1)[::-1])
    return chw, LetterboxMeta(shape=(h0, w0), gain=gain, pad=pad)


def normalize_pixels(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels (``[B, 3, H, W]`` from :func:`preprocess`) -> the float32 model input in [0, 1], C-contiguous.

    The division is ``float32(x) / float32(255)``, as Ultralytics scales its input (``img.float() / 255``).

    Example:
        >>> normalize_pixels(np.array([0, 51, 255], np.uint8)).tolist()
        [0.0, 0.20000000298023224, 1.0]
    """
    return np.ascontiguousarray(pixels, dtype=np.float32) / np.float32(255.0)


def scale_boxes(boxes_xyxy: np.ndarray, meta: LetterboxMeta) -> np.ndarray:
    """Map xyxy boxes from model-input pixels back to original-image pixels, clipped to the image.

    Mirrors ``ultralytics.utils.ops.scale_boxes`` with the ``ratio_pad`` the validator passes.

    Example:
        >>> meta = LetterboxMeta(shape=(480, 640), gain=(1.0, 1.0), pad=(0, 80))
        >>> scale_boxes(np.array([[0.0, 80.0, 10.0, 90.0]]), meta).tolist()
        [[0.0, 0.0, 10.0, 10.0]]
    """
    out = np.array(boxes_xyxy, dtype=np.float32, copy=True).reshape(-1, 4)
    gain_y, gain_x = meta.gain
    left, top = meta.pad
    out[:, [0, 2]] = (out[:, [0, 2]] - left) / gain_x
    out[:, [1, 3]] = (out[:, [1, 3]] - top) / gain_y
    h, w = meta.shape
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


def scale_keypoints(keypoints: np.ndarray, meta: LetterboxMeta) -> np.ndarray:
    """Map ``[N, K, 3]`` keypoints (x, y, visibility) from model-input to original-image pixels, clipped.

    Mirrors ``ultralytics.utils.ops.scale_coords``; visibility is kept.

    Example:
        >>> meta = LetterboxMeta(shape=(480, 640), gain=(1.0, 1.0), pad=(0, 80))
        >>> scale_keypoints(np.array([[[5.0, 85.0, 0.9]]]), meta).tolist()
        [[[5.0, 5.0, 0.8999999761581543]]]
    """
    out = np.array(keypoints, dtype=np.float32, copy=True)
    gain_y, gain_x = meta.gain
    left, top = meta.pad
    h, w = meta.shape
    out[..., 0] = ((out[..., 0] - left) / gain_x).clip(0, w)
    out[..., 1] = ((out[..., 1] - top) / gain_y).clip(0, h)
    return out


def scale_masks(masks: np.ndarray, meta: LetterboxMeta, *, threshold: float = 0.5) -> np.ndarray:
    """Map ``[N, imgsz, imgsz]`` masks over the model input to the original image: crop the padding, resize.

    Mirrors ``ultralytics.utils.ops.scale_image`` (bilinear); the dtype is kept (bool masks are resized as
    0 / 1 and keep the pixels above ``threshold``; ``yolo val`` keeps only those at 1, see :data:`VAL_MASK_THRESHOLD`).

    Example:
        >>> meta = LetterboxMeta(shape=(2, 4), gain=(1.0, 1.0), pad=(0, 1))
        >>> scale_masks(np.pad(np.ones((1, 2, 4), bool), ((0, 0), (1, 1), (0, 0))), meta).sum()
        np.int64(8)
    """
    cv2 = require("cv2")
    h, w = meta.shape
    left, top = meta.pad
    rows, cols = round(h * meta.gain[0]), round(w * meta.gain[1])
    out = np.empty((masks.shape[0], h, w), masks.dtype)
    for i, m in enumerate(masks[:, top : top + rows, left : left + cols].astype(np.float32)):
        resized = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
        out[i] = resized > threshold if masks.dtype == np.bool_ else resized
    return out


def scale_detections(dets: Detections, meta: LetterboxMeta, *, mask_threshold: float = 0.5) -> Detections:
    """``dets`` from model-input pixels to original-image pixels: boxes, and masks and keypoints where present.

    ``mask_threshold`` is :func:`scale_masks`' ``threshold``.
    """
    return dataclasses.replace(
        dets,
        boxes=scale_boxes(dets.boxes, meta),
        masks=None if dets.masks is None else scale_masks(dets.masks, meta, threshold=mask_threshold),
        keypoints=None if dets.keypoints is None else scale_keypoints(dets.keypoints, meta),
    )
