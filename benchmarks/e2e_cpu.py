"""The issue-2 measurement: FP32 vs INT8 through the product's own pipeline, on coco128.

Calibrates on images 0-63 and evaluates on images 64-127 (sorted names) of coco128, benchmarks at
batch 1 with every variant timed interleaved, and writes the run's report.json / report.md.
Adds the INT8 model on ONNX Runtime's OpenVINO provider when that provider is installed
(run it from a venv with `onnxruntime-openvino`, see docs/quantizers.md).

    python benchmarks/e2e_cpu.py --data ../shared/data/coco128 --out runs/bench-e2e-cpu
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from yoloquant import QuantPipeline

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "coco128")
    parser.add_argument(
        "--model", type=Path, default=ROOT / "assets" / "weights" / "yolov8n.pt", help=".pt, or an exported .onnx"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-e2e-cpu")
    parser.add_argument(
        "--calibration-method", default=None, help="minmax, entropy or percentile (default: quantizer's)"
    )
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")

    import onnxruntime

    images = args.data / "images" / "train2017"
    pipe = (
        (
            QuantPipeline.from_onnx(args.model)
            if args.model.suffix == ".onnx"
            else QuantPipeline.from_ultralytics(args.model)
        )
        .calibrate(images, num_images=64)
        .quantize("int8", backend="ort-cpu", calibration_method=args.calibration_method)
        .evaluate(images, offset=64)
        .benchmark(batch_sizes=(1,), iterations=args.iterations)
    )
    if "OpenVINOExecutionProvider" in onnxruntime.get_available_providers():
        pipe = pipe.quantize("fp32", backend="openvino").quantize(
            "int8", backend="openvino", calibration_method=args.calibration_method
        )
    print(pipe.describe())
    result = pipe.run(args.out)
    print(result.table())


if __name__ == "__main__":
    main()
