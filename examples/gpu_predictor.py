"""Detect people in frames on a CUDA GPU with the compiled-PyTorch engine and ``TorchPredictor`` (one CUDA graph a
batch: letterbox on the GPU, model, decode + NMS, boxes back in frame pixels).

Run from the repository root on a machine with a CUDA GPU:  python examples/gpu_predictor.py [OUT_DIR]
(it needs PyTorch with CUDA and Ultralytics; the first run compiles for about a minute, later runs load the
saved code from OUT_DIR).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from yoloquant.backends.torch.engine import TorchEngineBuilder, TorchEngineConfig
from yoloquant.backends.torch.predictor import TorchPredictor
from yoloquant.data.images import read_image
from yoloquant.export import UltralyticsExporter

os.environ.setdefault("YOLO_OFFLINE", "1")  # Ultralytics must not reach the network
ASSETS = Path(__file__).resolve().parents[1] / "assets"
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/gpu_predictor")

model = UltralyticsExporter().export(ASSETS / "weights" / "yolov8n.pt", out)
frames = [read_image(p) for p in sorted((ASSETS / "coco64" / "images").glob("*.jpg"))]
config = TorchEngineConfig(precision="fp16", batch_sizes=(16,), artifact_dir=out / "yolov8n.torch")
with TorchEngineBuilder(config).build(model) as engine, TorchPredictor(engine, conf=0.25) as predictor:
    predictor.prepare(16)
    start = time.perf_counter()
    detections = predictor.predict(frames, batch_size=16)
    seconds = time.perf_counter() - start
people = sum(int((d.classes == 0).sum()) for d in detections)
print(
    f"{len(frames)} frames, {people} people, {len(frames) / seconds:.0f} frames/s (build {engine.build_seconds:.1f} s)"
)
