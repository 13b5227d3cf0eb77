"""GPU end-to-end benchmark: Ultralytics predict (PyTorch FP16) vs yoloquant on ONNX Runtime's CUDA EP.

One run, one GPU, the bundled YOLOv8n and the 64 bundled COCO images (decoded once, in memory):

* end-to-end images/s (letterbox + inference + decode/NMS, boxes in original pixels) at batch 1 and 16;
* inference-only latency p50 / p90 at batch 1 (upload + run + download of a letterboxed uint8 image);
* 8 engines on 8 CUDA streams (one thread each), ``--frames`` frames each, against a serial run, and
  the GPU memory in use before and after.

Variants: ``ultralytics`` (``YOLO(pt).predict(half=True, device=0)``, what users run today) and
yoloquant FP32 / FP16, each with and without CUDA graphs. The yoloquant engines take uint8 pixels
(``uint8_input=True``: the /255 runs on the GPU), letterbox on a thread pool overlapped with the GPU,
and decode + NMS on the GPU (``postprocess.gpu``).

    python benchmarks/gpu_e2e.py --out runs/gpu-e2e
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONF, IOU = 0.25, 0.7


def _export(pt: Path, out: Path, batch: int) -> Any:
    """Static-batch ONNX (CUDA graphs need every node on the GPU, so no dynamic shape ops)."""
    from ultralytics import YOLO

    from yoloquant.artifacts import OnnxModel

    out.mkdir(parents=True, exist_ok=True)
    target = out / f"yolov8n-b{batch}-fp32.onnx"
    if not target.exists():
        weights = out / f"b{batch}-{pt.name}"
        weights.write_bytes(pt.read_bytes())
        exported = YOLO(str(weights)).export(format="onnx", imgsz=640, batch=batch, simplify=False, verbose=False)
        Path(exported).replace(target)
    return OnnxModel.load(target)


def _percentiles(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples)
    return {"p50": float(np.percentile(arr, 50)), "p90": float(np.percentile(arr, 90)), "n": len(samples)}


def _ultralytics(pt: Path, images: list[np.ndarray], frames: int, iters: int) -> dict[str, Any]:
    import torch
    from ultralytics import YOLO

    model = YOLO(str(pt))
    out: dict[str, Any] = {}
    for batch in (1, 16):
        chunks = [[images[(k + i) % len(images)] for i in range(batch)] for k in range(0, frames, batch)]
        for chunk in chunks[:3]:
            model.predict(chunk, half=True, device=0, conf=CONF, iou=IOU, verbose=False, batch=batch)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for chunk in chunks:
            model.predict(chunk, half=True, device=0, conf=CONF, iou=IOU, verbose=False, batch=batch)
        torch.cuda.synchronize()
        out[f"e2e_b{batch}_ips"] = len(chunks) * batch / (time.perf_counter() - start)
    inference = []
    for k in range(iters):
        (result,) = model.predict(images[k % len(images)], half=True, device=0, verbose=False)
        inference.append(float(result.speed["inference"]))
    out["infer_b1_ms"] = _percentiles(inference[10:])
    out["note"] = "infer_b1_ms is Ultralytics' own speed['inference'] (synchronized), rect input"
    return out


def _run_chunks(engine: Any, chunks: list[list[np.ndarray]], pool: ThreadPoolExecutor) -> int:
    """Letterbox a chunk on the pool, stack it into the engine's pinned buffer, infer, decode on the GPU."""
    from yoloquant.data.letterbox import preprocess, scale_boxes
    from yoloquant.detections import Detections
    from yoloquant.postprocess.gpu import decode_pending

    count = 0
    for chunk in chunks:
        done = [f.result() for f in [pool.submit(preprocess, im, 640, mode="predict") for im in chunk]]
        x = np.stack([x for x, _ in done], out=engine.staging_buffer(len(chunk)))
        dets = decode_pending(engine.infer_async(x, download=False), engine, conf=CONF, iou=IOU, multi_label=False)
        out = [Detections(scale_boxes(d.boxes, m), d.scores, d.classes) for d, (_, m) in zip(dets, done, strict=True)]
        count += len(out)
    return count


def _e2e(engines: list[Any], chunks: list[list[np.ndarray]], pool: ThreadPoolExecutor) -> float:
    """Images/s with one thread per engine (each on its own stream), chunks dealt round-robin."""
    counts = [0] * len(engines)

    def work(k: int) -> None:
        counts[k] = _run_chunks(engines[k], chunks[k :: len(engines)], pool)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(engines))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


VARIANTS = (  # name, precision, cuda_graph, tf32, prefer_nhwc
    ("yoloquant-fp32", "fp32", False, False, False),
    ("yoloquant-fp32-cudagraph", "fp32", True, False, False),
    ("yoloquant-fp32-tf32-cudagraph", "fp32", True, True, False),
    ("yoloquant-fp16", "fp16", False, True, False),
    ("yoloquant-fp16-cudagraph", "fp16", True, True, False),
    ("yoloquant-fp16-nhwc-cudagraph", "fp16", True, True, True),
)


