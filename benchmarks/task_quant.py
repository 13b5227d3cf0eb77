r"""Segmentation and pose through the quantizers: every precision's box, mask / pose mAP deltas and CPU latency.

The accuracy protocol for the seg / pose targets of issue #20: calibrate on coco128 images 0-63 (sorted names),
choose on coco128 images 64-127 (its official json has the segmentations; pose has no keypoints there, so pose
choices are made on the 50 coco-val-pose images with official keypoints and reported on the other 170),
report on the task's own set. Every delta is against FP32 on ONNX Runtime's CPU provider, in points, with its
paired 95% bootstrap interval (1000 resamples over images, seed 0). Latency: batch 1, every engine interleaved
round by round in this one process, as a ratio to FP32 (``QuantPipeline.benchmark``).
Reads ``../shared/data`` (coco128, coco-val-seg / coco-val-pose, the YOLO26n-seg / YOLOv8n-pose weights).

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/task_quant.py --model yolo26n-seg --on report --out runs/seg-report

``--variants`` picks among: ``fp16`` (FP16 converter), ``fp8`` (``ModelOptConfig.fp8()``), ``mo-int8``
(``ModelOptConfig.int8()``), ``ort-int8`` (``quantize("int8")``: ONNX Runtime static INT8, the CPU layout),
``nncf`` (NNCF INT8 on OpenVINO), ``fp32-ov`` (FP32 on OpenVINO: its latency baseline). ``--keep-float``
overrides every variant's scope: comma list of preset names, or ``head+proto`` / ``head+first+proto`` for the
prototype branch; several give one variant each, named ``<variant>-<keep>``. ``nncf:head`` gives one variant its
own scope (named ``nncf-head``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MODELS = {
    "yolo26n-seg": DATA / "weights" / "yolo26n-seg_coco_from_int8ir" / "yolo26n-seg.pt",
    "yolov8n-pose": DATA / "weights" / "yolov8n-pose_coco_from_int8ir" / "yolov8n-pose.pt",
}
CALIB = DATA / "coco128" / "images" / "train2017"
# (source, offset, count) of the images each model is chosen on ("tune") and reported on ("report")
SETS: dict[str, dict[str, tuple[Path, int, int | None]]] = {
    "yolo26n-seg": {
        "tune": (DATA / "coco128" / "annotations" / "instances_train2017_first128.json", 64, 64),
        "report": (DATA / "coco-val-seg" / "instances_val.json", 0, None),
    },
    "yolov8n-pose": {
        "tune": (DATA / "coco-val-pose" / "person_keypoints_val.json", 0, None),
        "report": (DATA / "coco-val-pose" / "data.yaml", 0, None),
    },
}
VARIANTS = ("fp16", "fp8", "mo-int8", "ort-int8", "nncf", "fp32-ov")


def _scope(name: str | None) -> Any:
    from yoloquant.quantize.float_scope import FloatScope

    if name is None:
        return None
    extra = {"head+proto": FloatScope(head_convs=True, proto_branch=True)}
    extra["head+first+proto"] = FloatScope(head_convs=True, first_conv=True, proto_branch=True)
    extra["head-proto"] = FloatScope(head_convs=True)  # head convs, the prototype branch quantized
    # the other prototype scopes tried on the tuning images, by Ultralytics' names (docs/tasks.md)
    proto = "^/model\\.23/proto/"
    extra["head+preup"] = FloatScope(head_convs=True).with_nodes(proto + "(feat_refine|feat_fuse|Resize|Add|cv1/)")
    extra["head+allbutcv2"] = FloatScope(head_convs=True).with_nodes(
        proto + "(feat_refine|feat_fuse|Resize|Add|cv1/|upsample)"
    )
    extra["head+cv2"] = FloatScope(head_convs=True).with_nodes(proto + "cv2/")
    extra["head+first+attn"] = FloatScope.head_and_first().with_nodes("^/model\\.10/")  # YOLO26's C2PSA block
    return extra.get(name, name)


def _add(plan: Any, variant: str, name: str, kf: dict[str, Any]) -> Any:
    from yoloquant.quantize.modelopt import ModelOptConfig

    if variant == "fp8":
        return plan.quantize(ModelOptConfig.fp8(**kf), name=name)
    if variant == "mo-int8":
        return plan.quantize(ModelOptConfig.int8(**kf), name=name)
    if variant == "nncf":
        return plan.quantize("int8", quantizer="nncf", backend="openvino", name=name, **kf)
    if variant == "fp32-ov":
        return plan.quantize("fp32", backend="openvino", name=name)
    return plan.quantize("fp16" if variant == "fp16" else "int8", name=name, **kf)


def _pose_report_yaml(out: Path) -> Path:
    """coco-val-pose without the 50 images pose choices were made on (its official-json images)."""
    root = DATA / "coco-val-pose"
    tuned = {i["file_name"] for i in json.loads((root / "person_keypoints_val.json").read_text())["images"]}
    rest = [str(f) for f in sorted((root / "images").glob("*.jpg")) if f.name not in tuned]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report-images.txt").write_text("\n".join(rest) + "\n")
    yaml = out / "pose-report.yaml"
    yaml.write_text(f"path: {out}\nval: report-images.txt\nkpt_shape: [17, 3]\nnames:\n  0: person\n")
    return yaml


def _plan(model: str, on: str, variants: list[str], keeps: list[str | None], *, iterations: int, out: Path) -> Any:
    from yoloquant import QuantPipeline

    source, offset, count = SETS[model][on]
    source = _pose_report_yaml(out.parent / f"{out.name}-data") if source.suffix == ".yaml" else source
    plan = QuantPipeline.from_ultralytics(MODELS[model]).calibrate(CALIB, num_images=64)
    for keep in keeps:
        scope = _scope(keep)
        kf: dict[str, Any] = {"keep_float": scope} if scope is not None else {}
        for spec in variants:
            v, _, own = spec.partition(":")  # ``nncf:head``: this variant's own scope
            if v == "fp32-ov":
                plan = _add(plan, v, v, {}) if keep == keeps[0] else plan
            elif own:
                plan = _add(plan, v, spec.replace(":", "-"), {"keep_float": _scope(own)}) if keep == keeps[0] else plan
            else:
                plan = _add(plan, v, f"{v}-{keep}" if len(keeps) > 1 else v, kf)
    plan = plan.evaluate(source, num_images=count, offset=offset)
    return plan.benchmark(batch_sizes=(1,), iterations=iterations) if iterations else plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), required=True)
    parser.add_argument("--on", choices=("tune", "report"), default="report", help="which images (see above)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument(
        "--keep-float", help="comma list of FloatScope presets, each applied to every variant (default: their own)"
    )
    parser.add_argument("--iterations", type=int, default=50, help="latency rounds (0: no latency)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--save", type=Path, help="also write the summary JSON here (benchmarks/results/...)")
    args = parser.parse_args()
    missing = [str(p) for p in (MODELS[args.model], CALIB, SETS[args.model][args.on][0]) if not p.exists()]
    if missing:
        sys.exit(f"benchmarks/task_quant.py reads ../shared/data; missing: {', '.join(missing)}")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted({v.partition(":")[0] for v in variants} - set(VARIANTS))
    if unknown:
        sys.exit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    keeps: list[str | None] = [k.strip() for k in args.keep_float.split(",")] if args.keep_float else [None]
    result = _plan(args.model, args.on, variants, keeps, iterations=args.iterations, out=args.out).run(args.out)
    print(result.table())
    if args.save:
        summary = {
            "command": " ".join(["benchmarks/task_quant.py", *sys.argv[1:]]),
            "model": args.model,
            "images": {"set": args.on, "source": str(SETS[args.model][args.on][0].relative_to(DATA.parent))},
            "keep_float": args.keep_float,
            "report": json.loads((args.out / "report.json").read_text()),
        }
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
