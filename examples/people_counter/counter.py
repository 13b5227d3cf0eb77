"""The people counter's core: stream -> detections -> ByteTrack (Roboflow's ``trackers``) -> line / zone counts.

``count_video`` is what the command line (``count_people.py``) and ``benchmarks/people_counter.py`` both run;
``count_videos`` counts several streams (cameras) through one engine, their frames batched together
(``benchmarks/people_counter_gpu.py``). ``gpu=True`` keeps letterbox, batches and decode on the GPU
(:class:`yoloquant.stream.GpuStreamRunner`, for the torch backend's engines).
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from counting import Line, LineCounter, ZoneCounter

from yoloquant._optional import require
from yoloquant.protocols import Engine
from yoloquant.stream import FrameResult, GpuStreamRunner, StreamRunner, TileConfig
from yoloquant.stream.source import SourceInput, VideoSource

__all__ = ["CountResult", "PeopleCounter", "count_video", "count_videos"]

PERSON = 0  # COCO class index


@dataclass(frozen=True, kw_only=True)
class TrackerConfig:
    """ByteTrack's settings (``trackers.ByteTrackTracker``); the detector runs at ``detector_conf`` so that
    ByteTrack's second, low-confidence association has boxes to work with."""

    detector_conf: float = 0.1
    track_activation_threshold: float = 0.5
    high_conf_det_threshold: float = 0.5
    minimum_consecutive_frames: int = 2
    lost_track_buffer: int = 30
    minimum_iou_threshold: float = 0.1


class PeopleCounter:
    """Tracks the people of one stream and counts them on lines / zones; :meth:`update` once per frame."""

    def __init__(
        self,
        counters: Sequence[LineCounter | ZoneCounter],
        *,
        fps: float,
        tracker: TrackerConfig,
        keep_tracks: bool = False,
    ) -> None:
        trackers = require("trackers")
        self.counters = list(counters)
        self.tracker = trackers.ByteTrackTracker(
            lost_track_buffer=tracker.lost_track_buffer,
            frame_rate=fps,
            track_activation_threshold=tracker.track_activation_threshold,
            minimum_consecutive_frames=tracker.minimum_consecutive_frames,
            minimum_iou_threshold=tracker.minimum_iou_threshold,
            high_conf_det_threshold=tracker.high_conf_det_threshold,
        )
        # every track row (MOTChallenge layout, 1-based frame) when keep_tracks: for evaluation, not for a 24/7 service
        self.keep_tracks = keep_tracks
        self.mot_rows: list[tuple[int, int, float, float, float, float, float]] = []
        self.tracks, self._max_id = 0, -1

    def update(self, result: FrameResult) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """Track and count one frame; returns its JSON-lines record and the tracked boxes and ids."""
        sv = require("supervision")
        t0 = time.perf_counter()
        dets = result.detections
        if dets is None:  # a skipped frame: the tracks age as if nobody was seen
            sv_dets = sv.Detections.empty()
        else:
            sv_dets = sv.Detections(xyxy=dets.boxes.astype(np.float32), confidence=dets.scores, class_id=dets.classes)
        tracked = self.tracker.update(sv_dets)
        keep = tracked.tracker_id >= 0 if tracked.tracker_id is not None else np.zeros(0, bool)
        boxes = tracked.xyxy[keep]
        ids = tracked.tracker_id[keep].astype(np.int64) if tracked.tracker_id is not None else np.zeros(0, np.int64)
        scores = tracked.confidence[keep] if tracked.confidence is not None else np.ones(len(boxes), np.float32)
        events = []
        for c in self.counters:
            events += [{"counter": c.line.name, "id": tid, "dir": d} for tid, d in c.update(boxes, ids)]
        if self.keep_tracks:
            for tid, b, s in zip(ids.tolist(), boxes.tolist(), scores.tolist(), strict=True):
                self.mot_rows.append((result.index + 1, tid, b[0], b[1], b[2] - b[0], b[3] - b[1], s))
        new = ids[ids > self._max_id]  # ByteTrack numbers tracks in order: a new track has a higher id
        if len(new):
            self.tracks += len(new)
            self._max_id = int(new.max())
        track_ms = (time.perf_counter() - t0) * 1e3
        return (
            {
                "stream": result.stream,
                "frame": result.index,
                "error": result.error,
                "tracks": [
                    [tid, *(round(v, 1) for v in b)] for tid, b in zip(ids.tolist(), boxes.tolist(), strict=True)
                ],
                "events": events,
                "counts": {c.line.name: dict(c.counts) for c in self.counters},
                "ms": {**{k: round(v, 2) for k, v in result.timings_ms.items()}, "track": round(track_ms, 2)},
            },
            boxes,
            ids,
        )


