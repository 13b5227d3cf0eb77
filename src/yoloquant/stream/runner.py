"""``StreamRunner``: frames from one or more sources through one engine, detections out in order.

::

    reader thread per source --(bounded queue)--> batcher / engine thread --(bounded queue)--> your loop / callback
       decode, Frame                      letterbox, tiles, fixed-size batches,
                                          infer, decode + NMS, tile merge

Both queues are bounded, so a slow consumer stalls the engine and the engine stalls the readers (backpressure):
memory stays flat however long the stream. Per stream, frames come out in the order they were read; streams
interleave. A frame that cannot be decoded, or that changes size mid-stream, comes out with ``error`` set and no
detections; the stream goes on.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from yoloquant.data.images import as_bgr
from yoloquant.data.letterbox import LetterboxMeta, normalize_pixels, preprocess, scale_detections
from yoloquant.detections import Detections
from yoloquant.errors import ConfigError, InferenceError, YoloQuantError
from yoloquant.postprocess.decode import decode
from yoloquant.protocols import Engine
from yoloquant.stream.source import Frame, FrameSource, SourceInput, open_source
from yoloquant.stream.stats import StreamStats
from yoloquant.stream.tiles import TileConfig, merge_tiles, tile_grid

__all__ = ["FrameResult", "StreamConfig", "StreamRunner"]

_POLL_S = 0.05  # how often blocked threads look at the stop flag


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    """Options of a :class:`StreamRunner`.

    Attributes:
        batch_size: Frames (or tiles) per engine call. Above 1 needs an engine with a dynamic batch.
        pad_batch: Pad a partial batch to ``batch_size`` so every call has the same shape (CUDA graphs,
            TensorRT profiles); off, a partial batch runs as it is.
        conf: Score threshold. iou: NMS IoU threshold. max_det: Most detections per frame.
        classes: Keep only these class indices (``(0,)``: people in COCO); None keeps all.
        tiles: Cut each frame into overlapping tiles (:class:`TileConfig`); None runs the whole frame.
        queue_size: Frames each queue holds (the bound on memory); readers wait when it is full.
        max_wait_ms: How long a partial batch waits for more frames before it runs (live cameras).
        keep_images: Hand each frame's image to the consumer with its detections (drawing, tracking by
            appearance); off, results hold only detections.
        masks: Carry a segmentation model's instance masks into the results, scaled to the frame (a frame-sized
            boolean array per detection: costly at video rates); off, seg results hold their boxes. A pose
            model's keypoints are always carried. Tiled runs merge boxes only (a tile's masks and keypoints are
            dropped).
    """

    batch_size: int = 1
    pad_batch: bool = True
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    classes: tuple[int, ...] | None = None
    tiles: TileConfig | None = None
    queue_size: int = 8
    max_wait_ms: float = 5.0
    keep_images: bool = True
    masks: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.queue_size < 1 or self.max_wait_ms < 0:
            msg = (
                f"StreamConfig needs batch_size >= 1, queue_size >= 1, max_wait_ms >= 0; got "
                f"batch_size={self.batch_size}, queue_size={self.queue_size}, max_wait_ms={self.max_wait_ms}"
            )
            raise ConfigError(msg)
        if not (0.0 <= self.conf < 1.0 and 0.0 < self.iou <= 1.0 and self.max_det >= 1):
            msg = (
                "StreamConfig needs 0 <= conf < 1, 0 < iou <= 1, max_det >= 1; "
                f"got conf={self.conf}, iou={self.iou}, max_det={self.max_det}"
            )
            raise ConfigError(msg)


@dataclass(frozen=True, eq=False)
class FrameResult:
    """One frame's outcome.

    Attributes:
        stream: Index of its source. index: Frame number in that stream, from 0.
        image: The frame (BGR), when ``keep_images`` and it decoded.
        detections: In frame pixels; None when the frame was skipped (see ``error``).
        error: Why it was skipped (decode failure, size change, truncated file), else None.
        timings_ms: This frame's ``read``, ``wait`` (queued), ``preprocess``, ``infer`` (its share of the batch)
            and ``postprocess`` milliseconds.
    """

    stream: int
    index: int
    image: np.ndarray | None = field(repr=False)
    detections: Detections | None
    error: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(eq=False)
class _Unit:
    """One engine input: a frame, or one tile of it."""

    slot: int
    tile: int
    pixels: Any  # uint8 [3, H, W]: numpy, or a device tensor in a GPU runner
    meta: LetterboxMeta


class _End:
    """A reader's last item: its stream ended (or failed with ``error``)."""

    def __init__(self, stream: int, error: BaseException | None = None) -> None:
        self.stream, self.error = stream, error


