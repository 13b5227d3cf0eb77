"""Count people crossing lines (or entering a zone) in a video, a camera or a stream URL, with any yoloquant engine.

    # an engine a pipeline run produced (PipelineResult.load(run).engine("int8")), two counting lines:
    python examples/people_counter/count_people.py VIDEO --run runs/demo --variant int8 --line x=384 --line y=288 \
        --jsonl out/frames.jsonl --summary out/summary.json --video out/annotated.mp4

    # or a model file (.onnx as is; .pt exported first), a zone, a camera:
    python examples/people_counter/count_people.py 0 --model assets/weights/yolov8n.pt --zone "100,100;500,100;500,400"

One JSON line per frame (tracks, crossings, running counts, per-stage ms), a summary JSON at the end, an optional
annotated MP4, and a live line on stderr (frame, rate, counts). Ctrl-C stops cleanly and still writes the summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from counter import TrackerConfig, count_video
from counting import parse_counter

from yoloquant.protocols import Engine
from yoloquant.stream import TileConfig


def load_engine(args: argparse.Namespace) -> Engine:
    """The engine of ``--run``/``--variant`` (as measured), or of ``--model`` on ``--backend``."""
    from yoloquant.artifacts import OnnxModel
    from yoloquant.backends import build_engine
    from yoloquant.config import Backend
    from yoloquant.report.result import PipelineResult

    if args.run is not None:
        return PipelineResult.load(args.run).engine(args.variant, threads=args.threads)
    model = Path(args.model)
    if model.suffix == ".pt":
        from yoloquant.config import ExportConfig
        from yoloquant.export.ultralytics import exporter_for

        out = Path(tempfile.mkdtemp(prefix="people-counter-"))
        onnx = exporter_for(model, ExportConfig(dynamic=args.batch > 1)).export(model, out)
    else:
        onnx = OnnxModel.load(model)
    return build_engine(onnx, Backend(args.backend), threads=args.threads)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="video file, camera index (0) or URL OpenCV opens (rtsp://...)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", help="a pipeline run folder (report.json); see --variant")
    g.add_argument("--model", help="an .onnx model (or .pt, exported first)")
    p.add_argument("--variant", default=None, help="variant of --run (default: its last, e.g. int8)")
    p.add_argument(
        "--backend", default="ort-cpu", help="backend for --model (ort-cpu, openvino, ort-cuda, torch, tensorrt)"
    )
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: the backend's)")
    p.add_argument("--line", action="append", default=[], help="counting line: x=V, y=V or X1,Y1,X2,Y2 (repeatable)")
    p.add_argument("--zone", action="append", default=[], help="counting zone: X,Y;X,Y;X,Y... (repeatable)")
    p.add_argument(
        "--rule", choices=("debounced", "reference"), default="debounced",
        help="line rule: 'debounced' (3 points in a row past a 2%%-of-height dead band) or 'reference' (any flip)",
    )  # fmt: skip
    p.add_argument("--batch", type=int, default=1, help="frames (or tiles) per engine call")
    p.add_argument("--gpu", action="store_true", help="letterbox, batches and decode on the GPU (--backend torch)")
    p.add_argument("--tile", type=int, default=0, help="cut frames into tiles of this size (0: whole frames)")
    p.add_argument("--conf", type=float, default=0.1, help="detector score threshold (ByteTrack uses low scores too)")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--start", type=int, default=0, help="first frame of a file to read")
    p.add_argument("--loop", action="store_true", help="play a file again at its end (soak tests; Ctrl-C stops)")
    p.add_argument("--jsonl", type=Path, help="write one JSON line per frame here")
    p.add_argument("--summary", type=Path, help="write the summary JSON here (also printed)")
    p.add_argument("--video", type=Path, help="write an annotated MP4 here")
    p.add_argument("--mot", type=Path, help="write the tracks as MOTChallenge rows (frame,id,x,y,w,h,conf,-1,-1,-1)")
    p.add_argument("--quiet", action="store_true", help="no live rate display")
    args = p.parse_args(argv)
    if not args.line and not args.zone:
        p.error("give at least one --line or --zone")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    rule = {"min_frames": 1, "margin": 0.0} if args.rule == "reference" else {}
    counters = [parse_counter(t, **rule) for t in [*args.line, *args.zone]]
    source: str | int = int(args.source) if args.source.isdigit() else args.source
    jsonl = args.jsonl.open("w", encoding="utf-8") if args.jsonl else None
    try:
        with load_engine(args) as engine:
            result = count_video(
                engine, source, counters,
                batch_size=args.batch,
                tiles=TileConfig(size=args.tile) if args.tile else None,
                tracker=TrackerConfig(detector_conf=args.conf),
                max_frames=args.max_frames, start=args.start, loop=args.loop,
                on_frame=(lambda r: jsonl.write(json.dumps(r) + "\n")) if jsonl else None,
                video_out=args.video, live=not args.quiet, keep_tracks=args.mot is not None, gpu=args.gpu,
            )  # fmt: skip
    finally:
        if jsonl is not None:
            jsonl.close()
    summary = {"source": args.source, "model": args.model or f"{args.run}:{args.variant}", **result.summary()}
    if not args.quiet:
        sys.stderr.write("\n")
    text = json.dumps(summary, indent=2)
    print(text)
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(text + "\n", encoding="utf-8")
    if args.mot:
        args.mot.parent.mkdir(parents=True, exist_ok=True)
        rows = (f"{f},{i},{x:.2f},{y:.2f},{w:.2f},{h:.2f},{s:.3f},-1,-1,-1" for f, i, x, y, w, h, s in result.mot_rows)
        args.mot.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return summary


if __name__ == "__main__":
    main()
