r"""ModelOpt INT8 / FP8 (TensorRT Q/DQ layout) vs FP32 on coco128, evaluated through ONNX Runtime CPU.

Calibrates on images 0-63 and evaluates on images 64-127 (sorted file names) of coco128 with
yoloquant's evaluator (pycocotools, ``yolo val`` settings). Every variant: calibration method x keep
preset x mode. ``calibrate+quant s`` is letterboxing the 64 calibration images (uncached) plus the
quantizer's wall time. ONNX Runtime CPU is not the target of this layout (TensorRT is, and it is not
installable here), so the latency ratio only says how these models run on ORT CPU: pass ``--latency``
on a quiet machine for it.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/modelopt_cpu.py --data ../shared/data/coco128 --latency \
        --exclude '^/model\.(7|18)/'

``--exclude`` adds one variant per mode (defaults + those node regexes float): the two blocks found
most sensitive in FP8 by keeping one block at a time float (docs/modelopt.md). ``--jitter`` adds the
mean +- sd of each variant's delta over its activation scales x0.97..x1.03, on the evaluation and the
calibration images (``benchmarks/openvino_int8.py`` explains why a single 64-image delta is noisy):

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/modelopt_cpu.py --modes fp8 --keep head+first \
        --exclude '^/model\.(2|4|18)/' --jitter
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "1")

from _coco128 import coco128_split, score

from yoloquant.artifacts import CalibrationSet, OnnxModel
from yoloquant.backends.ort.engine import OrtEngineBuilder
from yoloquant.bench import benchmark_interleaved
from yoloquant.config import Backend, BenchConfig
from yoloquant.data.calibration import ImageCalibrator
from yoloquant.data.datasets import Dataset
from yoloquant.export import UltralyticsExporter
from yoloquant.quantize.float_scope import FloatScope
from yoloquant.quantize.modelopt import ModelOptConfig, ModelOptQuantizer
from yoloquant.versions import package_versions

ROOT = Path(__file__).resolve().parents[1]
MODES = ("int8", "fp8")
KEEPS = ("nothing", "head", "head+first")
CALIBRATIONS = ("minmax", "entropy")


def calibrate(images: Path, model: OnnxModel) -> tuple[CalibrationSet, float]:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:  # no cache hit: count the letterboxing too
        calib = ImageCalibrator(source=images, num_images=64, cache_dir=Path(cache), progress=False)
        data = calib.calibrate(model.info)
    return data, time.perf_counter() - start


def latency(models: dict[str, OnnxModel], dataset: Dataset) -> dict[str, float]:
    from yoloquant.data.images import read_image
    from yoloquant.data.letterbox import preprocess

    builder = OrtEngineBuilder()
    engines = {name: builder.build(m) for name, m in models.items()}
    image = (preprocess(read_image(dataset.images[0]), 640)[0][None] / 255.0).astype(np.float32)
    try:
        results = benchmark_interleaved(engines, BenchConfig(iterations=50), inputs=image, progress=False)
    finally:
        for e in engines.values():
            e.close()
    return {name: r[0].p50 for name, r in results.items()}


def add_jitter(args: argparse.Namespace, models: dict[str, OnnxModel], rows: dict[str, dict[str, Any]]) -> None:
    """Each quantized variant's delta, mean and sd over jittered activation scales, both image sets."""
    from openvino_int8 import jittered, score  # the same folder: one jitter procedure for both benchmarks

    base = score(args, models["fp32"].path, Backend.ORT_CPU)
    for name, model in models.items():
        got = jittered(args, model.path, Backend.ORT_CPU) if name != "fp32" else {}
        for split in ("eval", "calib") if got else ():
            deltas = np.array(got[f"jitter_{split}_onnxruntime"]) - base[f"map_{split}_onnxruntime"]
            rows[name][f"jitter_{split}"] = [float(deltas.mean()), float(deltas.std(ddof=1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "coco128")
    ap.add_argument("--weights", type=Path, default=ROOT / "assets" / "weights" / "yolov8n.pt")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "modelopt-cpu")
    ap.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    ap.add_argument("--keep-float", nargs="*", default=list(KEEPS), choices=KEEPS)
    ap.add_argument("--calibration-method", nargs="*", default=list(CALIBRATIONS), choices=CALIBRATIONS)
    ap.add_argument("--exclude", nargs="*", default=[], help="node regexes: one more variant per mode, kept float")
    ap.add_argument("--latency", action="store_true", help="time every variant against FP32 on ORT CPU")
    ap.add_argument("--jitter", action="store_true", help="mean +- sd delta over activation scales x0.97..x1.03")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)

    fp32 = UltralyticsExporter().export(args.weights, args.out / "fp32")
    images, dataset = coco128_split(args.data)
    calib, calib_s = calibrate(images, fp32)

    rows: dict[str, dict[str, Any]] = {"fp32": {"seconds": 0.0, **score(fp32, dataset)}}
    models: dict[str, OnnxModel] = {"fp32": fp32}
    print(f"fp32: mAP50-95 {rows['fp32']['map50_95']:.2f}", flush=True)
    configs = {
        f"{mode}-{keep}-{method}": ModelOptConfig(mode=mode, keep_float=keep, calibration_method=method)
        for mode in args.modes
        for keep in args.keep_float
        for method in args.calibration_method
        if not (mode == "fp8" and method == "entropy")  # ModelOpt derives fp8 scales from max-calibrated ones
    }
    if args.exclude:
        configs.update(
            {
                f"{m}-head+first+exclude": ModelOptConfig(
                    mode=m, keep_float=FloatScope.head_and_first().with_nodes(*args.exclude)
                )
                for m in args.modes
            }
        )
    for name, cfg in configs.items():
        qdq = ModelOptQuantizer(cfg).quantize(fp32, calib, args.out / name)
        rows[name] = {
            "config": qdq.config,
            "seconds": calib_s + qdq.seconds,
            "quantized": sum(len(v) for v in qdq.quantized_nodes.values()),
            "float": sum(len(v) for v in qdq.float_nodes.values()),
            **score(qdq, dataset),
        }
        models[name] = qdq
        print(f"{name}: mAP50-95 {rows[name]['map50_95']:.2f} ({rows[name]['seconds']:.1f} s)", flush=True)
    if args.latency:
        p50 = latency(models, dataset)
        for name, row in rows.items():
            row["p50_ms"], row["x_fp32"] = p50[name], p50[name] / p50["fp32"]

    if args.jitter:
        add_jitter(args, models, rows)

    base = rows["fp32"]["map50_95"]
    print(
        f"\n{'variant':<30}{'mAP50-95':>9}{'delta':>7}{'mAP50':>7}{'calib+quant s':>14}{'x FP32 (ORT CPU)':>18}"
        f"{'jitter delta':>16}{'jitter calib':>16}"
    )
    for name, row in rows.items():
        row["delta"] = row["map50_95"] - base
        ratio = f"{row['x_fp32']:.2f}" if "x_fp32" in row else "-"
        jitter = [f"{row[k][0]:+.2f} +- {row[k][1]:.2f}" for k in ("jitter_eval", "jitter_calib") if k in row]
        print(
            f"{name:<30}{row['map50_95']:>9.2f}{row['delta']:>+7.2f}{row['map50']:>7.2f}"
            f"{row['seconds']:>14.1f}{ratio:>18}" + "".join(f"{j:>16}" for j in jitter)
        )
    out = args.out / "results.json"
    out.write_text(
        json.dumps(
            {"data": str(args.data), "weights": str(args.weights), "versions": package_versions(), "rows": rows},
            indent=2,
        )
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