class StreamRunner:
    """Runs frames of one or more video sources through an engine and delivers :class:`FrameResult` in order.

    Args:
        engine: Any yoloquant engine (``build_engine(...)``, ``PipelineResult.engine("int8")``); the runner
            does not close it.
        sources: One source or several (cameras): video paths, URLs, camera indices, or
            :class:`~yoloquant.stream.source.FrameSource` objects.
        config: Options (:class:`StreamConfig`); keyword ``changes`` override its fields.

    Raises:
        DataError: When a source cannot be opened (at construction).
        ConfigError: Bad options, or ``batch_size > 1`` on an engine with a fixed batch.

    Example:
        >>> with build_engine(OnnxModel.load("yolov8n.onnx"), Backend.ORT_CPU) as engine:  # doctest: +SKIP
        ...     runner = StreamRunner(engine, "video.mp4", classes=(0,))
        ...     for r in runner:
        ...         print(r.index, len(r.detections or ()))
        ...     print(runner.stats.table())
    """

    def __init__(
        self,
        engine: Engine,
        sources: SourceInput | Sequence[SourceInput],
        config: StreamConfig | None = None,
        **changes: Any,
    ) -> None:
        try:
            self.config = dataclasses.replace(config or StreamConfig(), **changes)
        except TypeError as exc:
            names = [f.name for f in dataclasses.fields(StreamConfig)]
            msg = f"unknown StreamRunner option in {sorted(changes)}; StreamConfig has {names}"
            raise ConfigError(msg) from exc
        if self.config.batch_size > 1 and not self._batches(engine):
            msg = (
                f"batch_size={self.config.batch_size} needs an engine with a dynamic batch; this one has a fixed "
                "batch of 1: export with QuantPipeline.from_ultralytics(..., dynamic=True), or use batch_size=1"
            )
            raise ConfigError(msg)
        if engine.info.imgsz[0] != engine.info.imgsz[1]:
            msg = f"StreamRunner letterboxes to a square input; the model's imgsz is {engine.info.imgsz}"
            raise InferenceError(msg)
        self.engine = engine
        items = (
            [sources] if isinstance(sources, FrameSource | str | int) or not isinstance(sources, Sequence) else sources
        )
        self.sources: list[FrameSource] = []
        try:
            for item in items:
                self.sources.append(open_source(item))
        except BaseException:
            for opened in self.sources:  # a camera opened before the failing URL is released now
                opened.close()
            raise
        self.stats = StreamStats(streams=len(self.sources))
        self._stop = threading.Event()
        self._frames: queue.Queue[Frame | _End] = queue.Queue(self.config.queue_size * len(self.sources))
        self._results: queue.Queue[FrameResult | _End | BaseException] = queue.Queue(self.config.queue_size)
        self._threads: list[threading.Thread] = []
        self._shapes: dict[int, tuple[int, ...]] = {}
        self._started = False

    def stop(self) -> None:
        """Ask every thread to stop; iteration ends after the results already delivered. Safe from any thread."""
        self._stop.set()

    def run(self, callback: Callable[[FrameResult], object] | None = None) -> StreamStats:
        """Run to the end of every stream (or Ctrl-C / :meth:`stop`), calling ``callback`` on each result.

        Ctrl-C stops cleanly: threads end, sources close, and the stats so far come back with ``interrupted``.
        """
        results = iter(self)
        try:
            for result in results:
                if callback is not None:
                    callback(result)
        except KeyboardInterrupt:
            self.stats.interrupted = True
        finally:
            results.close()  # stops the threads and releases the sources now, not when garbage-collected
        return self.stats

    def __iter__(self) -> Generator[FrameResult, None, None]:
        if self._started:
            msg = "a StreamRunner runs once; make a new one (sources are read as they play)"
            raise ConfigError(msg)
        self._started = True
        self._start_threads()
        ended = 0
        try:
            while ended < len(self.sources) or not self._results.empty():
                item = self._get(self._results)
                if item is None:
                    if self._stop.is_set() and not any(t.is_alive() for t in self._threads):
                        return
                    continue
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, _End):
                    ended = len(self.sources)  # the engine thread's end marker: every stream is done
                    continue
                self.stats.add(item)
                yield item
        finally:
            self._shutdown()

    # threads -------------------------------------------------------------------------------------------------

    def _start_threads(self) -> None:
        self.stats.start()
        for i, src in enumerate(self.sources):
            t = threading.Thread(target=self._read, args=(i, src), name=f"yoloquant-read-{i}", daemon=True)
            self._threads.append(t)
        self._threads.append(threading.Thread(target=self._serve, name="yoloquant-engine", daemon=True))
        for t in self._threads:
            t.start()

    def _shutdown(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5.0)
        for src in self.sources:
            src.close()
        self.stats.finish()

    def _put(self, q: queue.Queue[Any], item: object) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
            except queue.Full:
                continue
            return True
        return False

    def _get(self, q: queue.Queue[Any], timeout: float = _POLL_S) -> Any:
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            return None

    def _read(self, stream: int, source: FrameSource) -> None:
        error: BaseException | None = None
        try:
            for frame in source.frames(stream):
                if not self._put(self._frames, frame):
                    return
        except Exception as exc:
            error = exc
        self._put(self._frames, _End(stream, error))

    def _serve(self) -> None:
        try:
            live = len(self.sources)
            while live and not self._stop.is_set():
                group, ended = self._collect()
                live -= len(ended)
                for end in ended:
                    if end.error is not None:
                        self._put(self._results, end.error)
                        return
                for result in self._process(group):
                    if not self._put(self._results, result):
                        return
            self._put(self._results, _End(-1))
        except BaseException as exc:
            self._put(self._results, exc)

    def _collect(self) -> tuple[list[Frame], list[_End]]:
        """Frames for one round of batches: until ``batch_size`` units, the queue runs dry, or a stream ends."""
        group: list[Frame] = []
        ended: list[_End] = []
        units, deadline = 0, None
        while units < self.config.batch_size and not self._stop.is_set():
            wait = _POLL_S if deadline is None else max(deadline - time.perf_counter(), 0.0)
            item = self._get(self._frames, wait) if wait > 0 else self._get_nowait()
            if item is None:
                if group and (deadline is None or time.perf_counter() >= deadline):
                    break
                continue
            if isinstance(item, _End):
                ended.append(item)
                break
            group.append(item)
            units += len(self._tiles_of(item))
            if deadline is None:
                deadline = time.perf_counter() + self.config.max_wait_ms / 1e3
        return group, ended

    def _get_nowait(self) -> Frame | _End | None:
        try:
            return self._frames.get_nowait()
        except queue.Empty:
            return None

    def _tiles_of(self, frame: Frame | None) -> list[tuple[int, int, int, int]]:
        if frame is None or frame.image is None or self.config.tiles is None:
            return [(0, 0, 0, 0)]
        h, w = frame.image.shape[:2]
        return tile_grid(h, w, self.config.tiles)

    # the engine's work ---------------------------------------------------------------------------------------

    def _process(self, group: list[Frame]) -> list[FrameResult]:
        imgsz = self.engine.info.imgsz[0]
        t0 = time.perf_counter()
        errors: dict[int, str] = {}
        units: list[_Unit] = []
        tiles: dict[int, list[tuple[int, int, int, int]]] = {}
        for slot, frame in enumerate(group):
            image = self._check(frame, errors, slot)
            if image is None:
                continue
            h, w = image.shape[:2]
            tiles[slot] = tile_grid(h, w, self.config.tiles) if self.config.tiles else [(0, 0, h, w)]
            for k, (pixels, meta) in enumerate(self._letterbox(image, tiles[slot], imgsz)):
                units.append(_Unit(slot, k, pixels, meta))
        pre_ms = (time.perf_counter() - t0) * 1e3
        parts, infer_ms, post_ms = self._infer(units)
        return [
            self._result(
                frame,
                errors.get(slot),
                [parts[(slot, k)] for k in range(len(tiles[slot]))] if slot in tiles else [],
                tiles.get(slot, []),
                timings={
                    "read": frame.read_ms,
                    "wait": max(t0 - frame.time, 0.0) * 1e3,
                    "preprocess": pre_ms / len(group),
                    "infer": infer_ms.get(slot, 0.0),
                    "postprocess": post_ms.get(slot, 0.0),
                },
            )
            for slot, frame in enumerate(group)
        ]

    def _check(self, frame: Frame, errors: dict[int, str], slot: int) -> np.ndarray | None:
        if frame.image is None:
            errors[slot] = frame.error or f"stream {frame.stream} frame {frame.index} has no image; skipped"
            return None
        try:
            image = as_bgr(frame.image, f"stream {frame.stream} frame {frame.index}")
        except YoloQuantError as exc:
            errors[slot] = f"{exc}; skipped"
            return None
        first = self._shapes.setdefault(frame.stream, image.shape)
        if image.shape != first:
            errors[slot] = (
                f"stream {frame.stream} frame {frame.index} is {image.shape[1]}x{image.shape[0]}, the stream's "
                f"frames are {first[1]}x{first[0]}: a frame of another size mid-stream; skipped"
            )
            return None
        return image

    def _infer(
        self, units: list[_Unit]
    ) -> tuple[dict[tuple[int, int], Detections], dict[int, float], dict[int, float]]:
        cfg = self.config
        parts: dict[tuple[int, int], Detections] = {}
        infer_ms: dict[int, float] = {}
        post_ms: dict[int, float] = {}
        for start in range(0, len(units), cfg.batch_size):
            chunk = units[start : start + cfg.batch_size]
            t0 = time.perf_counter()
            outputs = self._run_batch([u.pixels for u in chunk])
            t1 = time.perf_counter()
            dets = self._decode(outputs)[: len(chunk)]
            for u, d in zip(chunk, dets, strict=False):
                keep = np.flatnonzero(np.isin(d.classes, cfg.classes)) if cfg.classes is not None else slice(None)
                kept = d.select(keep)
                if kept.masks is not None and not (cfg.masks and cfg.tiles is None):
                    kept = dataclasses.replace(kept, masks=None)  # not asked for: skip scaling them
                parts[(u.slot, u.tile)] = scale_detections(kept, u.meta)
            t2 = time.perf_counter()
            for u in chunk:  # a frame's share of each batch its units ran in
                infer_ms[u.slot] = infer_ms.get(u.slot, 0.0) + (t1 - t0) * 1e3 / len(chunk)
                post_ms[u.slot] = post_ms.get(u.slot, 0.0) + (t2 - t1) * 1e3 / len(chunk)
        return parts, infer_ms, post_ms

    # what a GPU runner (:mod:`yoloquant.stream.gpu`) does on the device instead --------------------------------

    def _batches(self, engine: Engine) -> bool:
        """Whether ``engine`` takes batches above 1."""
        return bool(engine.info.dynamic_batch)

    def _letterbox(self, image: np.ndarray, grid: list[tuple[int, int, int, int]], imgsz: int) -> list[Any]:
        """The engine inputs of one frame: its letterboxed tiles (or the whole frame) and their metadata."""
        crops = [image] if self.config.tiles is None else [image[y1:y2, x1:x2] for y1, x1, y2, x2 in grid]
        return [preprocess(crop, imgsz, mode="predict") for crop in crops]

    def _run_batch(self, pixels: list[Any]) -> Any:
        """One engine call on these units' pixels, padded to ``batch_size`` when ``pad_batch``."""
        cfg = self.config
        batch = np.stack(pixels)
        if cfg.pad_batch and len(pixels) < cfg.batch_size:
            pad = np.full((cfg.batch_size - len(pixels), *batch.shape[1:]), 114, np.uint8)
            batch = np.concatenate([batch, pad])
        return self.engine.infer(normalize_pixels(batch))

    def _decode(self, outputs: Any) -> list[Detections]:
        cfg = self.config
        return decode(outputs, self.engine.info, conf=cfg.conf, iou=cfg.iou, max_det=cfg.max_det, multi_label=False)

    def _result(
        self,
        frame: Frame,
        error: str | None,
        found: list[Detections],
        grid: list[tuple[int, int, int, int]],
        *,
        timings: dict[str, float],
    ) -> FrameResult:
        if error is not None:
            return FrameResult(frame.stream, frame.index, None, None, error, timings)
        names = self.engine.info.names
        if len(grid) == 1:
            dets = dataclasses.replace(found[0], names=names)  # masks (when asked for) and keypoints too
        else:
            t1 = time.perf_counter()
            merge_iou = self.config.tiles.merge_iou if self.config.tiles else 0.5
            merged = merge_tiles(found, grid, iou=merge_iou, max_det=self.config.max_det)
            dets = Detections(merged.boxes, merged.scores, merged.classes, names=names)
            timings["postprocess"] += (time.perf_counter() - t1) * 1e3
        image = frame.image if self.config.keep_images else None
        return FrameResult(frame.stream, frame.index, image, dets, None, timings)
