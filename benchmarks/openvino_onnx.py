r"""Quantized ONNX files on ONNX Runtime's OpenVINO provider: mAP (coco128 64-127 and 0-63) and latency.

Latency is batch 1, interleaved rounds, as a ratio to the float model on ONNX Runtime's CPU provider
(the project's CPU baseline). Runs in an environment with ``onnxruntime-openvino`` (``.venv-ov``, see
docs/modelopt.md); quantize in ``.venv`` first (e.g. ``benchmarks/brevitas_coco.py``).

    YOLO_OFFLINE=1 .venv-ov/bin/python benchmarks/openvino_onnx.py --fp32 runs/b/fp32/yolov8n-fp32.onnx \
        runs/b/v1/yolov8n-w8a8.onnx
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from openvino_int8 import ROOT, score

from yoloquant.config import Backend


def latency(paths: dict[str, tuple[Path, str]], rounds: int) -> dict[str, float]:
    """Median seconds per batch-1 run of each (path, provider), interleaved round by round."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = {name: ort.InferenceSession(str(p), options, providers=[prov]) for name, (p, prov) in paths.items()}
    image = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(3):  # warm up
        for session in sessions.values():
            session.run(None, {session.get_inputs()[0].name: image})
    for _ in range(rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {session.get_inputs()[0].name: image})
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path, help="quantized ONNX files")
    ap.add_argument("--fp32", type=Path, required=True, help="the float ONNX they came from")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "coco128")
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--out", type=Path, help="write the results here as JSON")
    args = ap.parse_args()
    ov = Backend.OPENVINO
    rows = {str(p): score(args, p, ov) for p in [args.fp32, *args.models]}
    paths = {"fp32 cpu": (args.fp32, "CPUExecutionProvider"), "fp32 openvino": (args.fp32, "OpenVINOExecutionProvider")}
    paths |= {str(p): (p, "OpenVINOExecutionProvider") for p in args.models}
    seconds = latency(paths, args.rounds)
    base = seconds["fp32 cpu"]
    print(f"\n{'model':<60}{'mAP 64-127':>11}{'mAP 0-63':>10}{'x FP32 CPU latency':>20}")
    for name, (path, _) in paths.items():
        row = rows[str(path)]
        maps = f"{row['map_eval_openvino']:>11.2f}{row['map_calib_openvino']:>10.2f}"
        print(f"{name:<60}{maps}{seconds[name] / base:>20.2f}")
    if args.out:
        args.out.write_text(json.dumps({"maps": rows, "seconds": seconds}, indent=2))


if __name__ == "__main__":
    main()
