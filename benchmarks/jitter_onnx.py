r"""Expected mAP delta of quantized ONNX files: every activation scale x0.97 .. x1.03 (coco128 64-127).

On 64 evaluation images, two equally good quantized models differ by up to ~1.5 mAP points; the mean
over jittered activation scales estimates what a layout costs (same procedure as openvino_int8.py).

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/jitter_onnx.py --fp32 runs/x/fp32/yolov8n-fp32.onnx \
        runs/x/v1/yolov8n-w8a8.onnx runs/x/v2/yolov8n-w8a8.onnx
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from openvino_int8 import ROOT, jittered, score

from yoloquant.config import Backend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path, help="quantized ONNX files")
    ap.add_argument("--fp32", type=Path, required=True, help="the float ONNX they came from")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "coco128")
    ap.add_argument("--out", type=Path, help="write the results here as JSON")
    args = ap.parse_args()
    cpu = Backend.ORT_CPU
    base = score(args, args.fp32, cpu)
    rows = {}
    for path in args.models:
        got = score(args, path, cpu) | jittered(args, path, cpu)
        row = {}
        for split in ("eval", "calib"):
            deltas = np.array(got[f"jitter_{split}_{cpu.value}"]) - base[f"map_{split}_{cpu.value}"]
            row[split] = {
                "delta": got[f"map_{split}_{cpu.value}"] - base[f"map_{split}_{cpu.value}"],
                "jitter_mean": float(deltas.mean()),
                "jitter_sd": float(deltas.std(ddof=1)),
            }
        rows[str(path)] = row
        print(
            f"{path}: eval {row['eval']['delta']:+.2f} (jitter {row['eval']['jitter_mean']:+.2f} +- "
            f"{row['eval']['jitter_sd']:.2f}); calib {row['calib']['delta']:+.2f} (jitter "
            f"{row['calib']['jitter_mean']:+.2f} +- {row['calib']['jitter_sd']:.2f})",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
