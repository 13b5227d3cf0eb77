r"""Brevitas W8 / W4 variants of YOLOv8n vs FP32 on coco128 (calibrate 0-63, evaluate 64-127).

Every variant is made by :class:`~yoloquant.quantize.brevitas.BrevitasQuantizer` from the Ultralytics
checkpoint, exported as QCDQ ONNX and evaluated through ONNX Runtime's CPU provider with yoloquant's
evaluator (pycocotools, ``yolo val`` settings). ``--device cuda`` runs calibration and rounding on a GPU.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/brevitas_coco.py --data ../shared/data/coco128 \
        --variants w8a16 w8a8 w4a16 w4a8

A variant is a precision preset, optionally with ``key=value`` changes of BrevitasConfig fields, and
``qat_<field>=value`` for a QAT fine-tune on the calibration images (QatConfig fields, device = --device):
``w4a16:rounding=gpfq,protect=head+first``, ``w4a8:qat_steps=300,qat_batch_size=16``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")

from _coco128 import coco128_split, score

from yoloquant.artifacts import CalibrationSet
from yoloquant.data.calibration import ImageCalibrator
from yoloquant.export import UltralyticsExporter
from yoloquant.quantize.brevitas import BrevitasConfig, BrevitasQuantizer, QatConfig
from yoloquant.quantize.brevitas.config import for_precision
from yoloquant.versions import package_versions

ROOT = Path(__file__).resolve().parents[1]


def parse_variant(spec: str, device: str) -> BrevitasQuantizer:
    """``w4a8:rounding=gpfq,qat_steps=300`` -> the preset with those fields changed, and QAT if asked."""
    precision, _, rest = spec.partition(":")
    changes: dict[str, Any] = {"calibration_device": device}
    qat: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, _, text = item.partition("=")
        value: Any = {"true": True, "false": False}.get(text, text)
        for kind in (int, float):
            try:
                value = kind(text)
                break
            except ValueError:
                continue
        if key.startswith("qat_"):
            qat[key.removeprefix("qat_")] = value
        else:
            changes[key] = value
    config = for_precision(BrevitasConfig, precision, changes)
    return BrevitasQuantizer(config, qat=QatConfig(device=device, **qat) if qat else None, progress=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "coco128")
    ap.add_argument("--weights", type=Path, default=ROOT / "assets" / "weights" / "yolov8n.pt")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "brevitas-coco")
    ap.add_argument("--variants", nargs="+", default=["w8a16", "w8a8", "w4a16", "w4a8"])
    ap.add_argument("--device", default="cpu", help="where calibration and rounding run: cpu or cuda")
    ap.add_argument("--verbose", action="store_true", help="log what the quantizer does (AdaRound errors per block)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    if args.verbose:
        logging.getLogger("yoloquant").setLevel(logging.INFO)
    args.out.mkdir(parents=True, exist_ok=True)

    fp32 = UltralyticsExporter().export(args.weights, args.out / "fp32")
    images, dataset = coco128_split(args.data)
    calib: CalibrationSet = ImageCalibrator(source=images, num_images=64, progress=False).calibrate(fp32.info)
    rows: dict[str, dict[str, Any]] = {"fp32": score(fp32, dataset)}
    print(f"fp32: mAP50-95 {rows['fp32']['map50_95']:.2f}", flush=True)
    for spec in args.variants:
        quantizer = parse_variant(spec, args.device)
        start = time.perf_counter()
        qdq = quantizer.quantize(fp32, calib, args.out / f"v{len(rows)}")
        rows[spec] = {"config": qdq.config, "seconds": time.perf_counter() - start, **score(qdq, dataset)}
        rows[spec]["delta"] = rows[spec]["map50_95"] - rows["fp32"]["map50_95"]
        print(
            f"{spec}: mAP50-95 {rows[spec]['map50_95']:.2f} ({rows[spec]['delta']:+.2f}) "
            f"quantize {rows[spec]['seconds']:.0f} s",
            flush=True,
        )
    print(f"\n{'variant':<48}{'mAP50-95':>9}{'delta':>7}{'mAP50':>7}{'quantize s':>11}")
    for name, row in rows.items():
        print(
            f"{name:<48}{row['map50_95']:>9.2f}{row.get('delta', 0.0):>+7.2f}{row['map50']:>7.2f}"
            f"{row.get('seconds', 0.0):>11.0f}"
        )
    report = {"data": str(args.data), "device": args.device, "versions": package_versions(), "rows": rows}
    (args.out / "results.json").write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
