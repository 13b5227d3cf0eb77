r"""CPU latency of saved ONNX models, interleaved round by round in one process, as ratios to the first.

For re-timing the models a ``task_quant.py`` run wrote (its variant folders) on a quieter machine, without
re-evaluating them: accuracy stays in that run's report, this adds only latency.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/task_latency.py \
        fp32=runs/seg-report/yolo26n-seg-fp32.onnx nncf-head=runs/seg-report/nncf-head/yolo26n-seg-int8.onnx:openvino \
        fp32-ov=runs/seg-report/yolo26n-seg-fp32.onnx:openvino --iterations 200 --save benchmarks/results/x.json

Each argument is ``name=path[:backend]`` (backend ``ort-cpu`` by default, or ``openvino``); batch 1, the input is
a real image (the bundled coco64's first) letterboxed to the model's size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from yoloquant.artifacts import OnnxModel
    from yoloquant.backends import build_engine
    from yoloquant.bench.latency import benchmark_interleaved, real_input
    from yoloquant.config import Backend, BenchConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="name=path[:backend]; the first is the ratios' reference")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--save", type=Path)
    args = parser.parse_args()
    specs = []
    for arg in args.models:
        name, _, rest = arg.partition("=")
        path, _, backend = rest.partition(":")
        if not name or not Path(path).is_file():
            sys.exit(f"{arg!r}: give name=path[:backend] with an existing .onnx")
        specs.append((name, OnnxModel.load(path), Backend(backend or "ort-cpu")))
    image = sorted((ROOT / "assets" / "coco64" / "images").glob("*.jpg"))[0]
    config = BenchConfig(iterations=args.iterations)
    with ExitStack() as stack:
        engines = {name: stack.enter_context(build_engine(model, backend)) for name, model, backend in specs}
        timed = benchmark_interleaved(engines, config, inputs=real_input(image, specs[0][1].info.imgsz[0]))
    medians = {name: results[0].p50 for name, results in timed.items()}
    ref = medians[specs[0][0]]
    rows = {name: {"p50_ms": round(ms, 3), "x_first": round(ms / ref, 3)} for name, ms in medians.items()}
    for name, row in rows.items():
        print(f"{name:>20}  {row['p50_ms']:8.2f} ms  {row['x_first']:.2f}x of {specs[0][0]}")
    if args.save:
        out = {
            "command": " ".join(["benchmarks/task_latency.py", *sys.argv[1:]]),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "latency": rows,
            "samples": {name: results[0].to_dict() for name, results in timed.items()},
        }
        args.save.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
