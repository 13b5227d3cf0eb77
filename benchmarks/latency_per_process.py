"""Time ONNX models each in its own process, alternating, when they cannot share one process.

Two ONNX Runtime builds (e.g. `onnxruntime` and `onnxruntime-openvino`) install the same module, so
their providers cannot be interleaved in one process. This script runs each variant in a fresh
process with its own interpreter, in rounds (A, B, C, A, B, C, ...), and reports the median of each
process's p50 and the ratio to the first variant. Spinning is off, as in the pipeline.
``--json`` also writes every variant's per-round p50s, median and ratio.

    python benchmarks/latency_per_process.py --rounds 3 \
        .venv/bin/python:runs/x/yolov8n-fp32.onnx:CPUExecutionProvider \
        .venv-ov/bin/python:runs/x/int8-openvino/yolov8n-int8.onnx:OpenVINOExecutionProvider
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import json, sys, time
import numpy as np, onnxruntime as ort
from yoloquant.backends.ort.engine import session_options
path, provider, iters = sys.argv[1], sys.argv[2], int(sys.argv[3])
cpu = provider == "CPUExecutionProvider"
session = ort.InferenceSession(
    path, session_options(None),
    providers=[provider] if cpu else [provider, "CPUExecutionProvider"],
    provider_options=[{}] if cpu else [{"device_type": "CPU"}, {}],
)
if session.get_providers()[0] != provider:
    sys.exit(f"{provider} fell back to {session.get_providers()}")
x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
name = session.get_inputs()[0].name
for _ in range(20):
    session.run(None, {name: x})
times = []
for _ in range(iters):
    start = time.perf_counter()
    session.run(None, {name: x})
    times.append((time.perf_counter() - start) * 1000)
print(json.dumps({"p50": float(np.median(times)), "ort": ort.__version__}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="PYTHON:MODEL.onnx:PROVIDER; the first is the baseline")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    specs = [v.split(":") for v in args.variants]
    p50s: dict[int, list[float]] = {i: [] for i in range(len(specs))}
    versions: dict[int, str] = {}
    for _ in range(args.rounds):
        for i, (python, model, provider) in enumerate(specs):
            cmd = [python, "-c", _CHILD, model, provider, str(args.iterations)]
            out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            p50s[i].append(out["p50"])
            versions[i] = out["ort"]
    base = statistics.median(p50s[0])
    rows = []
    print(f"{'variant':70s} {'ort':8s} {'p50 ms (per round)':28s} ratio")
    for i, (python, model, provider) in enumerate(specs):
        med = statistics.median(p50s[i])
        rounds = ", ".join(f"{p:.2f}" for p in p50s[i])
        print(f"{model + ' @ ' + provider:70s} {versions[i]:8s} {rounds:28s} {med / base:.3f}")
        rows.append(
            {"python": python, "model": model, "provider": provider, "ort": versions[i], "p50_ms": p50s[i]}
            | {"median_ms": med, "ratio": med / base}
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    sys.exit(main())
