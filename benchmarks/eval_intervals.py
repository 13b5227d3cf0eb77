"""What the bootstrap intervals cost an evaluation, and that a rerun gives the same intervals.

Reads ../shared/data/coco-val-person (all 252 images; says so and stops when it is missing). Evaluates the
bundled YOLOv8n FP32 ONNX through ONNX Runtime's CPU provider with ``resamples=0`` and ``resamples=1000``,
interleaved (two rounds), and times the scoring alone (pycocotools matching + re-accumulation) on the same
detections, so the overhead is a ratio measured side by side.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/eval_intervals.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "coco-val-person"


def main() -> int:
    if not DATA.is_dir():
        print(f"skipped: {DATA} is missing (the shared data folder beside the repo)")
        return 0
    from yoloquant.backends.ort.engine import OrtEngineBuilder
    from yoloquant.config import EvalConfig
    from yoloquant.data.datasets import load_dataset
    from yoloquant.eval import coco
    from yoloquant.export import UltralyticsExporter

    with tempfile.TemporaryDirectory() as tmp:
        model = UltralyticsExporter().export(ROOT / "assets" / "weights" / "yolov8n.pt", Path(tmp))
        data = load_dataset(DATA / "images")
        times: dict[int, list[float]] = {0: [], 1000: []}
        results = {}
        with OrtEngineBuilder().build(model) as engine:
            for _ in range(2):
                for resamples in (0, 1000):
                    r = coco.evaluate(engine, data, EvalConfig(resamples=resamples), progress=False)
                    times[resamples].append(r.seconds)
                    results.setdefault(resamples, []).append(r)
            config = EvalConfig()
            dets = coco._predict_all(engine, data, config, False, "")
        gt, ids, cats = coco._coco_gt(data, engine.info.names)
        found = coco._results(dets, ids, cats)
        score_s: dict[int, list[float]] = {0: [], 1000: []}
        for _ in range(3):
            for resamples in (0, 1000):
                start = time.perf_counter()
                coco._score(gt, found, ids, EvalConfig(resamples=resamples))
                score_s[resamples].append(time.perf_counter() - start)
    full = min(times[0])
    extra = min(score_s[1000]) - min(score_s[0])
    print(f"images: {len(data)} of {DATA}")
    print(f"evaluation without intervals: {full:.1f} s (min of 2); with 1000 resamples: {min(times[1000]):.1f} s")
    print(f"scoring alone: {min(score_s[0]):.2f} s without, {min(score_s[1000]):.2f} s with 1000 resamples")
    print(f"overhead of the intervals: {extra:.2f} s = {100 * extra / full:.1f}% of an evaluation")
    a, b = results[1000]
    same = a.metrics == b.metrics
    print(f"rerun gives identical intervals: {same}; {a!r}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
