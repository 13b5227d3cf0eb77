"""Frame sources: a video file, a camera index, any URL OpenCV opens, or an iterable of arrays.

A source yields :class:`Frame` objects in order. A frame that cannot be decoded is yielded with ``image=None``
and an ``error`` saying why, so the runner reports it and goes on; only a source that cannot be opened at all
raises (:class:`~yoloquant.errors.DataError`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from yoloquant._optional import require
from yoloquant.errors import ConfigError, DataError

__all__ = ["ArraySource", "Frame", "FrameSource", "SourceInput", "VideoSource", "open_source"]

# Consecutive failed reads after which a file is taken to be truncated / corrupt and the stream ends.
_MAX_BAD_READS = 8


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame of one stream.

    Attributes:
        stream: Index of the source among the runner's sources.
        index: Frame number in its stream, from 0 (a skipped frame keeps its number).
        image: BGR uint8 ``[H, W, 3]``, or None when the frame could not be decoded (see ``error``).
        read_ms: Time spent reading and decoding it.
        error: Why the frame has no image (or was skipped), else None.
        time: ``time.perf_counter()`` when it was read (the runner times the queue wait from it).
    """

    stream: int
    index: int
    image: np.ndarray | None = field(repr=False)
    read_ms: float = 0.0
    error: str | None = None
    time: float = field(default_factory=time.perf_counter)


class FrameSource:
    """Base of the sources: ``name``, ``fps`` (None when unknown), iteration yields :class:`Frame`."""

    name: str = "source"
    fps: float | None = None

    def frames(self, stream: int) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file; idempotent."""


class VideoSource(FrameSource):
    """Frames from ``cv2.VideoCapture``: a video file, a camera index (``0``) or a URL (rtsp://, http://...).

    Args:
        source: A path, a camera index, or a URL.
        loop: Start a file again at its end (for soak tests); a camera or URL ignores it.
        max_frames: Stop after this many frames (None: the whole stream).
        start: First frame of a file to read (a seek); frame numbers count from the file's start.

    Raises:
        DataError: At :meth:`open` (called by the runner, or by iteration), when OpenCV cannot open it.

    Example:
        >>> src = VideoSource("assets/video/one-by-one-person.mp4")  # doctest: +SKIP
        >>> src.open().size  # doctest: +SKIP
        (768, 432)
    """

    def __init__(
        self, source: str | Path | int, *, loop: bool = False, max_frames: int | None = None, start: int = 0
    ) -> None:
        if (max_frames is not None and max_frames < 1) or start < 0:
            msg = f"max_frames must be >= 1 or None and start >= 0, got max_frames={max_frames}, start={start}"
            raise ConfigError(msg)
        self.source, self.loop, self.max_frames, self.start = source, loop, max_frames, start
        self.name = str(source)
        self._cap: Any = None
        self.size: tuple[int, int] | None = None  # (width, height) once opened
        self.frame_count: int | None = None  # what the container declares (files only)

    def open(self) -> VideoSource:
        if self._cap is not None:
            return self
        cv2 = require("cv2")
        if isinstance(self.source, Path | str) and not _is_url(str(self.source)) and not Path(self.source).exists():
            msg = f"video file {self.source} does not exist; pass a video file, a camera index or a URL"
            raise DataError(msg)
        cap = cv2.VideoCapture(self.source if isinstance(self.source, int) else str(self.source))
        if not cap.isOpened():
            cap.release()
            msg = (
                f"OpenCV cannot open video source {self.source!r} (not a readable video file, camera or stream URL); "
                "check the path / URL and that OpenCV's FFmpeg backend is installed (cv2.getBuildInformation())"
            )
            raise DataError(msg)
        self._cap = cap
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if fps > 0 else None
        self.size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 and self._is_file else None
        if self.start and self._is_file:
            cap.set(cv2.CAP_PROP_POS_FRAMES, self.start)
        return self

    @property
    def _is_file(self) -> bool:
        return not isinstance(self.source, int) and not _is_url(str(self.source))

    def frames(self, stream: int) -> Iterator[Frame]:
        cv2 = require("cv2")
        self.open()
        first = index = in_pass = self.start if self._is_file else 0
        while self.max_frames is None or index - first < self.max_frames:
            t0 = time.perf_counter()
            ok, image = self._read()
            ms = (time.perf_counter() - t0) * 1e3
            if ok:
                in_pass += 1
                yield Frame(stream, index, image, ms)
                index += 1
                continue
            failed = self._retry()
            if failed is not None and failed[0]:  # a later frame decoded: the failed ones were skipped
                for _ in range(failed[1]):
                    yield Frame(
                        stream, index, None, ms, error=f"{self.name}: frame {index} could not be decoded; skipped"
                    )
                    index += 1
                in_pass += failed[1] + 1
                yield Frame(stream, index, failed[2], ms)
                index += 1
                continue
            if self.frame_count is not None and self.frame_count - in_pass > 2:
                msg = (
                    f"{self.name}: no frame could be decoded after frame {index} of the {self.frame_count} the file "
                    "declares: the file is truncated or corrupt; the stream ends here"
                )
                yield Frame(stream, index, None, ms, error=msg)
                return
            if not (self.loop and self._is_file and in_pass > 0):
                return  # end of stream: a file read to its end, a camera or URL closed
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            in_pass = 0

    def _read(self) -> tuple[bool, np.ndarray | None]:
        ok, image = self._cap.read()
        return (bool(ok) and image is not None), (image if ok else None)

    def _retry(self) -> tuple[bool, int, np.ndarray | None] | None:
        """After a failed read of a file: read on; (True, reads that failed, image) once one decodes."""
        if not self._is_file or self.frame_count is None:
            return None
        for failed in range(1, _MAX_BAD_READS):
            ok, image = self._read()
            if ok:
                return True, failed, image
        return None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ArraySource(FrameSource):
    """Frames from any iterable of BGR arrays (your own decoder, a list in a test); a None item is a decode error.

    Example:
        >>> frames = list(ArraySource([np.zeros((4, 4, 3), np.uint8), None]).frames(0))
        >>> [f.error is None for f in frames]
        [True, False]
    """

    def __init__(self, images: Iterable[np.ndarray | None], *, name: str = "arrays", fps: float | None = None) -> None:
        self.images, self.name, self.fps = images, name, fps

    def frames(self, stream: int) -> Iterator[Frame]:
        it = iter(self.images)
        index = 0
        while True:
            t0 = time.perf_counter()
            try:
                image = next(it)
            except StopIteration:
                return
            ms = (time.perf_counter() - t0) * 1e3
            if image is None:
                yield Frame(
                    stream, index, None, ms, error=f"{self.name}: frame {index} is None (decode failed); skipped"
                )
            else:
                yield Frame(stream, index, np.asarray(image), ms)
            index += 1


SourceInput: TypeAlias = FrameSource | str | Path | int
"""What :func:`open_source` takes: a source object, a video path, a URL, or a camera index."""


def open_source(source: SourceInput) -> FrameSource:
    """A :class:`FrameSource` for a source object, a video path, a URL or a camera index (opened now).

    Raises:
        DataError: When OpenCV cannot open a path, URL or camera.
    """
    if isinstance(source, FrameSource):
        if isinstance(source, VideoSource):
            source.open()
        return source
    if isinstance(source, bool) or not isinstance(source, str | Path | int):
        msg = f"a video source is a path, URL, camera index or FrameSource, got {type(source).__name__}"
        raise ConfigError(msg)
    return VideoSource(source).open()


def _is_url(text: str) -> bool:
    return "://" in text
