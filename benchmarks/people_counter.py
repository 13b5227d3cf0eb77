"""Downstream accuracy of quantization: the people counter with FP32 / INT8 engines on MOTChallenge sequences.

For each sequence (``../shared/data/video``: PETS09-S2L1 frames 1-300, TUD-Stadtmitte, TUD-Campus) and each engine,
runs ``examples/people_counter`` end to end (decode, inference, ByteTrack, counting) and reports, in one table:
line-crossing counts vs the ground truth's (``*.counts.json``, the rule of ``count_crossings.py``), MOTA / IDF1 /
ID switches (py-motmetrics against ``*.gt.txt``, IoU >= 0.5; gt rows with conf 0 are ignore regions) and frames
per second. Variants run interleaved, round by round, in one process, so rates compare on the same machine state.

    python benchmarks/people_counter.py                       # builds runs/counter-models when missing
    python benchmarks/people_counter.py --rounds 2 --variants fp32,int8,int8-nncf

Writes ``benchmarks/results/people_counter-<cpu>.json``. The GPU rows (FP32 / FP16 torch engines, 8 streams
batched) are ``benchmarks/people_counter_gpu.py``'s (``people_counter-gpu-h200.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "people_counter"))

from counter import CountResult, count_video  # noqa: E402
from counting import Line, LineCounter, parse_counter, replay  # noqa: E402

from yoloquant.report.result import PipelineResult  # noqa: E402

SEQUENCES = {  # name -> (video, gt, counts, lines)
    "PETS09-S2L1": ("pets09_s2l1_f001-300", ("x=384", "y=288")),
    "TUD-Stadtmitte": ("TUD-Stadtmitte", ("x=320", "y=240")),
    "TUD-Campus": ("TUD-Campus", ("x=320", "y=240")),
}
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "video"


def build_models(out: Path) -> PipelineResult:
    """FP32, INT8 for ONNX Runtime's CPU provider, NNCF INT8 on OpenVINO (docs/quantizers.md: the fast CPU INT8);
    dynamic batch, calibrated on the bundled coco64 images 0-31."""
    from yoloquant import QuantPipeline

    return (
        QuantPipeline.from_ultralytics(ROOT / "assets/weights/yolov8n.pt", dynamic=True)
        .calibrate(ROOT / "assets/coco64/images", num_images=32)
        .quantize("int8")
        .quantize("int8", quantizer="nncf", backend="openvino", name="int8-nncf")
        .run(out)
    )


def mot_metrics(gt_path: Path, rows: list[tuple[int, int, float, float, float, float, float]]) -> dict[str, float]:
    """MOTA, IDF1, ID switches with py-motmetrics (CLEAR MOT + identity metrics), matching at IoU >= 0.5.

    Ground-truth rows with conf 0 are ignore regions (MOTChallenge): a hypothesis on one (IoU >= 0.5) that matches
    no counted box is dropped rather than counted as a false positive. The IoU distance matrix is computed here
    because motmetrics 1.4.0 (the newest release) calls ``np.asfarray``, which numpy 2 removed.
    """
    import motmetrics as mm

    gt: dict[int, list[tuple[int, list[float]]]] = {}
    ignore: dict[int, list[list[float]]] = {}
    for line in gt_path.read_text().splitlines():
        p = line.split(",")
        if len(p) < 7:
            continue
        frame, tid, box, conf = int(float(p[0])), int(float(p[1])), [float(v) for v in p[2:6]], float(p[6])
        if conf != 0:
            gt.setdefault(frame, []).append((tid, box))
        else:
            ignore.setdefault(frame, []).append(box)
    hyp: dict[int, list[tuple[int, list[float]]]] = {}
    for frame, tid, x, y, w, h, _ in rows:
        hyp.setdefault(frame, []).append((tid, [x, y, w, h]))
    acc = mm.MOTAccumulator(auto_id=False)
    for frame in sorted(set(gt) | set(hyp)):
        g, hs = gt.get(frame, []), hyp.get(frame, [])
        if frame in ignore and hs:
            on_ignore = (iou_xywh(np.array([b for _, b in hs]), np.array(ignore[frame])) >= 0.5).any(axis=1)
            on_gt = (iou_xywh(np.array([b for _, b in hs]), np.array([b for _, b in g]).reshape(-1, 4)) >= 0.5).any(
                axis=1
            )
            hs = [x for x, drop in zip(hs, on_ignore & ~on_gt, strict=True) if not drop]
        iou = iou_xywh(np.array([b for _, b in g]).reshape(-1, 4), np.array([b for _, b in hs]).reshape(-1, 4))
        dist = np.where(iou >= 0.5, 1.0 - iou, np.nan)
        acc.update([t for t, _ in g], [t for t, _ in hs], dist, frameid=frame)
    s = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches", "precision", "recall"], name="seq")
    return {k: float(s[k].iloc[0]) for k in s.columns}


def iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each top-left x, y, w, h box of ``a`` [N, 4] with each of ``b`` [M, 4]."""
    a, b = a.reshape(-1, 4).astype(float), b.reshape(-1, 4).astype(float)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y2 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def count_errors(found: dict[str, dict[str, int]], truth: dict[str, dict[str, int]]) -> dict[str, int]:
    """Signed error per line and direction, keyed ``x=384:left_to_right``."""
    out = {}
    for line, dirs in truth.items():
        name = f"{line[0]}={line[1:]}"
        for d, n in dirs.items():
            out[f"{name}:{d}"] = found[name][d] - n
    return out


