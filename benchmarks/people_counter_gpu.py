"""The people counter on the GPU (#21 GPU rows): torch engines, the GPU stream runner, 8 streams batched.

For each engine (FP32 inductor, FP16 eager, FP16 inductor: :class:`~yoloquant.backends.torch.engine.TorchEngine`)
and each MOTChallenge sequence (``../shared/data/video``; carried to the GPU machine in ``.gpu-data/video``, never
committed), runs ``examples/people_counter`` end to end with :class:`~yoloquant.stream.GpuStreamRunner` (decode,
upload, letterbox, inference, decode + NMS, ByteTrack, counting) and reports counts vs ground truth, MOTA / IDF1
(py-motmetrics, the CPU benchmark's :func:`mot_metrics`) and frames per second. Then 8 concurrent copies of PETS
through one FP16 inductor engine, their frames batched together (``count_videos``), at batch 8 and 16.

    YOLO_OFFLINE=1 python benchmarks/people_counter_gpu.py --data .gpu-data/video \\
        --out benchmarks/results/people_counter-gpu-h200.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples" / "people_counter"))

from counter import count_video, count_videos  # noqa: E402
from counting import parse_counter  # noqa: E402
from people_counter import SEQUENCES, count_errors, mot_metrics  # noqa: E402

PT = ROOT / "assets" / "weights" / "yolov8n.pt"
ENGINES = {  # name -> precision, compiled
    "fp32-inductor": ("fp32", True),
    "fp16-eager": ("fp16", False),
    "fp16-inductor": ("fp16", True),
}


def build(model: Any, name: str, batch_sizes: tuple[int, ...]) -> Any:
    from yoloquant.backends.torch.engine import TorchEngineBuilder, TorchEngineConfig

    precision, compiled = ENGINES[name]
    cfg = TorchEngineConfig(precision=precision, batch_sizes=batch_sizes, compile=compiled,
                            artifact_dir=Path(tempfile.mkdtemp()) / name)  # fmt: skip
    return TorchEngineBuilder(cfg).build(model)


def sequence_row(engine: Any, data: Path, seq: str) -> dict[str, Any]:
    stem, lines = SEQUENCES[seq]
    result = count_video(engine, data / f"{stem}.mp4", [parse_counter(t) for t in lines], keep_tracks=True, gpu=True)
    truth = json.loads((data / f"{stem}.counts.json").read_text())["counts"]
    return {
        "counts": result.counts,
        "truth": {f"{k[0]}={k[1:]}": v for k, v in truth.items()},
        "count_error": count_errors(result.counts, truth),
        **mot_metrics(data / f"{stem}.gt.txt", result.mot_rows),
        "fps": round(result.fps, 1),
        "frames": result.frames,
        "mean_ms": {k: round(v, 3) for k, v in result.mean_ms.items()},
    }


def concurrent(engine: Any, data: Path, copies: int, batch: int, single: dict[str, Any]) -> dict[str, Any]:
    stem, lines = SEQUENCES["PETS09-S2L1"]
    results = count_videos(engine, [data / f"{stem}.mp4"] * copies, [parse_counter(t) for t in lines],
                           batch_size=batch, gpu=True)  # fmt: skip
    frames = sum(r.frames for r in results)
    return {
        "copies": copies,
        "batch": batch,
        "frames": frames,
        "seconds": round(results[0].seconds, 3),
        "frames_per_s": round(frames / results[0].seconds, 1),
        "copies_with_the_single_stream_counts": sum(r.counts == single["counts"] for r in results),
        "mean_ms": {k: round(v, 3) for k, v in results[0].mean_ms.items()},
    }


def main() -> None:
    import torch

    from yoloquant.config import ExportConfig
    from yoloquant.export import UltralyticsExporter

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / ".gpu-data" / "video")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--copies", type=int, default=8)
    args = ap.parse_args()
    model = UltralyticsExporter(ExportConfig(dynamic=True)).export(PT, Path(tempfile.mkdtemp()))
    rows, summary, streams = [], {}, []
    for name in ENGINES:
        start = time.perf_counter()
        sizes = (1, 8, 16) if name == "fp16-inductor" else (1,)
        with build(model, name, sizes) as engine:
            build_s = time.perf_counter() - start
            count_video(engine, args.data / "TUD-Campus.mp4", [parse_counter("x=320")], max_frames=20, gpu=True)
            for seq in SEQUENCES:  # warmed up above: graphs captured, tracker imported
                row = {"sequence": seq, "engine": name, **sequence_row(engine, args.data, seq)}
                rows.append(row)
                print(json.dumps(row), flush=True)
            if name == "fp16-inductor":
                single = next(r for r in rows if r["engine"] == name and r["sequence"] == "PETS09-S2L1")
                for batch in (8, 16):
                    streams.append(concurrent(engine, args.data, args.copies, batch, single))
                    print(json.dumps(streams[-1]), flush=True)
        mine = [r for r in rows if r["engine"] == name]
        summary[name] = {
            "build_s": round(build_s, 1),
            "total_abs_count_error": sum(abs(e) for r in mine for e in r["count_error"].values()),
            "max_abs_count_error": max(abs(e) for r in mine for e in r["count_error"].values()),
        }
    fp32 = {r["sequence"]: r["counts"] for r in rows if r["engine"] == "fp32-inductor"}
    for name in ENGINES:
        summary[name]["same_counts_as_fp32"] = all(
            r["counts"] == fp32[r["sequence"]] for r in rows if r["engine"] == name
        )
    doc = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "model": "yolov8n (assets/weights), torch backend, GpuStreamRunner, conf 0.1 (ByteTrack), batch 1 per sequence",
        "command": " ".join(sys.argv),
        "rows": rows,
        "summary": summary,
        "concurrent_pets": streams,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("YOLO_OFFLINE", "1")
    main()