@dataclass
class CountResult:
    """A counted video: counts per counter, tracks started, the track rows (when kept), rate, per-stage means."""

    counts: dict[str, dict[str, int]]
    frames: int
    skipped: int
    seconds: float
    mean_ms: dict[str, float]
    tracks: int
    mot_rows: list[tuple[int, int, float, float, float, float, float]] = field(repr=False)
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "frames": self.frames,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2),
            "tracks": self.tracks,
            "mean_ms": {k: round(v, 2) for k, v in self.mean_ms.items()},
            "errors": self.errors[:20],
            "interrupted": self.interrupted,
        }


def count_video(
    engine: Engine,
    source: SourceInput,
    counters: Sequence[LineCounter | ZoneCounter],
    *,
    batch_size: int = 1,
    tiles: TileConfig | None = None,
    tracker: TrackerConfig | None = None,
    max_frames: int | None = None,
    start: int = 0,
    loop: bool = False,
    on_frame: Callable[[dict[str, Any]], object] | None = None,
    video_out: Path | None = None,
    live: bool = False,
    keep_tracks: bool = False,
    gpu: bool = False,
) -> CountResult:
    """Count people in one video stream end to end (decode, inference, tracking, counting), timed as a whole."""
    tracker = tracker or TrackerConfig()
    src = (
        source
        if not isinstance(source, str | Path | int)
        else VideoSource(source, loop=loop, max_frames=max_frames, start=start)
    )
    runner = (GpuStreamRunner if gpu else StreamRunner)(
        engine, src, batch_size=batch_size, conf=tracker.detector_conf, classes=(PERSON,), tiles=tiles,
        keep_images=video_out is not None,
    )  # fmt: skip
    fps = runner.sources[0].fps or 25.0
    counter = PeopleCounter(counters, fps=fps, tracker=tracker, keep_tracks=keep_tracks)
    writer = _Writer(video_out, fps) if video_out is not None else None
    track_ms, last_show = 0.0, 0.0
    t0 = time.perf_counter()

    def on_result(result: FrameResult) -> None:
        nonlocal track_ms, last_show
        record, boxes, ids = counter.update(result)
        track_ms += record["ms"]["track"]
        if on_frame is not None:
            on_frame(record)
        if writer is not None and result.image is not None:
            writer.write(result.image, boxes, ids, counter.counters)
        if live and time.perf_counter() - last_show > 0.5:
            last_show = time.perf_counter()
            _show(record, runner.stats.frames / (last_show - t0))

    try:
        runner.run(on_result)  # Ctrl-C ends it cleanly (stats.interrupted); what was counted is kept
    finally:
        seconds = time.perf_counter() - t0
        if writer is not None:
            writer.close()
    if runner.stats.interrupted:
        print("\ninterrupted: the summary covers the frames counted so far", file=sys.stderr)
    stats = runner.stats
    mean = stats.mean_ms()
    mean["track"] = track_ms / stats.frames if stats.frames else 0.0
    return CountResult(
        counts={c.line.name: dict(c.counts) for c in counter.counters},
        frames=stats.frames, skipped=stats.skipped, seconds=seconds, mean_ms=mean,
        tracks=counter.tracks, mot_rows=counter.mot_rows, errors=list(stats.errors), interrupted=stats.interrupted,
    )  # fmt: skip


