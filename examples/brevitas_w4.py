"""Brevitas W8A8 and W4A16 of the bundled YOLOv8n, compared with FP32 (docs/brevitas.md).

W8A8 is the ``w8a8`` preset. W4A16 is the ``w4a16`` preset (MSE weight scales, model.0-4 and the head's
output convs at 8 bits) with GPTQ on only 8 images instead of the preset's Qronos on 32, so the example
stays quick on a CPU. Small image counts: the mAP moves by points between runs; the measurement on
coco128 is in docs/brevitas.md. Neither variant is faster than FP32 on ONNX Runtime's CPU provider; the
W8A8 preset (uint8 activations) runs at about 0.3x FP32's latency on its OpenVINO provider (same doc).

Run from the repository root (needs ``pip install "yoloquant[brevitas]"``):
    python examples/brevitas_w4.py [OUT_DIR]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from yoloquant import QuantPipeline
from yoloquant.quantize.brevitas import BrevitasConfig, BrevitasQuantizer

os.environ.setdefault("YOLO_OFFLINE", "1")  # Ultralytics must not reach the network
ASSETS = Path(__file__).resolve().parents[1] / "assets"
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/brevitas")

w4a16 = BrevitasQuantizer(BrevitasConfig.w4a16(rounding="gptq", rounding_images=8))  # preset: Qronos, slower
result = (
    QuantPipeline.from_ultralytics(ASSETS / "weights" / "yolov8n.pt", imgsz=640)
    .calibrate(ASSETS / "coco64" / "images", num_images=8)  # images 0-7
    .quantize("w8a8")  # Brevitas is the default quantizer for w8a16, w8a8, w4a16, w4a8
    .quantize("w4a16", quantizer=w4a16, name="w4a16")
    .evaluate(ASSETS / "coco64.yaml", offset=32, num_images=16)  # images 32-47: disjoint from calibration
    .benchmark(batch_sizes=(1,), iterations=20)
    .run(out)
)
print(result.table())
for variant in result.variants:
    if variant.quantization:  # report.json records what TensorRT could accelerate, per variant
        print(f"{variant.name} on TensorRT: {variant.quantization['config']['tensorrt']}")
print(f"report: {out / 'report.json'}")
