"""Test doubles of a sweep's work that run in Ray worker processes, named as such: a runner that fakes a variant
(no model), one that dies or fails on cue, and small task functions. Top-level and stateless, so Ray pickles
them by reference; each remembers what it did in files (a worker's memory dies with it)."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from yoloquant.eval.bootstrap import Metric
from yoloquant.pipeline import QuantPipeline
from yoloquant.report.result import PipelineResult, VariantResult

__all__ = ["FakeVariantRunner", "HoldThenRun", "die_first_time", "double", "lines", "sleep_then_mark"]


def _log(path: Path, line: str) -> None:
    """Append one line in one write (O_APPEND): several processes log to the same file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def double(x: int) -> int:
    return 2 * x


def die_first_time(marks: Path, x: int) -> tuple[int, int]:
    """SIGKILLs its own worker the first time it sees ``x``; returns ``(x, pid)`` on a later try."""
    mark = marks / f"tried-{x}"
    if not mark.exists():
        _log(mark, str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return x, os.getpid()


def sleep_then_mark(marks: Path, x: int) -> int:
    """Returns 0 at once; any other ``x`` sleeps 30 s, then marks itself finished: a task that a cancelled map
    must never finish. Logs each start, and ``x`` with its worker's pid."""
    _log(marks / "started", str(x))
    _log(marks / "pids", f"{x} {os.getpid()}")
    if x == 0:
        return 0
    time.sleep(30)
    _log(marks / "finished", str(x))
    return x


@dataclass(frozen=True)
class FakeVariantRunner:
    """A sweep runner that makes no model: mAP falls with the variant's position in ``order`` (so the
    ledger and the Pareto front are known in advance) and every finished run is logged to ``log``.

    ``hold`` (a variant name): that run writes ``<log>.pid-<name>`` and waits up to 20 s for the file
    ``<log>.release`` (a test kills it meanwhile, or releases it). ``fail``: those variants always raise.
    """

    log: Path
    order: tuple[str, ...]
    hold: str | None = None
    fail: tuple[str, ...] = ()
    seconds: float = 0.0

    def __call__(self, plan: QuantPipeline, folder: Path) -> PipelineResult:
        name = plan.variants[-1].name
        _log(Path(f"{self.log}.started"), f"{name} {os.getpid()}")
        if name in self.fail:
            msg = f"{name}: the fake quantizer always fails"
            raise RuntimeError(msg)
        if name == self.hold:
            _log(Path(f"{self.log}.pid-{name}"), str(os.getpid()))
            release = Path(f"{self.log}.release")
            deadline = time.monotonic() + 20
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(self.seconds)
        value = 0.5 - 0.01 * self.order.index(name)
        metrics = {"map50_95": Metric(value=value), "map50": Metric(value=value + 0.1)}
        v = VariantResult(
            name=name,
            precision="int8",
            backend="ort-cpu",
            model_path=f"{folder}/m.onnx",
            size_bytes=1,
            metrics=metrics,
        )
        _log(self.log, f"{name} {os.getpid()}")
        return PipelineResult(variants=(v,), config={}, versions={}, inputs={}, out_dir=str(folder), created="now")


@dataclass(frozen=True)
class HoldThenRun:
    """A real runner (``plan.run(folder)``) that first holds ``hold``'s run like :class:`FakeVariantRunner`
    does, so a test can kill its worker in the middle of a real variant (the model half made)."""

    log: Path
    hold: str

    def __call__(self, plan: QuantPipeline, folder: Path) -> PipelineResult:
        name = plan.variants[-1].name
        _log(Path(f"{self.log}.started"), f"{name} {os.getpid()}")
        if name == self.hold:
            _log(Path(f"{self.log}.pid-{name}"), str(os.getpid()))
            release = Path(f"{self.log}.release")
            deadline = time.monotonic() + 60
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return plan.run(folder)
