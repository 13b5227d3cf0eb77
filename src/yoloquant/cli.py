"""The ``yoloquant`` command line: ``run`` a pipeline, ``show`` a report."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from yoloquant.config import Backend, CalibMethod, Precision, parse_enum
from yoloquant.errors import ConfigError, YoloQuantError
from yoloquant.pipeline import QuantPipeline
from yoloquant.report.result import PipelineResult

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yoloquant", description="Quantize Ultralytics YOLO models and measure them")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="export, quantize, evaluate and benchmark; writes report.json / report.md")
    run.add_argument("--model", required=True, help="Ultralytics .pt checkpoint or exported .onnx")
    run.add_argument("--calib", help="calibration images: folder, dataset yaml or COCO json")
    run.add_argument("--eval", help="evaluation set: images folder with sibling labels/, dataset yaml or COCO json")
    run.add_argument("--precisions", default="fp32,int8", help="comma list of fp32,int8,fp8 (fp32 always runs)")
    run.add_argument(
        "--backend",
        default="onnxruntime",
        help="comma list of onnxruntime (CPU provider), openvino (OpenVINO provider)",
    )
    run.add_argument("--out", required=True, help="output folder for models and reports")
    run.add_argument("--calib-images", type=int, default=64, help="number of calibration images (default 64)")
    run.add_argument("--calib-offset", type=int, default=0, help="index of the first calibration image (sorted)")
    run.add_argument("--calibration", help="calibration method: minmax, entropy or percentile")
    run.add_argument("--quantizer", help="ort (ONNX Runtime INT8, fast on CPU) or modelopt (TensorRT layout, INT8/FP8)")
    run.add_argument("--keep", help="YOLO precision preset kept float: none, head, head+first")
    run.add_argument(
        "--max-map-drop", type=float, help="accuracy budget in mAP50-95 points for ORT INT8 (needs --eval)"
    )
    run.add_argument("--budget-granularity", default="block", help="groups the budget keeps float: block or conv")
    run.add_argument("--eval-images", type=int, help="number of evaluation images (default: all)")
    run.add_argument("--eval-offset", type=int, default=0, help="index of the first evaluation image (sorted)")
    run.add_argument("--split", default="val", help="split of a dataset yaml to evaluate on (default val)")
    run.add_argument("--imgsz", type=int, default=640, help="input size (default 640)")
    run.add_argument("--batch-sizes", default="1", help="comma list of benchmark batch sizes (default 1)")
    run.add_argument("--iterations", type=int, default=100, help="timed rounds per batch size (default 100)")
    run.add_argument("--no-bench", action="store_true", help="skip the latency benchmark")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    show = sub.add_parser("show", help="print the table of a finished run")
    show.add_argument("report", help="report.json or the run folder")
    return parser


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        msg = f"{option} takes comma-separated integers, got {text!r}"
        raise ConfigError(msg) from None


def build_pipeline(args: argparse.Namespace) -> QuantPipeline:
    """The QuantPipeline that ``yoloquant run`` arguments describe."""
    precisions = [parse_enum(Precision, p.strip(), option="precision") for p in args.precisions.split(",") if p]
    backends = [parse_enum(Backend, b.strip(), option="backend") for b in args.backend.split(",") if b.strip()]
    calibration = parse_enum(CalibMethod, args.calibration, option="calibration") if args.calibration else None
    pipe = QuantPipeline.from_ultralytics(args.model, imgsz=args.imgsz)
    if args.model.endswith(".onnx"):
        pipe = QuantPipeline.from_onnx(args.model)
    if args.calib:
        pipe = pipe.calibrate(args.calib, num_images=args.calib_images, offset=args.calib_offset)
    for backend in backends:
        for precision in precisions:
            if precision is Precision.FP32 and backend is Backend.ONNXRUNTIME:
                continue  # the baseline
            if precision is Precision.FP32:
                pipe = pipe.quantize(precision, backend=backend)
                continue
            pipe = pipe.quantize(
                precision,
                backend=backend,
                quantizer=args.quantizer,
                calibration=calibration,
                keep=args.keep,
                max_map_drop=args.max_map_drop,
                granularity=args.budget_granularity,
            )
    if args.eval:
        pipe = pipe.evaluate(args.eval, split=args.split, num_images=args.eval_images, offset=args.eval_offset)
    if not args.no_bench:
        pipe = pipe.benchmark(batch_sizes=_ints(args.batch_sizes, "--batch-sizes"), iterations=args.iterations)
    return pipe.with_progress(not args.quiet)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``yoloquant`` command. Returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "show":
            print(PipelineResult.load(args.report).table())
            return 0
        pipe = build_pipeline(args)
        print(pipe.describe(), flush=True)
        result = pipe.run(args.out)
    except YoloQuantError as exc:
        print(f"yoloquant: error: {exc}", file=sys.stderr)
        return 2
    print(result.table())
    print(f"\nreport: {args.out}/report.json, {args.out}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