def _yoloquant(models: dict[str, Any], images: list[np.ndarray], args: argparse.Namespace) -> dict[str, Any]:
    from yoloquant.data.letterbox import preprocess

    pixels = np.stack([preprocess(im, 640, mode="predict")[0] for im in images[:16]])
    results: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 4)) as pool:
        for name, precision, graph, tf32, nhwc in VARIANTS:
            if args.variants and name not in args.variants:
                continue
            options = {"cuda_graph": graph, "tf32": tf32, "prefer_nhwc": nhwc}
            results[name] = _guard(
                lambda precision=precision, options=options: _variant(
                    models[precision], images, pool, pixels, options, args
                )
            )
            results[name]["options"] = options
            print(name, json.dumps(results[name]), flush=True)
    return results


def _variant(  # noqa: PLR0917
    models: dict[int, Any],
    images: list[np.ndarray],
    pool: ThreadPoolExecutor,
    pixels: np.ndarray,
    options: dict[str, bool],
    args: argparse.Namespace,
) -> dict[str, Any]:
    from yoloquant.backends.ort.cuda import CudaEngineBuilder

    row: dict[str, Any] = {"workers": args.workers}
    for batch in (1, 16):
        builder = CudaEngineBuilder(uint8_input=True, batch=batch, **options)
        engines = [builder.build(models[batch]) for _ in range(args.workers)]
        try:
            frames = args.frames
            chunks = [[images[(k + i) % len(images)] for i in range(batch)] for k in range(0, frames, batch)]
            _e2e(engines, chunks[: 2 * args.workers], pool)
            row[f"e2e_b{batch}_ips"] = _e2e(engines, chunks, pool)
            engine, x = engines[0], pixels[:batch]
            row[f"infer_b{batch}_ms"] = _time_infer(lambda e=engine, x=x: e.infer(x), args.iters)
            row[f"infer_nocopy_b{batch}_ms"] = _time_infer(
                lambda e=engine, x=x: e.infer_async(x).wait(copy=False), args.iters
            )
            row[f"upload_run_b{batch}_ms"] = _time_infer(
                lambda e=engine, x=x: e.infer_async(x, download=False).wait(), args.iters
            )
        finally:
            for e in engines:
                e.close()
    return row


def _time_infer(fn: Callable[[], Any], iters: int) -> dict[str, float]:
    for _ in range(10):
        fn()
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return _percentiles(samples)


