"""``StreamStats``: frames, skips, rate and per-stage timings of a stream run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yoloquant.stream.runner import FrameResult

__all__ = ["STAGES", "StreamStats"]

STAGES = ("read", "wait", "preprocess", "infer", "postprocess")


@dataclass(eq=False)
class StreamStats:
    """What a :class:`~yoloquant.stream.runner.StreamRunner` has done so far (updated as results are delivered).

    Attributes:
        streams: Number of sources. frames: Results delivered (skipped ones too). skipped: Results with an error.
        errors: The first 20 error messages. interrupted: Ctrl-C stopped the run.
        stage_ms: Sum of each stage's milliseconds over the delivered frames (``mean_ms`` divides).
    """

    streams: int = 1
    frames: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False
    stage_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    started: float | None = None
    finished: float | None = None

    def start(self) -> None:
        self.started = time.perf_counter()

    def finish(self) -> None:
        self.finished = time.perf_counter()

    def add(self, result: FrameResult) -> None:
        self.frames += 1
        if result.error is not None:
            self.skipped += 1
            if len(self.errors) < 20:
                self.errors.append(result.error)
        for k, v in result.timings_ms.items():
            self.stage_ms[k] = self.stage_ms.get(k, 0.0) + v

    @property
    def seconds(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.perf_counter()) - self.started

    @property
    def fps(self) -> float:
        """Frames delivered per second of wall time, all streams together."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def mean_ms(self) -> dict[str, float]:
        """Each stage's mean milliseconds per delivered frame."""
        return {k: v / self.frames if self.frames else 0.0 for k, v in self.stage_ms.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "streams": self.streams,
            "frames": self.frames,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2),
            "mean_ms": {k: round(v, 2) for k, v in self.mean_ms().items()},
            "interrupted": self.interrupted,
            "errors": list(self.errors),
        }

    def table(self) -> str:
        """One line: frames, skips, fps and each stage's mean milliseconds."""
        stages = "  ".join(f"{k} {v:.1f}" for k, v in self.mean_ms().items())
        head = f"{self.frames} frames ({self.skipped} skipped) in {self.seconds:.1f} s = {self.fps:.1f} fps"
        return f"{head} | ms/frame: {stages}"
