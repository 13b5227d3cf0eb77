r"""INT8 on OpenVINO's own runtime: ORT static, ModelOpt and NNCF layouts vs FP32, under the accuracy protocol.

Calibrate on coco128 images 0-63 (sorted names), choose on coco128 64-127, report on all of coco-val-person;
every mAP50-95 delta is against FP32 on ONNX Runtime's CPU provider, with its paired 95% bootstrap interval
(1000 resamples over images, seed 0). Latency: batch 1, every engine interleaved round by round in this one
process (``benchmark_interleaved``, ONNX Runtime spinning off), as a ratio to FP32 on the CPU provider.
Reads ``../shared/data`` (coco128, coco-val-person, the YOLO26n weights) and says so when it is missing.
Resumes: finished evaluations are kept in ``<out>/<model>/results.json``.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/openvino_nncf.py --out runs/openvino-nncf

Variants (``--variants``): ``fp32`` (ORT CPU), ``fp32-ov``, ``ort`` (``quantize("int8", backend="openvino")``:
``OrtQuantConfig.openvino()``), ``modelopt`` (``quantizer="modelopt", backend="openvino"``), ``nncf``
(``quantizer="nncf"``), ``nncf-ir`` (reference only: Ultralytics' own recipe, NNCF on the OpenVINO IR converted
from the same ONNX, with the decode path and every Sigmoid ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MODELS = {
    "yolov8n": ROOT / "assets" / "weights" / "yolov8n.pt",
    "yolo26n": DATA / "weights" / "yolo26n_coco_from_int8ir" / "yolo26n.pt",
}
SETS = {"coco128-64-127": ("coco128/images/train2017", 64), "coco-val-person": ("coco-val-person/images", 0)}
RUNS_ON = {"fp32": "ort-cpu", "fp32-ov": "openvino", "ort": "openvino", "modelopt": "openvino"}
RUNS_ON |= {"nncf": "openvino", "nncf-ir": "openvino"}


def _check_data(models: list[str]) -> None:
    needed = [DATA / "coco128" / "images" / "train2017", DATA / "coco-val-person" / "images"]
    needed += [MODELS[m] for m in models]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        sys.exit(f"benchmarks/openvino_nncf.py reads ../shared/data; missing: {', '.join(missing)}")


def _nncf_ir(fp32: Any, calib: Any, out: Path) -> Any:
    """Ultralytics' recipe on the IR: ``nncf.quantize(ov_model, preset=MIXED)``, decode path and Sigmoids ignored."""
    import nncf
    import onnx
    import openvino as ov

    from yoloquant.artifacts import OnnxModel
    from yoloquant.quantize import graph

    ov_model = ov.convert_model(str(fp32.path))
    ops = ov_model.get_ordered_ops()
    names = {op.get_friendly_name() for op in ops}
    proto = onnx.load(str(fp32.path))
    decode = set(graph.find_head(proto).decode)
    # OpenVINO names an op after its ONNX node, or after the node's output tensor when that is a graph output
    wanted = decode | {o for n in proto.graph.node if n.name in decode for o in n.output}
    sigmoids = {op.get_friendly_name() for op in ops if op.get_type_name() == "Sigmoid"}
    ignored = nncf.IgnoredScope(names=sorted((wanted & names) | sigmoids), validate=False)
    dataset = nncf.Dataset([calib.images[i : i + 1].astype("float32") / 255.0 for i in range(len(calib))])
    quantized = nncf.quantize(
        ov_model, dataset, preset=nncf.QuantizationPreset.MIXED, subset_size=len(calib), ignored_scope=ignored
    )
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out / "model-int8.xml"))
    return OnnxModel(path=out / "model-int8.xml", info=fp32.info)


def _make(name: str, fp32: Any, calib: Any, out: Path) -> Any:
    from yoloquant.config import Backend, Precision
    from yoloquant.quantize import make_quantizer

    if name in ("fp32", "fp32-ov"):
        return fp32
    if name == "nncf-ir":
        return _nncf_ir(fp32, calib, out / name)
    quantizer = make_quantizer(Precision.INT8, Backend.OPENVINO, quantizer=None if name == "ort" else name)
    return quantizer.quantize(fp32, calib, out / name)