def _multistream(model: Any, images: list[np.ndarray], frames: int, engines_n: int = 8) -> dict[str, Any]:
    from yoloquant.backends.ort.cuda import CudaEngineBuilder, gpu_memory_used
    from yoloquant.data.letterbox import preprocess
    from yoloquant.postprocess.decode import decode

    x = np.stack([preprocess(im, 640, mode="predict")[0] for im in images])
    with CudaEngineBuilder(uint8_input=True).build(model) as serial:
        reference = [decode(serial.infer(x[i : i + 1]), model.info, conf=CONF, iou=IOU)[0] for i in range(len(x))]
    engines = [CudaEngineBuilder(uint8_input=True).build(model) for _ in range(engines_n)]
    mismatches: list[str] = []

    def same(a: Any, b: Any) -> bool:
        return a.classes.tolist() == b.classes.tolist() and (not len(a) or np.abs(a.boxes - b.boxes).max() <= 1.0)

    def work(k: int, start: int, stop: int) -> None:
        for f in range(start, stop):
            i = (f * 7 + k) % len(x)
            (d,) = decode(engines[k].infer(x[i : i + 1]), model.info, conf=CONF, iou=IOU)
            if not same(d, reference[i]):
                mismatches.append(f"engine {k} frame {f} image {i}")

    def run(start: int, stop: int) -> float:
        threads = [threading.Thread(target=work, args=(k, start, stop)) for k in range(engines_n)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t0

    run(0, 20)
    before = gpu_memory_used()
    seconds = run(20, frames)
    after = gpu_memory_used()
    for e in engines:
        e.close()
    return {
        "engines": engines_n,
        "frames_per_engine": frames,
        "mismatches": len(mismatches),
        "first_mismatches": mismatches[:5],
        "gpu_mem_before_mib": before / 2**20,
        "gpu_mem_after_mib": after / 2**20,
        "growth_mib": (after - before) / 2**20,
        "images_per_s": engines_n * (frames - 20) / seconds,
    }


def _map(models: dict[str, dict[int, Any]]) -> dict[str, Any]:
    """COCO mAP on the 64 bundled images (``yolo val`` settings): CPU FP32 vs CUDA FP32 / FP16."""
    from yoloquant.backends.ort import OrtEngineBuilder
    from yoloquant.backends.ort.cuda import CudaEngineBuilder
    from yoloquant.config import EvalConfig
    from yoloquant.data.datasets import load_dataset
    from yoloquant.eval.coco import evaluate

    dataset = load_dataset(ROOT / "assets" / "coco64.yaml")
    out: dict[str, Any] = {}
    builders = {
        "cpu-fp32": (OrtEngineBuilder(), "fp32"),
        "cuda-fp32": (CudaEngineBuilder(), "fp32"),
        "cuda-fp16": (CudaEngineBuilder(tf32=True), "fp16"),
    }
    for name, (builder, precision) in builders.items():
        with builder.build(models[precision][1]) as engine:
            result = evaluate(engine, dataset, EvalConfig(), progress=False)
        out[name] = {"map50_95": result.map50_95, "map50": result.map50, "images": result.num_images}
    return out


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# GPU end-to-end benchmark ({report['gpu']})",
        "",
        "| variant | e2e b1 img/s | e2e b16 img/s | infer b1 p50 ms | infer b1 p90 ms | no-copy b1 p50 ms "
        "| upload+run b1 p50 ms | b16 vs ultralytics |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = report["variants"].get("ultralytics", {}).get("e2e_b16_ips")
    for name, row in report["variants"].items():
        if "error" in row:
            lines.append(f"| {name} | error: {row['error'][:80]} | | | | | | |")
            continue
        ratio = f"{row['e2e_b16_ips'] / base:.2f}x" if base else "-"
        inf = row["infer_b1_ms"]
        lines.append(
            f"| {name} | {row['e2e_b1_ips']:.0f} | {row['e2e_b16_ips']:.0f} "
            f"| {inf['p50']:.3f} | {inf['p90']:.3f} | {row.get('infer_nocopy_b1_ms', {}).get('p50', float('nan')):.3f} "
            f"| {row.get('upload_run_b1_ms', {}).get('p50', float('nan')):.3f} "
            f"| {ratio} |"
        )
    maps = report.get("map", {})
    if maps and "error" not in maps:
        lines += ["", "| engine (coco64, yolo val settings) | mAP50-95 | mAP50 |", "| --- | ---: | ---: |"]
        lines += [f"| {k} | {v['map50_95']:.4f} | {v['map50']:.4f} |" for k, v in maps.items()]
    ms = report.get("multistream", {})
    if ms and "error" not in ms:
        lines += [
            "",
            f"Multi-stream: {ms['engines']} engines x {ms['frames_per_engine']} frames, {ms['mismatches']} mismatches "
            f"vs serial, GPU memory {ms['gpu_mem_before_mib']:.0f} -> {ms['gpu_mem_after_mib']:.0f} MiB "
            f"(growth {ms['growth_mib']:.1f} MiB), {ms['images_per_s']:.0f} img/s.",
        ]
    return "\n".join(lines) + "\n"


def _guard(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except Exception as exc:  # keep the other measurements when one variant fails
        import traceback

        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "assets" / "weights" / "yolov8n.pt")
    parser.add_argument("--images", type=Path, default=ROOT / "assets" / "coco64" / "images")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-e2e")
    parser.add_argument("--frames", type=int, default=512, help="images per end-to-end measurement")
    parser.add_argument("--iters", type=int, default=300, help="batch-1 latency samples")
    parser.add_argument("--stream-frames", type=int, default=2000, help="frames per engine, multi-stream test")
    parser.add_argument("--workers", type=int, default=4, help="engines (threads, streams) per e2e measurement")
    parser.add_argument("--variants", nargs="*", default=[], help="yoloquant variants to run (default: all)")
    parser.add_argument("--skip", nargs="*", default=[], help="parts to skip: map ultralytics yoloquant multistream")
    args = parser.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")

    import torch

    from yoloquant.data.images import read_image
    from yoloquant.quantize.fp16 import Fp16Converter

    images = [read_image(f) for f in sorted(args.images.glob("*.jpg"))]
    work = args.out / "models"
    models: dict[str, dict[int, Any]] = {"fp32": {}, "fp16": {}}
    for batch in (1, 16):
        fp32 = _export(args.model, work, batch)
        models["fp32"][batch] = fp32
        models["fp16"][batch] = Fp16Converter().convert(fp32, work)
    report: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "conf": CONF,
        "iou": IOU,
        "frames": args.frames,
        "variants": {},
    }
    import onnxruntime

    onnxruntime.set_default_logger_severity(4)  # cuDNN-frontend plan misses are logged as errors, then fall back
    report["onnxruntime"] = onnxruntime.__version__
    if "map" not in args.skip:
        report["map"] = _guard(lambda: _map(models))
        print("map", json.dumps(report["map"]), flush=True)
    if "ultralytics" not in args.skip:
        report["variants"]["ultralytics"] = _guard(lambda: _ultralytics(args.model, images, args.frames, args.iters))
        print("ultralytics", json.dumps(report["variants"]["ultralytics"]), flush=True)
    if "yoloquant" not in args.skip:
        rows = _guard(lambda: _yoloquant(models, images, args))
        report["variants"].update({"yoloquant": rows} if "error" in rows else rows)
    if "multistream" not in args.skip:
        report["multistream"] = _guard(lambda: _multistream(models["fp32"][1], images, args.stream_frames))
        print("multistream", json.dumps(report["multistream"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_e2e.json").write_text(json.dumps(report, indent=2))
    (args.out / "gpu_e2e.md").write_text(_markdown(report))
    print(_markdown(report))


if __name__ == "__main__":
    main()
