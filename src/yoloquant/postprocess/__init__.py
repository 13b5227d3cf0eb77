"""Decode YOLO heads (v8/11 DFL + NMS, v10/26 end-to-end) into Detections, and end-to-end predict."""

from __future__ import annotations

from yoloquant.postprocess.decode import decode
from yoloquant.postprocess.nms import nms
from yoloquant.postprocess.predict import predict

__all__ = ["decode", "nms", "predict"]
