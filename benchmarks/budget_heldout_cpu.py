"""A held-out check of the INT8 accuracy budget of YOLOv8n on the CPU.

The budget is searched on coco128 images 0-63 (the calibration images; the COCO json labels them)
and the final mAP is measured on images 64-127, which the search never saw. For comparison, the
same budget searched on the evaluation images themselves (in-sample, optimistic) and full INT8 run in
the same pipeline; FP32 and every variant are timed interleaved in one run (batch 1, ORT CPU).

    YOLO_OFFLINE=1 nice -n 10 .venv/bin/python benchmarks/budget_heldout_cpu.py --out runs/budget-heldout
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

from yoloquant import QuantPipeline

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "coco128")
    ap.add_argument("--model", type=Path, default=ROOT / "assets" / "weights" / "yolov8n.pt")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "budget-heldout")
    ap.add_argument("--max-map-drop", type=float, default=0.3)
    ap.add_argument("--granularity", default="block")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--no-in-sample", action="store_true", help="skip the in-sample (optimistic) budget")
    args = ap.parse_args()

    labels = next((args.data / "annotations").glob("*.json"))  # images 0-63 calibrate and search, 64-127 evaluate
    plan = QuantPipeline.from_ultralytics(args.model, imgsz=640).calibrate(labels, num_images=64, offset=0)
    plan = plan.quantize("int8", name="int8")
    for where in ("calibration",) if args.no_in_sample else ("calibration", "evaluation"):
        name = "int8-budget-heldout" if where == "calibration" else "int8-budget-insample"
        plan = plan.quantize(
            "int8", max_map_drop=args.max_map_drop, granularity=args.granularity, budget_data=where, name=name
        )
    plan = plan.evaluate(labels, num_images=64, offset=64).benchmark(iterations=args.iterations).with_progress(False)
    start = time.perf_counter()
    result = plan.run(args.out)
    print(result.table())
    for v in result.variants:
        found = (v.quantization or {}).get("config", {}).get("result")
        if found:
            measured = (result.baseline.map50_95 or 0.0) - (v.map50_95 or 0.0)
            print(
                f"{v.name}: {len(found['float_groups'])} of {found['groups_total']} groups float "
                f"{found['float_groups']}; drop in the search {found['drop_points']:+.2f} points, "
                f"on the evaluation images {measured * 100:+.2f} points"
            )
    print(f"{time.perf_counter() - start:.0f} s; report: {args.out}/report.json")


if __name__ == "__main__":
    main()
