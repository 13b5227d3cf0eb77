"""Reproduce the ORT static INT8 measurements: FP32 vs INT8 candidates on coco128.

Calibrates on images 0-63 and evaluates on images 64-127 (sorted file names) of coco128,
mAP with Ultralytics' own ``val`` (an independent reference), latency interleaved round-robin in
one process with yoloquant's session options (no spinning), CPU execution provider, batch 1.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/ort_cpu_int8.py --data ../shared/data/coco128 \
        --out /tmp/yq-bench --json /tmp/yq-bench/results.json
    # then, with onnxruntime-openvino in its own venv, on the models the first run left in --out:
    .venv-ov/bin/python benchmarks/ort_cpu_int8.py --openvino --out /tmp/yq-bench --candidates default openvino
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "1")

from yoloquant.artifacts import CalibrationSet, OnnxModel
from yoloquant.backends.ort.engine import session_options
from yoloquant.quantize.ort_static import OrtQuantConfig, OrtStaticQuantizer

CANDIDATES: dict[str, OrtQuantConfig] = {
    "default": OrtQuantConfig(),  # entropy, head output convs INT8, decode float
    "minmax": OrtQuantConfig(calibration_method="minmax"),
    "percentile": OrtQuantConfig(calibration_method="percentile"),
    "entropy-headfloat": OrtQuantConfig(keep_float="head"),
    "minmax-headfloat": OrtQuantConfig(calibration_method="minmax", keep_float="head"),
    "conservative": OrtQuantConfig.conservative(),
    "openvino": OrtQuantConfig.openvino(),  # Q/DQ on Conv inputs, Add, Concat: for the OpenVINO EP
    "conv-only": OrtQuantConfig(calibration_method="minmax", qdq_op_types=("Conv",)),
}


def letterbox_images(files: list[Path], size: int = 640) -> np.ndarray:
    """Ultralytics val preprocessing: INTER_AREA long-side resize, centred 114 letterbox, RGB, CHW."""
    import cv2

    out = np.full((len(files), 3, size, size), 114, np.uint8)
    for i, f in enumerate(files):
        im = cv2.imread(str(f))
        h0, w0 = im.shape[:2]
        r = size / max(h0, w0)
        if r != 1:
            w, h = min(math.ceil(w0 * r), size), min(math.ceil(h0 * r), size)
            im = cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR if r > 1 else cv2.INTER_AREA)
        h, w = im.shape[:2]
        top, left = round((size - h) / 2 - 0.1), round((size - w) / 2 - 0.1)
        out[i, :, top : top + h, left : left + w] = im[..., ::-1].transpose(2, 0, 1)
    return out


def export(weights: Path, out: Path) -> OnnxModel:
    from ultralytics import YOLO

    pt = out / weights.name
    if not pt.exists():
        shutil.copy(weights, pt)
    onnx_path = pt.with_suffix(".onnx")
    if not onnx_path.exists():
        YOLO(str(pt)).export(format="onnx", imgsz=640, opset=17, simplify=True)
    return OnnxModel.load(onnx_path)


def make_val_set(files: list[Path], labels: Path, names: dict[int, str], out: Path) -> Path:
    import yaml

    root = out / "val"
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for f in files:
        for src, dst in ((f, root / "images" / f.name), (labels / f"{f.stem}.txt", root / "labels" / f"{f.stem}.txt")):
            if src.exists() and not dst.exists():
                dst.symlink_to(src.resolve())
    cfg = root / "data.yaml"
    cfg.write_text(yaml.safe_dump({"path": str(root), "train": "images", "val": "images", "names": names}))
    return cfg


def evaluate(onnx_path: Path, data_yaml: Path) -> tuple[float, float]:
    from ultralytics import YOLO

    m = YOLO(str(onnx_path), task="detect").val(
        data=str(data_yaml), imgsz=640, batch=1, conf=0.001, iou=0.7, plots=False, verbose=False
    )
    return float(m.box.map) * 100, float(m.box.map50) * 100


def _session(path: Path, openvino: bool) -> Any:
    import onnxruntime as ort

    if not openvino:
        return ort.InferenceSession(str(path), session_options(None), providers=["CPUExecutionProvider"])
    providers, options = ["OpenVINOExecutionProvider", "CPUExecutionProvider"], [{"device_type": "CPU"}, {}]
    sess = ort.InferenceSession(str(path), session_options(None), providers=providers, provider_options=options)
    if sess.get_providers()[0] != "OpenVINOExecutionProvider":  # ORT falls back silently on bad options
        msg = f"OpenVINO EP not active for {path}: {sess.get_providers()}"
        raise RuntimeError(msg)
    return sess


def time_interleaved(
    paths: dict[str, Path], image: np.ndarray, rounds: int, warmup: int = 5, openvino: frozenset[str] = frozenset()
) -> dict[str, list[float]]:
    sessions = {k: _session(p, k in openvino) for k, p in paths.items()}
    name = next(iter(sessions.values())).get_inputs()[0].name
    for s in sessions.values():
        for _ in range(warmup):
            s.run(None, {name: image})
    samples: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {name: image})
            samples[k].append((time.perf_counter() - t0) * 1000)
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/coco128"))
    ap.add_argument("--weights", type=Path, default=Path("../shared/data/weights/yolov8n_coco_from_int8ir/yolov8n.pt"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/yq-bench"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--candidates", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument(
        "--openvino",
        action="store_true",
        help="in a venv with onnxruntime-openvino: time the models "
        "a previous run left in --out, FP32 on the CPU EP vs FP32 and INT8 on the OpenVINO EP",
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.openvino:
        time_openvino(args)
        return

    files = sorted((args.data / "images" / "train2017").glob("*.jpg"))
    calib_files, val_files = files[:64], files[64:128]
    fp32 = export(args.weights, args.out)
    data_yaml = make_val_set(val_files, args.data / "labels" / "train2017", fp32.info.names, args.out)
    calib = CalibrationSet(images=letterbox_images(calib_files), files=tuple(calib_files), digest="coco128[0:64]")

    rows: dict[str, dict[str, Any]] = {"fp32": {"path": fp32.path, "seconds": 0.0}}
    for name in args.candidates:
        qdq = OrtStaticQuantizer(CANDIDATES[name]).quantize(fp32, calib, args.out / name)
        nq = sum(len(v) for v in qdq.quantized_nodes.values())
        nf = sum(len(v) for v in qdq.float_nodes.values())
        rows[name] = {"path": qdq.path, "seconds": qdq.seconds, "config": qdq.config, "quantized": nq, "float": nf}
    for row in rows.values():
        row["map"], row["map50"] = evaluate(row["path"], data_yaml)

    image = calib.batches(1)[0]
    samples = time_interleaved({k: r["path"] for k, r in rows.items()}, image, args.rounds)
    base = statistics.median(samples["fp32"])
    print(f"\n{'variant':<18}{'mAP50-95':>9}{'delta':>7}{'mAP50':>7}{'p50 ms':>8}{'x FP32':>8}{'quant s':>9}")
    for k, r in rows.items():
        r["p50_ms"] = statistics.median(samples[k])
        r["ratio"] = r["p50_ms"] / base
        r["delta"] = r["map"] - rows["fp32"]["map"]
        r["path"] = str(r["path"])
        print(
            f"{k:<18}{r['map']:9.2f}{r['delta']:+7.2f}{r['map50']:7.2f}{r['p50_ms']:8.1f}{r['ratio']:8.2f}{r['seconds']:9.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "samples_ms": samples}, indent=1, default=str))


def time_openvino(args: argparse.Namespace) -> None:
    files = sorted((args.data / "images" / "train2017").glob("*.jpg"))
    image = letterbox_images(files[:1]).astype(np.float32) / 255.0
    fp32 = args.out / f"{args.weights.stem}.onnx"
    paths = {"fp32 cpu-ep": fp32, "fp32 openvino-ep": fp32}
    paths |= {f"{name} openvino-ep": args.out / name / f"{args.weights.stem}-int8.onnx" for name in args.candidates}
    paths = {k: p for k, p in paths.items() if p.exists()}
    samples = time_interleaved(paths, image, args.rounds, openvino=frozenset(k for k in paths if "openvino" in k))
    base = statistics.median(samples["fp32 cpu-ep"])
    for k, v in samples.items():
        print(f"{k:<28}{statistics.median(v):8.1f} ms{statistics.median(v) / base:8.2f} x FP32 CPU EP")
    if args.json:
        args.json.write_text(json.dumps({"samples_ms": samples}, indent=1))


if __name__ == "__main__":
    main()
