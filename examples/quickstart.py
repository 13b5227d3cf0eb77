"""Quantize the bundled YOLOv8n to INT8 for ONNX Runtime's CPU provider and compare it with FP32.

Run from the repository root:  python examples/quickstart.py [OUT_DIR]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from yoloquant import QuantPipeline

os.environ.setdefault("YOLO_OFFLINE", "1")  # Ultralytics must not reach the network
ASSETS = Path(__file__).resolve().parents[1] / "assets"
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/quickstart")

result = (
    QuantPipeline.from_ultralytics(ASSETS / "weights" / "yolov8n.pt", imgsz=640)
    .calibrate(ASSETS / "coco64" / "images", num_images=32)  # images 0-31
    .quantize("int8", backend="ort-cpu")
    .evaluate(ASSETS / "coco64.yaml", offset=32)  # images 32-63: disjoint from calibration
    .benchmark(batch_sizes=(1,), iterations=50)
    .run(out)
)
print(result.table())
print(f"report: {out / 'report.json'}")
