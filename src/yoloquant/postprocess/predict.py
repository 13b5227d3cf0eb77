"""``predict``: BGR images in, detections in original-image pixels out, like ``YOLO(model).predict``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import numpy as np

from yoloquant.data.images import as_bgr, read_image
from yoloquant.data.letterbox import normalize_pixels, preprocess, scale_detections
from yoloquant.detections import Detections
from yoloquant.errors import ConfigError, InferenceError
from yoloquant.postprocess.decode import decode
from yoloquant.protocols import Engine

__all__ = ["ImageInput", "predict"]

ImageInput: TypeAlias = np.ndarray | str | Path
"""An image for :func:`predict`: an array (see :func:`~yoloquant.data.images.as_bgr`) or an image file path."""


def predict(
    engine: Engine,
    images: ImageInput | Sequence[ImageInput],
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
) -> list[Detections]:
    """Detect objects in BGR images with Ultralytics' predict preprocessing and postprocessing.

    Images run one at a time unless the engine has a dynamic batch, in which case they run as one batch.

    Args:
        engine: A built engine (e.g. from ``OrtEngineBuilder().build(model)``).
        images: One image or a sequence of them: uint8 ``[H, W, 3]`` BGR arrays (as ``cv2.imread`` returns),
            grayscale ``[H, W]``, BGRA, floats in 0-1 (scaled by 255) or 0-255, or image file paths.
        conf: Score threshold.
        iou: NMS IoU threshold (DFL heads).
        max_det: Most detections per image.

    Returns:
        One :class:`Detections` per image (a list of one for a single image), boxes in that image's pixels,
        with the model's class ``names``.

    Raises:
        DataError: An image that is None (a failed ``cv2.imread``), empty, of another layout or value range,
            or a path that cannot be read; the message names the image's index.
        ConfigError: conf, iou or max_det out of range.

    Example:
        >>> with OrtEngineBuilder().build(OnnxModel.load("yolov8n.onnx")) as engine:  # doctest: +SKIP
        ...     dets = predict(engine, [cv2.imread("bus.jpg")])
    """
    h, w = engine.info.imgsz
    if h != w:
        msg = f"predict letterboxes to a square input; the model's imgsz is {engine.info.imgsz}"
        raise InferenceError(msg)
    if not (0.0 <= conf < 1.0 and 0.0 < iou <= 1.0 and max_det >= 1):
        msg = f"predict needs 0 <= conf < 1, 0 < iou <= 1, max_det >= 1; got conf={conf}, iou={iou}, max_det={max_det}"
        raise ConfigError(msg)
    single = not isinstance(images, Sequence) or isinstance(images, str)  # an array is not a Sequence
    items: list[object] = list(images) if isinstance(images, Sequence) and not single else [images]
    prepared = [preprocess(_load(im, i, single), h, mode="predict") for i, im in enumerate(items)]
    step = max(len(prepared), 1) if engine.info.dynamic_batch else 1
    out: list[Detections] = []
    for start in range(0, len(prepared), step):
        chunk = prepared[start : start + step]
        batch = normalize_pixels(np.stack([x for x, _ in chunk]))
        dets = decode(engine.infer(batch), engine.info, conf=conf, iou=iou, max_det=max_det, multi_label=False)
        for d, (_, meta) in zip(dets, chunk, strict=True):
            out.append(dataclasses.replace(scale_detections(d, meta), names=engine.info.names))
    return out


def _load(image: object, index: int, single: bool) -> np.ndarray:
    what = "the image" if single else f"image {index}"
    if isinstance(image, str | Path):
        return read_image(image)
    return as_bgr(image, what)