def run_one(engine: Any, data: Path, seq: str, batch: int) -> tuple[CountResult, dict[str, Any]]:
    stem, lines = SEQUENCES[seq]
    counters = [parse_counter(t) for t in lines]  # the counter's default (debounced) rule
    result = count_video(engine, data / f"{stem}.mp4", counters, batch_size=batch, keep_tracks=True)
    truth = json.loads((data / f"{stem}.counts.json").read_text())["counts"]
    reference = {}
    for t in lines:  # the same tracks under the reference rule (count_crossings.py's)
        c = LineCounter(Line.parse(t))
        replay(result.mot_rows, c)
        reference[c.line.name] = c.counts
    return result, {
        "counts": result.counts,
        "truth": {f"{k[0]}={k[1:]}": v for k, v in truth.items()},
        "count_error": count_errors(result.counts, truth),
        "counts_reference_rule": reference,
        "count_error_reference_rule": count_errors(reference, truth),
        **mot_metrics(data / f"{stem}.gt.txt", result.mot_rows),
        "fps": result.fps,
        "frames": result.frames,
        "tracks": result.tracks,
        "mean_ms": result.mean_ms,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--models", type=Path, default=ROOT / "runs" / "counter-models", help="a pipeline run folder")
    p.add_argument("--variants", default="fp32,int8,int8-nncf")
    p.add_argument("--sequences", default=",".join(SEQUENCES))
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds (rates: median over rounds)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data} is missing: the MOTChallenge sequences live in ../shared/data/video (never in the repo)")
    run = PipelineResult.load(args.models) if (args.models / "report.json").exists() else build_models(args.models)
    variants = args.variants.split(",")
    engines = {v: run.engine(v, threads=args.threads) for v in variants}
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in range(args.rounds):
        for seq in args.sequences.split(","):
            for v in variants:
                _, row = run_one(engines[v], args.data, seq, args.batch)
                rows.setdefault((seq, v), []).append(row)
                print(f"round {r + 1} {seq:15s} {v:14s} {row['fps']:6.1f} fps  counts {row['counts']}", file=sys.stderr)
    for e in engines.values():
        e.close()
    table = []
    for (seq, v), rs in rows.items():
        row = dict(rs[-1])  # counts / metrics are deterministic per engine; the rate is the median over rounds
        row["fps"] = statistics.median(x["fps"] for x in rs)
        row["fps_rounds"] = [round(x["fps"], 2) for x in rs]
        table.append({"sequence": seq, "variant": v, "backend": run.variant(v).backend, **row})
    summary = summarize(table, variants)
    out = args.out or ROOT / "benchmarks" / "results" / f"people_counter-{_cpu_tag()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv),
        "machine": {"cpu": _cpu_name(), "cores": _cores(), "python": platform.python_version()},
        "models": str(args.models),
        "batch": args.batch,
        "rounds": args.rounds,
        "rows": table,
        "summary": summary,
        "fp16_gpu": "benchmarks/people_counter_gpu.py (results/people_counter-gpu-h200.json)",
    }
    out.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    print(markdown(table, summary))
    print(f"wrote {out}", file=sys.stderr)


def summarize(table: list[dict[str, Any]], variants: list[str]) -> dict[str, Any]:
    by = {(r["sequence"], r["variant"]): r for r in table}
    out: dict[str, Any] = {}
    for v in variants:
        rows = [r for r in table if r["variant"] == v]
        errs = [e for r in rows for e in r["count_error"].values()]
        ref = [e for r in rows for e in r["count_error_reference_rule"].values()]
        s: dict[str, Any] = {
            "total_abs_count_error": sum(abs(e) for e in errs),
            "max_abs_count_error": max(map(abs, errs)),
            "total_abs_count_error_reference_rule": sum(abs(e) for e in ref),
        }
        if v != variants[0]:
            diffs = [
                abs(r["count_error"][k] - by[(r["sequence"], variants[0])]["count_error"][k])
                for r in rows for k in r["count_error"]
            ]  # fmt: skip
            s["max_abs_count_diff_vs_" + variants[0]] = max(diffs)
            s["fps_ratio_vs_" + variants[0]] = {
                r["sequence"]: round(r["fps"] / by[(r["sequence"], variants[0])]["fps"], 3) for r in rows
            }
        out[v] = s
    return out


def markdown(table: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = [
        "| sequence | engine | counts (line: dir found/truth) | abs err | abs err, reference rule "
        "| MOTA | IDF1 | ID sw | fps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        cells = []
        for line, dirs in r["truth"].items():
            cells.append(f"{line}: " + " ".join(f"{r['counts'][line][d]}/{n}" for d, n in dirs.items()))
        err = sum(abs(e) for e in r["count_error"].values())
        ref = sum(abs(e) for e in r["count_error_reference_rule"].values())
        lines.append(
            f"| {r['sequence']} | {r['variant']} ({r['backend']}) | {'; '.join(cells)} | {err} | {ref} "
            f"| {r['mota']:.3f} | {r['idf1']:.3f} | {int(r['num_switches'])} | {r['fps']:.1f} |"
        )
    lines.append("| all | fp16 (GPU) | benchmarks/people_counter_gpu.py | | | | | | |")
    return "\n".join(lines) + "\n\n" + json.dumps(summary, indent=1)


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def _cpu_tag() -> str:
    return "vnni" if "avx512_vnni" in Path("/proc/cpuinfo").read_text() else "avx2"


if __name__ == "__main__":
    main()
