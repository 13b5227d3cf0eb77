"""Streaming video through an engine: sources, tiles, a batching runner with bounded queues, timings.

Example:
    >>> from yoloquant.stream import StreamRunner
    >>> with PipelineResult.load("runs/demo").engine("int8") as engine:  # doctest: +SKIP
    ...     for r in StreamRunner(engine, ["cam0.mp4", "rtsp://cam1/stream"], batch_size=2, classes=(0,)):
    ...         print(r.stream, r.index, len(r.detections or ()))
"""

from __future__ import annotations

from yoloquant.stream.gpu import GpuStreamRunner
from yoloquant.stream.runner import FrameResult, StreamConfig, StreamRunner
from yoloquant.stream.source import ArraySource, Frame, FrameSource, VideoSource, open_source
from yoloquant.stream.stats import StreamStats
from yoloquant.stream.tiles import TileConfig, merge_tiles, tile_grid

__all__ = [
    "ArraySource",
    "Frame",
    "FrameResult",
    "FrameSource",
    "GpuStreamRunner",
    "StreamConfig",
    "StreamRunner",
    "StreamStats",
    "TileConfig",
    "VideoSource",
    "merge_tiles",
    "open_source",
    "tile_grid",
]
