"""A resumable INT8 config sweep of YOLOv8n on the CPU, with a Pareto report.

Calibrates on coco128 images 0..N-1 and evaluates on images 64-127 (sorted file names); every
variant's mAP lands in <out>/ledger.jsonl when it finishes, so a killed run (even ``kill -9``)
resumes where it stopped when started again with the same --out. All variants are then timed
interleaved in one phase (batch 1, ORT CPU provider, no spinning); <out>/report.json (with its
``sweep`` section), report.md and pareto.png hold the result.

    YOLO_OFFLINE=1 nice -n 19 .venv/bin/python benchmarks/sweep_cpu.py --data ../shared/data/coco128 \
        --out runs/sweep-cpu --max-map-drop 0.5 --min-speedup 1.5
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

from yoloquant import QuantPipeline
from yoloquant.config import BenchConfig
from yoloquant.decide.sweep import Sweep

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "coco128")
    ap.add_argument("--model", type=Path, default=ROOT / "assets" / "weights" / "yolov8n.pt")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "sweep-cpu")
    ap.add_argument("--calibration", nargs="+", default=["minmax", "entropy", "percentile"])
    ap.add_argument("--num-images", nargs="+", type=int, default=[32, 64])
    ap.add_argument("--keep", nargs="+", default=["decode", "head"])
    ap.add_argument("--quantizer", nargs="+", default=["ort"])
    ap.add_argument("--eval-images", type=int, default=64)
    ap.add_argument("--eval-offset", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--max-map-drop", type=float, default=0.5)
    ap.add_argument("--min-speedup", type=float, default=None)
    ap.add_argument("--phase", choices=["all", "variants"], default="all", help="'variants': skip the timing")
    args = ap.parse_args()

    images = args.data / "images" / "train2017"
    annotations = next((args.data / "annotations").glob("*.json"))
    base = (
        QuantPipeline.from_ultralytics(args.model, imgsz=640)
        .calibrate(images, num_images=max(args.num_images), offset=0)
        .evaluate(annotations, num_images=args.eval_images, offset=args.eval_offset)
        .with_progress(False)
    )
    sweep = Sweep(base).grid(
        quantizer=args.quantizer,
        calibration_method=args.calibration,
        calib_images=args.num_images,
        keep_float=args.keep,
    )
    start = time.perf_counter()
    if args.phase == "variants":
        entries = sweep.run_variants(args.out)
        print(f"{len(entries)} ledger entries, {time.perf_counter() - start:.0f} s")
        return
    result = sweep.run(
        args.out,
        bench=BenchConfig(iterations=args.iterations, warmup=5),
        recommend_max_drop=args.max_map_drop,
        recommend_min_speedup=args.min_speedup,
    )
    print(result.report.table())
    print(f"recommended: {result.recommended}\n{result.recommended_call}\n{result.recommended_cli}")
    print(f"{len(sweep.variants)} variants + fp32 in {time.perf_counter() - start:.0f} s this run")


if __name__ == "__main__":
    main()
