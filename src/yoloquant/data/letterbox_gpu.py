"""Letterbox on the GPU (PyTorch), from decoded uint8 frames: the same geometry as :mod:`yoloquant.data.letterbox`.

Sizes, padding and the returned :class:`~yoloquant.data.letterbox.LetterboxMeta` are computed by the CPU
letterbox's own rules, so boxes map back identically. The resize is bilinear with half-pixel centres and
no antialiasing (``F.interpolate(mode="bilinear", align_corners=False)``), which is what OpenCV's
``INTER_LINEAR`` computes; OpenCV rounds with 11-bit fixed-point weights, so pixels may differ by one
level (tests/unit/test_letterbox_gpu.py bounds it on the bundled images: at most 1, on a few percent of
the pixels). Works on any torch device, CPU included.

Example:
    >>> frames = [torch.from_numpy(cv2.imread("a.jpg")).cuda()]  # doctest: +SKIP
    >>> batch, metas = letterbox_batch(frames, 640)  # uint8 [1, 3, 640, 640] RGB on the GPU
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from yoloquant._optional import require
from yoloquant.data.letterbox import PAD_VALUE, LetterboxMeta

__all__ = ["letterbox_batch", "letterbox_frame", "preprocess_via_torch"]


def _resize(chw: Any, size: tuple[int, int]) -> Any:
    """Bilinear resize of a uint8 ``[3, H, W]`` tensor to ``size`` (h, w), rounded back to uint8."""
    if tuple(chw.shape[1:]) == size:
        return chw
    f = require("torch.nn.functional")
    out = f.interpolate(chw[None].float(), size=size, mode="bilinear", align_corners=False, antialias=False)
    return out[0].round_().clamp_(0, 255).to(chw.dtype)


def _pad_sizes(h: int, w: int, imgsz: int, *, scaleup: bool) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """The letterbox's resized (h, w) and (left, right, top, bottom) padding, by the CPU letterbox's rules."""
    r = min(imgsz / h, imgsz / w)
    r = r if scaleup else min(r, 1.0)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (imgsz - new_w) / 2, (imgsz - new_h) / 2
    return (new_h, new_w), (round(dw - 0.1), round(dw + 0.1), round(dh - 0.1), round(dh + 0.1))


def letterbox_frame(
    frame_bgr: Any, imgsz: int, *, mode: Literal["val", "predict"] = "predict"
) -> tuple[Any, LetterboxMeta]:
    """One uint8 ``[H, W, 3]`` BGR frame (a torch tensor on any device) -> uint8 RGB ``[3, imgsz, imgsz]``.

    ``mode`` is :func:`yoloquant.data.letterbox.preprocess`'s: ``predict`` (one resize, ``yolo predict``) or
    ``val`` (long side to imgsz with ``ceil`` first, ``yolo val``).
    """
    f = require("torch.nn.functional")
    h0, w0 = int(frame_bgr.shape[0]), int(frame_bgr.shape[1])
    chw = frame_bgr.permute(2, 0, 1).flip(0)  # BGR -> RGB
    if mode == "val":
        r = imgsz / max(h0, w0)
        if r != 1:
            chw = _resize(chw, (min(math.ceil(h0 * r), imgsz), min(math.ceil(w0 * r), imgsz)))
    h1, w1 = int(chw.shape[1]), int(chw.shape[2])
    (new_h, new_w), (left, right, top, bottom) = _pad_sizes(h1, w1, imgsz, scaleup=mode == "predict")
    chw = _resize(chw, (new_h, new_w))
    padded = f.pad(chw, (left, right, top, bottom), value=PAD_VALUE)
    gain = (h1 / h0 * (new_h / h1), w1 / w0 * (new_w / w1))  # the CPU letterbox's expression, to the last bit
    return padded.contiguous(), LetterboxMeta(shape=(h0, w0), gain=gain, pad=(left, top))


def letterbox_batch(
    frames: Sequence[Any], imgsz: int, *, mode: Literal["val", "predict"] = "predict"
) -> tuple[Any, list[LetterboxMeta]]:
    """Letterbox frames of any sizes into one uint8 ``[B, 3, imgsz, imgsz]`` tensor on their device."""
    torch = require("torch")
    done = [letterbox_frame(f, imgsz, mode=mode) for f in frames]
    return torch.stack([x for x, _ in done]), [m for _, m in done]


def preprocess_via_torch(
    image_bgr: np.ndarray, imgsz: int, *, device: str = "cuda", mode: Literal["val", "predict"] = "val"
) -> tuple[np.ndarray, LetterboxMeta]:
    """:func:`yoloquant.data.letterbox.preprocess`'s signature, computed by :func:`letterbox_frame` on ``device``.

    For comparing the two letterboxes' accuracy through the same evaluation
    (``evaluate(..., preprocess=preprocess_via_torch)``); a pipeline keeps the frames on the GPU instead.
    """
    torch = require("torch")
    chw, meta = letterbox_frame(torch.from_numpy(np.ascontiguousarray(image_bgr)).to(device), imgsz, mode=mode)
    return chw.cpu().numpy(), meta
