"""The accuracy protocol (docs/protocol.md): calibrate on coco128 0-63, choose on coco128 64-127, report on
coco-val-person, every delta with its paired 95% bootstrap interval.

Each variant is quantized once from the model's FP32 ONNX and evaluated on both sets through ONNX Runtime's
CPU provider (or the backend named after a ``@``); results append to a JSON-lines file so a killed run
resumes. Reads ../shared/data; says so and stops when it is missing.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/protocol.py --model assets/weights/yolov8n.pt \\
        --variants ort,ort-rr --out runs/protocol-v8
    variants: ort (the default quantize("int8")), ort-rr (reduce_range), ort-minmax, ort-pct, ort-cons,
    mo-int8 / mo-int8-none (ModelOpt keep_float="head" / "nothing"), mo-fp8, w8a8, w4a16, nncf, ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SETS = {"coco128-64-127": ("coco128/images/train2017", 64), "coco-val-person": ("coco-val-person/images", 0)}


def _quantizers() -> dict[str, Callable[[], Any]]:
    from yoloquant.config import Backend, Precision
    from yoloquant.quantize import make_quantizer
    from yoloquant.quantize.float_scope import FloatScope
    from yoloquant.quantize.ort_static import OrtQuantConfig, OrtStaticQuantizer

    def ort(**changes: Any) -> Callable[[], Any]:
        return lambda: OrtStaticQuantizer(OrtQuantConfig(**changes))

    def made(precision: str, backend: str = "ort-cpu", **kw: Any) -> Callable[[], Any]:
        return lambda: make_quantizer(Precision(precision), Backend(backend), **kw)

    return {
        "ort": made("int8"),
        "ort-rr": ort(reduce_range=True),
        "ort-full": ort(reduce_range=False),
        "ort-minmax": ort(calibration_method="minmax"),
        "ort-pct": ort(calibration_method="percentile"),
        "ort-rr-pct": ort(reduce_range=True, calibration_method="percentile"),
        "ort-rr-minmax": ort(reduce_range=True, calibration_method="minmax"),
        "ort-cons": ort(keep_float="head+first"),
        "ort-rr-cons": ort(reduce_range=True, keep_float="head+first"),
        "ort-rr-first": ort(reduce_range=True, keep_float=FloatScope(first_conv=True)),
        "ort-rr-sym": ort(reduce_range=True, symmetric_activations=True),
        "ort-u8u8": ort(weight_type="uint8"),
        "ort-u8u8-pct": ort(weight_type="uint8", calibration_method="percentile"),
        "ort-first": ort(keep_float=FloatScope(first_conv=True)),
        "mo-int8": made("int8", quantizer="modelopt", keep_float="head"),
        "mo-int8-none": made("int8", quantizer="modelopt", keep_float="nothing"),
        "mo-fp8": made("fp8", keep_float="head"),
        "mo-fp8-none": made("fp8", keep_float="nothing"),
        "w8a8": made("w8a8"),
        "w4a16": made("w4a16"),
        "nncf": made("int8", "openvino", quantizer="nncf"),
    }


def _evaluate(model: Any, backend: str, set_name: str, root: Path, threads: int | None) -> Any:
    from yoloquant.backends import build_engine
    from yoloquant.config import Backend, EvalConfig
    from yoloquant.data.datasets import load_dataset
    from yoloquant.eval.coco import evaluate

    folder, offset = SETS[set_name]
    data = load_dataset(root / folder).select(None, offset=offset)
    with build_engine(model, Backend(backend), threads=threads) as engine:
        return evaluate(engine, data, EvalConfig(), progress=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--variants", default="ort")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (default ../shared/data)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads per evaluation")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"skipped: {args.data} is missing (the shared data folder beside the repo)")
        return 0
    from yoloquant._cpu import saturates_u8s8
    from yoloquant.data.calibration import ImageCalibrator
    from yoloquant.eval.coco import delta
    from yoloquant.export import exporter_for

    args.out.mkdir(parents=True, exist_ok=True)
    ledger = args.out / "protocol.jsonl"
    done = (
        {(r["variant"], r["set"]) for r in map(json.loads, ledger.read_text().splitlines())}
        if ledger.exists()
        else set()
    )
    fp32 = exporter_for(args.model).export(args.model, args.out)
    calib = None
    sets = args.sets.split(",")
    base = {s: _evaluate(fp32, "ort-cpu", s, args.data, args.threads) for s in sets}
    for name in args.variants.split(","):
        key, _, backend = name.partition("@")
        if all((name, s) in done for s in sets):
            continue
        if calib is None:
            calib = ImageCalibrator(
                source=args.data / SETS["coco128-64-127"][0], num_images=64, progress=False
            ).calibrate(fp32.info)
        start = time.perf_counter()
        model = _quantizers()[key]().quantize(fp32, calib, args.out / key)
        seconds = time.perf_counter() - start
        for s in sets:
            r = _evaluate(model, backend or _backend(key), s, args.data, args.threads)
            row = {
                "variant": name,
                "set": s,
                "model": str(args.model),
                "fp32": base[s].metrics["map50_95"].to_dict(),
                "map50_95": r.metrics["map50_95"].to_dict(),
                "delta_map50_95": delta(r, base[s]).to_dict(),
                "delta_map50": delta(r, base[s], "map50").to_dict(),
                "images": r.num_images,
                "cpu": "AVX2, no VNNI" if saturates_u8s8() else "VNNI",
                "quantize_s": round(seconds, 1),
            }
            with ledger.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{args.model.stem} {name:14s} {s:16s} delta {delta(r, base[s]).format('+.2f')}", flush=True)
    return 0


def _backend(key: str) -> str:
    return "openvino" if key == "nncf" else "ort-cpu"


if __name__ == "__main__":
    sys.exit(main())