def count_videos(
    engine: Engine,
    sources: Sequence[SourceInput],
    counters: Sequence[LineCounter | ZoneCounter],
    *,
    batch_size: int = 8,
    gpu: bool = False,
    tiles: TileConfig | None = None,
    tracker: TrackerConfig | None = None,
    max_frames: int | None = None,
    keep_tracks: bool = False,
) -> list[CountResult]:
    """Count people in several streams at once through one engine: frames of all streams share its batches;
    each stream has its own tracker and its own copy of ``counters``. One result per stream, in order; their
    ``seconds`` are the wall time of the whole run (so their frames summed over it is the service's rate)."""
    tracker = tracker or TrackerConfig()
    srcs = [s if not isinstance(s, str | Path | int) else VideoSource(s, max_frames=max_frames) for s in sources]
    runner = (GpuStreamRunner if gpu else StreamRunner)(
        engine, srcs, batch_size=batch_size, conf=tracker.detector_conf, classes=(PERSON,), tiles=tiles,
        keep_images=False,
    )  # fmt: skip
    people = [
        PeopleCounter(copy.deepcopy(list(counters)), fps=src.fps or 25.0, tracker=tracker, keep_tracks=keep_tracks)
        for src in runner.sources
    ]
    track_ms = [0.0] * len(people)
    frames = [0] * len(people)
    skipped = [0] * len(people)

    def on_result(result: FrameResult) -> None:
        record, _, _ = people[result.stream].update(result)
        track_ms[result.stream] += record["ms"]["track"]
        frames[result.stream] += 1
        skipped[result.stream] += not result.ok

    t0 = time.perf_counter()
    runner.run(on_result)
    seconds = time.perf_counter() - t0
    mean, stats = runner.stats.mean_ms(), runner.stats
    return [
        CountResult(
            counts={c.line.name: dict(c.counts) for c in p.counters},
            frames=frames[k],
            skipped=skipped[k],
            seconds=seconds,
            mean_ms={**mean, "track": track_ms[k] / frames[k] if frames[k] else 0.0},
            tracks=p.tracks,
            mot_rows=p.mot_rows,
            errors=list(stats.errors),
            interrupted=stats.interrupted,
        )
        for k, p in enumerate(people)
    ]


def _show(record: dict[str, Any], fps: float) -> None:
    counts = "  ".join(f"{k}: " + " ".join(f"{d} {n}" for d, n in v.items()) for k, v in record["counts"].items())
    sys.stderr.write(f"\rframe {record['frame'] + 1:6d}  {fps:6.1f} fps  {len(record['tracks']):3d} tracked  {counts}")
    sys.stderr.flush()


class _Writer:
    """An annotated MP4: tracked boxes with ids, the counting lines / zones, the counts (OpenCV, Hershey font)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self._out: Any = None
        self.cv2 = require("cv2")

    def write(self, image: np.ndarray, boxes: np.ndarray, ids: np.ndarray, counters: Sequence[Any]) -> None:
        cv2 = self.cv2
        if self._out is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = image.shape[:2]
            self._out = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
        img = image.copy()
        for tid, b in zip(ids.tolist(), boxes.astype(int).tolist(), strict=True):
            cv2.rectangle(img, (b[0], b[1]), (b[2], b[3]), (0, 200, 255), 2)
            cv2.putText(img, str(tid), (b[0], max(b[1] - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 200, 255), 1)
        h, w = img.shape[:2]
        for k, c in enumerate(counters):
            _draw_counter(cv2, img, c, w, h)
            text = f"{c.line.name}: " + "  ".join(f"{d} {n}" for d, n in c.counts.items())
            cv2.putText(img, text, (8, 20 + 20 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 2)
        self._out.write(img)

    def close(self) -> None:
        if self._out is not None:
            self._out.release()
            self._out = None


def _draw_counter(cv2: Any, img: np.ndarray, counter: Any, w: int, h: int) -> None:
    if isinstance(counter, ZoneCounter):
        pts = np.array(counter.zone.points, np.int32).reshape(-1, 1, 2)
        cv2.polylines(img, [pts], isClosed=True, color=(255, 0, 255), thickness=2)
        return
    line: Line = counter.line
    (ax, ay), (bx, by) = line.a, line.b
    if line.name.startswith("x="):
        p, q = (int(ax), 0), (int(ax), h)
    elif line.name.startswith("y="):
        p, q = (0, int(ay)), (w, int(ay))
    else:
        p, q = (int(ax), int(ay)), (int(bx), int(by))
    cv2.line(img, p, q, (255, 0, 255), 2)
