"""The same 12-variant YOLOv8n sweep on the local executor and on a local Ray instance: wall time, Ray's
overhead, and whether the two give the same ledger, models and Pareto front (#17's "done means").

Exports the ``.pt`` once, calibrates on coco128 images 0..N-1 and evaluates on images 64-127 (same seeds in
both runs). The grid is
calibration method (minmax, entropy, percentile) x calibration images (32, 64) x keep_float (decode, head).
Each run has its own out dir and times its own variants (interleaved, in the driver); the Ray run starts its
own Ray instance of ``--ray-cpus`` CPUs (its start-up counts in its wall time). The local run goes first.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/ray_sweep.py --out runs/ray-bench \
        --json benchmarks/results/ray_sweep-2cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")

from yoloquant import QuantPipeline
from yoloquant.artifacts import file_sha256
from yoloquant.config import BenchConfig
from yoloquant.decide.executor import Executor, LocalExecutor
from yoloquant.decide.ledger import Ledger
from yoloquant.decide.ray_executor import RayExecutor
from yoloquant.decide.sweep import Sweep
from yoloquant.decide.sweep_latency import this_node
from yoloquant.export import UltralyticsExporter
from yoloquant.versions import package_versions

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = ("seconds", "finished")


def _untimed(value: Any) -> Any:
    """A ledger entry without times taken and clock readings."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not k.endswith(VOLATILE)}
    return [_untimed(v) for v in value] if isinstance(value, list) else value


def _comparable(out: Path) -> dict[str, Any]:
    entries = Ledger(out / "ledger.jsonl").entries()
    return {n: json.loads(json.dumps(_untimed(e)).replace(str(out), "<out>")) for n, e in entries.items()}


def _run(sweep: Sweep, out: Path, bench: BenchConfig) -> tuple[dict[str, Any], Any]:
    start = time.perf_counter()
    sweep.run_variants(out)
    variants_s = time.perf_counter() - start
    result = sweep.run(out, bench=bench, recommend_max_drop=0.5)
    wall = time.perf_counter() - start
    lines = Ledger(out / "ledger.jsonl").lines()
    timing = {
        "wall_s": round(wall, 1),
        "variants_s": round(variants_s, 1),
        "latency_and_report_s": round(wall - variants_s, 1),
        "ledger_lines": len(lines),
        "ledger_names_unique": len({e["name"] for e in lines}) == len(lines),
        "pareto": list(result.pareto),
        "recommended": result.recommended,
    }
    return timing, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "coco128")
    ap.add_argument("--model", type=Path, default=ROOT / "assets" / "weights" / "yolov8n.pt")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "ray-bench")
    ap.add_argument("--eval-images", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--ray-cpus", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="write the result here")
    ap.add_argument("--quick", action="store_true", help="a 2-variant smoke run of this script, not the benchmark")
    args = ap.parse_args()

    images = args.data / "images" / "train2017"
    annotations = next((args.data / "annotations").glob("*.json"))
    # one export for both runs: Ultralytics writes the export date into the ONNX, so two exports differ in bytes
    onnx = args.out.absolute() / "export" / f"{args.model.stem}-fp32.onnx"
    if not onnx.is_file():
        UltralyticsExporter().export(args.model, onnx.parent)
    base = (
        QuantPipeline.from_onnx(onnx)
        .calibrate(images, num_images=64, offset=0)
        .evaluate(annotations, num_images=args.eval_images, offset=64)
        .with_progress(False)
    )
    grid = {
        "calibration_method": ["minmax", "entropy", "percentile"],
        "calib_images": [32, 64],
        "keep_float": ["decode", "head"],
    }
    if args.quick:
        grid = {"calibration_method": ["minmax"], "calib_images": [32], "keep_float": ["decode", "head"]}
    bench = BenchConfig(iterations=args.iterations, warmup=5)
    executors: dict[str, Executor] = {"local": LocalExecutor(), "ray": RayExecutor(num_cpus=args.ray_cpus)}
    runs, results = {}, {}
    load_before = os.getloadavg()
    for name, executor in executors.items():
        sweep = Sweep(base, executor=executor, progress=False).grid(**grid)
        runs[name], results[name] = _run(sweep, args.out.absolute() / name, bench)
        print(name, runs[name], flush=True)
    local_out, ray_out = args.out.absolute() / "local", args.out.absolute() / "ray"
    a, b = _comparable(local_out), _comparable(ray_out)
    models = {
        n: file_sha256(Path(str(Ledger(local_out / "ledger.jsonl").entries()[n]["model_path"])))
        == file_sha256(Path(str(Ledger(ray_out / "ledger.jsonl").entries()[n]["model_path"])))
        for n in a
    }
    # the fronts from one set of timings: what the accuracy side alone decides
    local_latency = json.loads((local_out / "latency.json").read_text())["latency"]
    sweep = Sweep(base).grid(**grid)
    same_timings = {
        k: list(
            sweep.result(
                Ledger(out / "ledger.jsonl").entries(),
                local_latency,
                recommend_max_drop=0.5,
                recommend_min_speedup=None,
                out_dir=out,
            ).pareto
        )
        for k, out in (("local", local_out), ("ray", ray_out))
    }
    overhead = (runs["ray"]["wall_s"] - runs["local"]["wall_s"]) / runs["local"]["wall_s"] * 100
    record = {
        "what": "12-variant YOLOv8n ORT INT8 sweep (+ fp32), local executor vs a local Ray instance",
        "command": "YOLO_OFFLINE=1 .venv/bin/python benchmarks/ray_sweep.py "
        + f"--out {args.out} --eval-images {args.eval_images} --iterations {args.iterations} "
        + f"--ray-cpus {args.ray_cpus}"
        + (" --quick" if args.quick else ""),
        "machine": this_node(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "versions": {
            **{k: v for k, v in package_versions().items() if k in ("python", "onnxruntime", "numpy", "yoloquant")},
            "ray": version("ray"),
        },
        "variants": len(a),
        "grid": grid,
        "eval_images": args.eval_images,
        "runs": runs,
        "ray_overhead_pct_of_local_wall": round(overhead, 1),
        "ledger_identical": a == b,
        "ledger_differs_in": sorted(n for n in a.keys() | b.keys() if a.get(n) != b.get(n)),
        "models_identical": all(models.values()),
        "pareto_identical_as_measured": runs["local"]["pareto"] == runs["ray"]["pareto"],
        "pareto_on_the_local_timings": same_timings,
        "pareto_identical_on_the_same_timings": same_timings["local"] == same_timings["ray"],
    }
    text = json.dumps(record, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
