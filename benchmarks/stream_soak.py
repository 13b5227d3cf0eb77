"""Memory over a long looped run: the people counter (stream + ByteTrack + counting) on a video played in a loop.

Samples the process's resident memory (RSS, /proc/self/statm) every ``--every`` seconds and writes them with the
start / end values to ``benchmarks/results/stream_soak-<variant>.json``. "Start" is after ``--warmup`` seconds,
once the engine, the tracker and the queues have reached their working size.

    python benchmarks/stream_soak.py --minutes 10 --variant int8          # reads runs/counter-models-nncf
    python benchmarks/stream_soak.py --video assets/video/one-by-one-person.mp4 --minutes 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "people_counter"))

from counter import PeopleCounter, TrackerConfig  # noqa: E402
from counting import parse_counter  # noqa: E402

from yoloquant.report.result import PipelineResult  # noqa: E402
from yoloquant.stream import StreamRunner, VideoSource  # noqa: E402


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=ROOT / "runs" / "counter-models-nncf")
    p.add_argument("--variant", default="int8")
    p.add_argument("--video", type=Path, default=ROOT.parent / "shared/data/video/pets09_s2l1_f001-300.mp4")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=20.0, help="seconds before the start sample")
    p.add_argument("--every", type=float, default=15.0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    tracker = TrackerConfig()
    with PipelineResult.load(args.models).engine(args.variant) as engine:
        runner = StreamRunner(engine, VideoSource(args.video, loop=True), conf=tracker.detector_conf, classes=(0,))
        counter = PeopleCounter([parse_counter("x=384"), parse_counter("y=288")], fps=7.0, tracker=tracker)
        t0 = time.perf_counter()
        samples: list[tuple[float, int, float]] = []
        start: tuple[float, int, float] | None = None
        for r in runner:
            counter.update(r)
            now = time.perf_counter() - t0
            if start is None and now >= args.warmup:
                start = (now, runner.stats.frames, rss_mib())
                samples.append(start)
            elif start is not None and now - samples[-1][0] >= args.every:
                samples.append((now, runner.stats.frames, rss_mib()))
                print(f"{now:7.1f} s  {runner.stats.frames:6d} frames  RSS {samples[-1][2]:.1f} MiB", file=sys.stderr)
            if now >= args.warmup + args.minutes * 60:
                runner.stop()
        end = (time.perf_counter() - t0, runner.stats.frames, rss_mib())
    assert start is not None
    doc = {
        "command": " ".join(sys.argv),
        "video": str(args.video),
        "variant": args.variant,
        "minutes_measured": round((end[0] - start[0]) / 60, 2),
        "frames": end[1],
        "loops": end[1] / 300,
        "rss_start_mib": round(start[2], 1),
        "rss_end_mib": round(end[2], 1),
        "rss_max_mib": round(max(s[2] for s in samples), 1),
        "samples": [{"s": round(t, 1), "frames": f, "rss_mib": round(m, 1)} for t, f, m in samples],
        "stats": runner.stats.to_dict(),
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"stream_soak-{args.variant}.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k not in ("samples", "stats")}, indent=1))


if __name__ == "__main__":
    main()
