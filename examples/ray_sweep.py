"""A sweep of the bundled YOLOv8n on Ray: each variant a Ray task, the ledger written here, the report as usual.

Run from the repository root (``pip install "yoloquant[ray]"``):

    python examples/ray_sweep.py [OUT_DIR] [RAY_ADDRESS]

Without an address it starts a local Ray instance of 2 worker processes on this machine (a cluster of one
node); with ``auto`` it joins the cluster ``ray start --head`` runs here (docs/ray.md). OUT_DIR must be
a folder every node reads and writes at the same path: on one machine any folder is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from yoloquant import QuantPipeline
from yoloquant.config import BenchConfig
from yoloquant.decide.ray_executor import RayExecutor
from yoloquant.decide.sweep import Sweep

os.environ.setdefault("YOLO_OFFLINE", "1")  # Ultralytics must not reach the network; Ray's workers inherit it
ASSETS = Path(__file__).resolve().parents[1] / "assets"
out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/ray-sweep").absolute()
address = sys.argv[2] if len(sys.argv) > 2 else None

base = (
    QuantPipeline.from_ultralytics(ASSETS / "weights" / "yolov8n.pt", imgsz=640)
    .calibrate(ASSETS / "coco64" / "images", num_images=16)  # images 0-15
    .evaluate(ASSETS / "coco64.yaml", num_images=16, offset=32)  # images 32-47: disjoint from calibration
    .with_progress(False)
)
executor = RayExecutor(address=address, num_cpus=None if address else 2, max_retries=2)
sweep = Sweep(base, executor=executor, keep_going=True).grid(
    calibration_method=["minmax", "entropy"], keep_float=["decode", "head"]
)
result = sweep.run(out, bench=BenchConfig(iterations=20, warmup=3), recommend_max_drop=2.0)
print(result.report.table())
print(f"recommended: {result.recommended}")
print(f"report: {out / 'report.md'}; ledger: {out / 'ledger.jsonl'}")
