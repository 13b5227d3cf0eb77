"""``predict``: BGR images in, detections in original-image pixels out, like ``YOLO(model).predict``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from yoloquant.data.letterbox import preprocess, scale_boxes
from yoloquant.detections import Detections
from yoloquant.errors import InferenceError
from yoloquant.postprocess.decode import decode
from yoloquant.protocols import Engine

__all__ = ["predict"]


def predict(
    engine: Engine,
    images: Sequence[np.ndarray],
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
) -> list[Detections]:
    """Detect objects in BGR images with Ultralytics' predict preprocessing and postprocessing.

    Images run one at a time unless the engine has a dynamic batch, in which case they run as one batch.

    Args:
        engine: A built engine (e.g. from ``OrtEngineBuilder().build(model)``).
        images: uint8 ``[H, W, 3]`` BGR images (as ``cv2.imread`` returns them).
        conf: Score threshold.
        iou: NMS IoU threshold (DFL heads).
        max_det: Most detections per image.

    Returns:
        One :class:`Detections` per image, boxes in that image's pixels.

    Example:
        >>> with OrtEngineBuilder().build(OnnxModel.load("yolov8n.onnx")) as engine:  # doctest: +SKIP
        ...     dets = predict(engine, [cv2.imread("bus.jpg")])
    """
    h, w = engine.info.imgsz
    if h != w:
        msg = f"predict letterboxes to a square input; the model's imgsz is {engine.info.imgsz}"
        raise InferenceError(msg)
    prepared = [preprocess(np.asarray(im), h, mode="predict") for im in images]
    step = max(len(prepared), 1) if engine.info.dynamic_batch else 1
    out: list[Detections] = []
    for start in range(0, len(prepared), step):
        chunk = prepared[start : start + step]
        batch = np.stack([x for x, _ in chunk]).astype(np.float32) / 255.0
        dets = decode(engine.infer(batch), engine.info, conf=conf, iou=iou, max_det=max_det, multi_label=False)
        for d, (_, meta) in zip(dets, chunk, strict=True):
            out.append(Detections(scale_boxes(d.boxes, meta), d.scores, d.classes))
    return out
