"""INT8 for ONNX Runtime's OpenVINO EP: ModelOpt's layout rewritten to uint8 vs the other INT8 layouts.

Three steps, because ModelOpt (needs torch) and onnxruntime-openvino (same import name as onnxruntime)
live in different venvs. Calibration: coco128 images 0-63; evaluation: images 64-127 (sorted names),
yoloquant's evaluator (pycocotools, ``yolo val`` settings). mAP is also reported on the calibration
images, and as mean +- sd over the model with every activation scale jittered by x0.97..x1.03
("jitter"): on 64 images, models that close differ by up to ~1.5 mAP points, so a single delta below
~0.8 says little; the jitter mean estimates the layout's expected delta.

    # 1. export, quantize every variant, evaluate on ONNX Runtime's CPU EP (venv with ModelOpt)
    YOLO_OFFLINE=1 .venv/bin/python benchmarks/openvino_int8.py quantize --out runs/openvino-int8
    # 2. evaluate the same files on OpenVINO (now OpenVINO's own runtime, in the same venv; the numbers in the
    #    docs were measured on the EP in a venv with onnxruntime-openvino, which gives the same outputs)
    .venv/bin/python benchmarks/openvino_int8.py evaluate --out runs/openvino-int8
    # 3. latency, each variant in its own process, alternated, against FP32 on ORT's CPU EP (venv 1)
    .venv/bin/python benchmarks/openvino_int8.py latency --out runs/openvino-int8 --ov-python .venv-ov/bin/python

Each step merges its numbers into ``<out>/results.json`` and prints the table so far.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "1")

from yoloquant.artifacts import OnnxModel
from yoloquant.backends import PROVIDERS, build_engine
from yoloquant.config import Backend, EvalConfig
from yoloquant.data.datasets import load_dataset
from yoloquant.eval.coco import evaluate

ROOT = Path(__file__).resolve().parents[1]
# variant -> what runs it in the latency step: the float model on ORT 1.32's CPU EP is the baseline
RUNS_ON = {
    "fp32": Backend.ORT_CPU,
    "modelopt-tensorrt": Backend.ORT_CPU,  # ModelOpt's file as is: OpenVINO mis-executes it, the CPU EP is slow
    "modelopt-uint8-same-grid": Backend.OPENVINO,  # only the activation type changed: zero point 128
    "modelopt-openvino": Backend.OPENVINO,  # ModelOptConfig.openvino(): uint8 over the calibrated range
    "ort-openvino": Backend.OPENVINO,  # OrtQuantConfig.openvino()
    "ort-default": Backend.ORT_CPU,  # OrtQuantConfig(): the CPU EP's fused layout
}
JITTER = (0.97, 0.98, 0.99, 1.0, 1.01, 1.02, 1.03)


def quantize(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    import onnx

    from yoloquant.data.calibration import ImageCalibrator
    from yoloquant.export import UltralyticsExporter
    from yoloquant.quantize import unsigned
    from yoloquant.quantize.modelopt import ModelOptConfig, ModelOptQuantizer
    from yoloquant.quantize.ort_static import OrtQuantConfig, OrtStaticQuantizer

    fp32 = UltralyticsExporter().export(args.weights, args.out / "fp32")
    calib = ImageCalibrator(source=args.data / "images" / "train2017", num_images=64, progress=False)
    data = calib.calibrate(fp32.info)
    made = {
        "fp32": fp32,
        "modelopt-tensorrt": ModelOptQuantizer(ModelOptConfig.int8()).quantize(fp32, data, args.out / "mo-trt"),
        "modelopt-openvino": ModelOptQuantizer(ModelOptConfig.openvino()).quantize(fp32, data, args.out / "mo-ov"),
        "ort-openvino": OrtStaticQuantizer(OrtQuantConfig.openvino()).quantize(fp32, data, args.out / "ort-ov"),
        "ort-default": OrtStaticQuantizer(OrtQuantConfig()).quantize(fp32, data, args.out / "ort"),
    }
    paths = {name: model.path for name, model in made.items()}
    # ModelOpt's grid as is (min = -128 * scale), only the type uint8: isolates OpenVINO's signed-int8 problem
    same = onnx.load(str(paths["modelopt-tensorrt"]))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in same.graph.initializer}
    unsigned.to_uint8(
        same, {q.input[0]: -128.0 * float(inits[q.input[1]]) for q in unsigned.activation_quantizers(same)}
    )
    paths["modelopt-uint8-same-grid"] = args.out / "mo-same-grid" / "yolov8n-int8.onnx"
    paths["modelopt-uint8-same-grid"].parent.mkdir(exist_ok=True)
    onnx.save(same, str(paths["modelopt-uint8-same-grid"]))
    rows = {
        name: {"path": str(path), "mb": path.stat().st_size / 1e6, "quant_s": getattr(made.get(name), "seconds", 0.0)}
        for name, path in paths.items()
    }
    return measure(args, rows, Backend.ORT_CPU)


def measure(args: argparse.Namespace, rows: dict[str, dict[str, Any]], backend: Backend) -> dict[str, dict[str, Any]]:
    """mAP of every variant on ``backend``; jittered too for the variants that run there."""
    out = {name: row | score(args, Path(row["path"]), backend) for name, row in rows.items()}
    jitter = [name for name in out if RUNS_ON[name] is backend and name != "fp32"]
    return out | {name: out[name] | jittered(args, Path(out[name]["path"]), backend) for name in jitter}


def score(args: argparse.Namespace, path: Path, backend: Backend, *, tag: str = "") -> dict[str, float]:
    images = args.data / "images" / "train2017"
    splits = {"eval": load_dataset(images).select(None, offset=64), "calib": load_dataset(images).select(64)}
    out: dict[str, float] = {}
    with build_engine(OnnxModel.load(path), backend) as engine:  # openvino: OpenVINO's own runtime
        if engine.providers[0] != PROVIDERS[backend]:
            sys.exit(f"{path}: {PROVIDERS[backend]} fell back to {engine.providers}")
        for split, dataset in splits.items():
            out[f"map_{split}_{backend.value}"] = evaluate(engine, dataset, EvalConfig(), progress=False).map50_95 * 100
    print(f"{path}{tag} on {backend.value}: mAP50-95 {out[f'map_eval_{backend.value}']:.2f}", flush=True)
    return out


def jittered(args: argparse.Namespace, path: Path, backend: Backend) -> dict[str, list[float]]:
    """mAPs with every activation scale multiplied by each of JITTER (zero points kept)."""
    import onnx

    maps: dict[str, list[float]] = {f"jitter_eval_{backend.value}": [], f"jitter_calib_{backend.value}": []}
    for factor in JITTER:
        model = onnx.load(str(path))
        inits = {i.name: i for i in model.graph.initializer}
        scales = {q.input[1] for q in model.graph.node if q.op_type == "QuantizeLinear" and q.input[0] not in inits}
        for name in scales:
            value = onnx.numpy_helper.to_array(inits[name]) * np.float32(factor)
            inits[name].CopyFrom(onnx.numpy_helper.from_array(value.astype(np.float32), name))
        with tempfile.TemporaryDirectory() as tmp:
            onnx.save(model, f"{tmp}/jittered.onnx")
            got = score(args, Path(f"{tmp}/jittered.onnx"), backend, tag=f" x{factor}")
        for split in ("eval", "calib"):
            maps[f"jitter_{split}_{backend.value}"].append(got[f"map_{split}_{backend.value}"])
    return maps


def evaluate_openvino(args: argparse.Namespace, rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return measure(args, rows, Backend.OPENVINO)


def latency(args: argparse.Namespace, rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    pythons = {Backend.ORT_CPU: sys.executable, Backend.OPENVINO: args.ov_python}
    # the per-process timer runs ONNX Runtime sessions: OpenVINO through its execution provider in the EP venv
    providers = {Backend.ORT_CPU: "CPUExecutionProvider", Backend.OPENVINO: "OpenVINOExecutionProvider"}
    specs = [f"{pythons[b]}:{rows[n]['path']}:{providers[b]}" for n, b in RUNS_ON.items()]
    report = args.out / "latency.json"
    script = ROOT / "benchmarks" / "latency_per_process.py"
    cmd = [sys.executable, str(script), "--rounds", str(args.rounds), "--json", str(report), *specs]
    subprocess.run(cmd, check=True)
    timed = json.loads(report.read_text())
    load = os.getloadavg()[0]  # 1-minute load average after the runs: other jobs on the machine
    return {
        n: {"p50_ms": t["median_ms"], "x_fp32": t["ratio"], "load": load} for n, t in zip(RUNS_ON, timed, strict=True)
    }


def table(rows: dict[str, dict[str, Any]]) -> str:
    """Markdown: mAP50-95 on both EPs; deltas, jitter and latency on the EP each variant is timed on."""
    base = rows.get("fp32", {})
    lines = [
        "| variant | timed on | mAP CPU EP | mAP OV EP | delta | delta, calib images | jitter delta "
        "| jitter delta, calib images | x FP32 | MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        ep = RUNS_ON[name].value

        def cell(key: str, *, delta: bool = False, row: dict[str, Any] = row) -> str:
            value = row.get(key)
            if value is None:
                return ""
            ref = base.get(key.replace("jitter_", "map_"), 0.0) if delta else 0.0
            if isinstance(value, list):
                return f"{np.mean(value) - ref:+.2f} +- {np.std(value, ddof=1):.2f}"
            return f"{value - ref:+.2f}" if delta else f"{value:.2f}"

        lines.append(
            f"| {name} | {ep} | {cell('map_eval_onnxruntime')} | {cell('map_eval_openvino')} "
            f"| {cell(f'map_eval_{ep}', delta=True)} | {cell(f'map_calib_{ep}', delta=True)} "
            f"| {cell(f'jitter_eval_{ep}', delta=True)} | {cell(f'jitter_calib_{ep}', delta=True)} "
            f"| {cell('x_fp32')} | {cell('mb')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=("quantize", "evaluate", "latency"))
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "coco128")
    ap.add_argument("--weights", type=Path, default=ROOT / "assets" / "weights" / "yolov8n.pt")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "openvino-int8")
    ap.add_argument("--ov-python", default=".venv-ov/bin/python", help="interpreter with onnxruntime-openvino")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    results = args.out / "results.json"
    rows: dict[str, dict[str, Any]] = json.loads(results.read_text()) if results.is_file() else {}
    news = (
        quantize(args)
        if args.step == "quantize"
        else {"evaluate": evaluate_openvino, "latency": latency}[args.step](args, rows)
    )
    for name, values in news.items():
        rows[name] = rows.get(name, {}) | values
    results.write_text(json.dumps(rows, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
