"""The accuracy budget under the protocol: searched on coco128 0-63 (the labelled calibration images), verified
on all of coco-val-person, with full INT8 beside it and latency timed interleaved (batch 1, ORT CPU provider).

Reads ../shared/data; says so and stops when it is missing.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/budget_protocol.py [--model assets/weights/yolov8n.pt] [--budget 0.3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=ROOT / "assets" / "weights" / "yolov8n.pt")
    parser.add_argument("--budget", type=float, default=0.3)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "budget-protocol")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} is missing (the shared data folder beside the repo)")
        return 0
    from yoloquant import QuantPipeline

    result = (
        QuantPipeline.from_ultralytics(args.model)
        .calibrate(DATA / "coco128" / "images" / "train2017", num_images=64)
        .quantize("int8")
        .quantize("int8", max_map_drop=args.budget)  # searched on the calibration images, the default
        .evaluate(DATA / "coco-val-person" / "images")
        .benchmark(batch_sizes=(1,), iterations=60)
        .run(args.out)
    )
    print(result.table())
    for v in result.variants:
        verification = (v.quantization or {}).get("budget_verification")
        if verification:
            print(v.name, verification)
    return 0


if __name__ == "__main__":
    sys.exit(main())
