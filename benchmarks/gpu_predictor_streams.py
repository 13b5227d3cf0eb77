"""``TorchPredictor``'s batches in flight each on its own CUDA stream (the predictor as it is) against all of them
on the engine's stream (as it was before 2026-12-03; made here by pointing the slots' ``stream`` at the engine's),
and Ultralytics ``predict(half=True)``: end to end img/s on the 64 bundled coco64 frames, batch 1 and 16, medians
of 15 interleaved rounds; the two predictors' detections compared (classes equal, boxes within 0.01 px).

    YOLO_OFFLINE=1 python benchmarks/gpu_predictor_streams.py benchmarks/results/gpu-predictor-streams-h200.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gpu_torch as g  # this folder's GPU benchmark (its folder is on sys.path)
import numpy as np

from yoloquant.backends.torch.predictor import TorchPredictor


def main(out: Path) -> None:
    tmp = Path(tempfile.mkdtemp())
    model = g._export(tmp / "export")
    start = time.perf_counter()
    engine = g._build(model, tmp / "art")
    report: dict[str, Any] = {"build_s": round(time.perf_counter() - start, 1)}
    frames = g._frames()
    cases: dict[str, Any] = {}
    for b in (1, 16):
        own, shared = TorchPredictor(engine, conf=0.25), TorchPredictor(engine, conf=0.25)
        own.prepare(b)
        shared.prepare(b)
        for slot in shared._slots[b]:  # the predictor before: every batch on the engine's stream
            slot.stream = engine.stream
        usable = frames[: len(frames) - len(frames) % b]
        a, o = own.predict(usable, batch_size=b), shared.predict(usable, batch_size=b)
        report[f"b{b}_detections"] = sum(len(d) for d in a)
        report[f"b{b}_same"] = all(
            x.classes.tolist() == y.classes.tolist() and np.allclose(x.boxes, y.boxes, atol=1e-2)
            for x, y in zip(a, o, strict=True)
        )
        cases[f"ultralytics_b{b}"] = g._e2e_ultralytics(frames, b)
        cases[f"own_streams_b{b}"] = lambda p=own, u=usable, b=b: p.predict(u, batch_size=b)
        cases[f"engine_stream_b{b}"] = lambda p=shared, u=usable, b=b: p.predict(u, batch_size=b)
    report["img_s"] = g.images_per_s(g.interleaved_medians(cases, 15, warmup=2), len(frames))
    report |= g.ratios_to_ultralytics(report["img_s"])
    print(json.dumps(report, indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