def _evaluate(model: Any, backend: str) -> dict[str, Any]:
    from yoloquant.backends import build_engine
    from yoloquant.config import Backend, EvalConfig
    from yoloquant.data.datasets import load_dataset
    from yoloquant.eval.coco import evaluate

    found: dict[str, Any] = {}
    with build_engine(model, Backend(backend)) as engine:
        for set_name, (folder, offset) in SETS.items():
            dataset = load_dataset(DATA / folder).select(None, offset=offset)
            found[set_name] = evaluate(engine, dataset, EvalConfig(resamples=1000, seed=0), progress=False)
    return found


def run_model(model_name: str, variants: list[str], out: Path, rounds: int) -> dict[str, Any]:
    from yoloquant._cpu import saturates_u8s8
    from yoloquant.backends import build_engine
    from yoloquant.bench.latency import benchmark_interleaved
    from yoloquant.config import Backend, BenchConfig
    from yoloquant.data.calibration import ImageCalibrator
    from yoloquant.eval.coco import delta
    from yoloquant.export import UltralyticsExporter
    from yoloquant.versions import package_versions

    out = out / model_name
    fp32 = UltralyticsExporter().export(MODELS[model_name], out / "fp32")
    calib = ImageCalibrator(source=DATA / "coco128" / "images" / "train2017", num_images=64, progress=False)
    data = calib.calibrate(fp32.info)
    models = {name: _make(name, fp32, data, out) for name in ["fp32", *[v for v in variants if v != "fp32"]]}
    evals = {name: _evaluate(m, RUNS_ON[name]) for name, m in models.items()}
    rows: dict[str, Any] = {}
    for name, per_set in evals.items():
        rows[name] = {"backend": RUNS_ON[name], "path": str(models[name].path)}
        for set_name, result in per_set.items():
            rows[name][set_name] = {
                "map50_95": result.map50_95 * 100,
                "map50": result.map50 * 100,
                "delta": delta(result, evals["fp32"][set_name]).format(".2f"),
                "delta_value": delta(result, evals["fp32"][set_name]).value,
                "images": result.num_images,
                "instances": result.num_instances,
            }
            if name == "nncf" and "modelopt" in evals:  # the two fast accurate layouts, paired against each other
                rows[name][set_name]["vs_modelopt"] = delta(result, evals["modelopt"][set_name]).format(".2f")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # noisy-latency warnings: the ratios are what is reported
        engines = {name: build_engine(m, Backend(RUNS_ON[name])) for name, m in models.items()}
        latency = benchmark_interleaved(engines, BenchConfig(iterations=rounds, warmup=10), progress=False)
        for engine in engines.values():
            engine.close()
    base = latency["fp32"][0].p50
    for name, (result,) in latency.items():
        rows[name] |= {"p50_ms": result.p50, "x_fp32": result.p50 / base, "iqr_over_median": result.iqr / result.p50}
        rows[name]["samples_ms"] = list(result.samples_ms)  # round by round: paired latency ratios can be redone
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    meta = {"versions": package_versions(), "u8s8_saturates_here (no VNNI)": saturates_u8s8()}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return rows


def table(model_name: str, rows: dict[str, Any]) -> str:
    lines = [
        f"{model_name}: delta = mAP50-95 points vs fp32 (ORT CPU) [paired 95% interval]; x fp32 = p50 latency ratio",
        "| variant | runs on | coco128 64-127 mAP50-95 | delta | coco-val-person mAP50-95 | delta | x fp32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        a, b = r["coco128-64-127"], r["coco-val-person"]
        lines.append(
            f"| {name} | {r['backend']} | {a['map50_95']:.2f} | {a['delta']} | {b['map50_95']:.2f} | {b['delta']} "
            f"| {r['x_fp32']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "openvino-nncf")
    parser.add_argument("--models", default="yolov8n,yolo26n")
    parser.add_argument("--variants", default="fp32,fp32-ov,ort,modelopt,nncf,nncf-ir")
    parser.add_argument("--rounds", type=int, default=100, help="interleaved latency rounds")
    args = parser.parse_args()
    models = args.models.split(",")
    _check_data(models)
    for model_name in models:
        saved = args.out / model_name / "results.json"
        if saved.exists():
            rows = json.loads(saved.read_text())
        else:
            rows = run_model(model_name, args.variants.split(","), args.out, args.rounds)
        print(table(model_name, rows), flush=True)


if __name__ == "__main__":
    main()
