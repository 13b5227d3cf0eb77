"""Where a sweep's variants run: the executor seam between the sweep (the driver) and the work.

The driver (:class:`~yoloquant.decide.sweep.Sweep`) owns the sweep folder and its append-only ledger: it
makes one :class:`VariantJob` per variant not yet in the ledger, hands them to an :class:`Executor`, and
writes each ledger line itself as results come back. A job is plain data (a one-variant
:class:`~yoloquant.QuantPipeline` and its folder) and the work a top-level function
(:func:`run_job` with a top-level runner such as :func:`run_plan`), so an executor may pickle both and run
each job as an independent task on another process or machine (a Ray executor: one task per job, results
in completion order: :class:`~yoloquant.decide.ray_executor.RayExecutor`). :class:`LocalExecutor`, the
default, runs them here, one after the other.

Two optional members, which the sweep uses where an executor has them: ``parallelism`` (how many items run at
once, for the progress bar's "running"; 1 without it) and ``run_timing(fn)`` (where the latency phase runs:
``fn()`` on the hardware that will serve; in the driver's process without it).

Example:
    >>> jobs = [VariantJob(name="fp32", plan=plan, folder=Path("runs/sweep/fp32"))]  # doctest: +SKIP
    >>> for job, outcome in LocalExecutor().map(partial(run_job, run_plan), jobs):  # doctest: +SKIP
    ...     print(job.name, outcome)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from yoloquant.decide.sweep import SweepVariant
    from yoloquant.pipeline import QuantPipeline
    from yoloquant.report.result import PipelineResult

__all__ = ["Executor", "LocalExecutor", "Runner", "VariantJob", "VariantRun", "closing_map", "run_job", "run_plan"]

T = TypeVar("T")
R = TypeVar("R")

Runner = Callable[["QuantPipeline", Path], "PipelineResult"]


class Executor(Protocol):
    """Runs ``fn`` on each item and yields ``(item, result)``, or ``(item, exception)`` for an item whose ``fn``
    raised, as each finishes (in any order). The caller may stop iterating at any point."""

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | Exception]]: ...


def closing_map(executor: Executor, fn: Callable[[T], R], items: list[T]) -> Iterator[tuple[T, R | Exception]]:
    """``executor.map(fn, items)``, closed as soon as the caller stops (an error, Ctrl-C), which cancels the work
    still out (a Ray executor's tasks) instead of leaving that to the garbage collector. Nothing for no items."""
    if not items:
        return
    results = executor.map(fn, items)
    try:
        yield from results
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True)
class LocalExecutor:
    """Run every item in this process, one after the other, in order: the sweep's default."""

    parallelism = 1

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | Exception]]:
        for item in items:
            try:
                result: R | Exception = fn(item)
            except Exception as exc:  # handed to the driver, which decides (a sweep re-raises it)
                result = exc
            yield item, result

    def run_timing(self, fn: Callable[[], R]) -> R:
        """The latency phase runs here."""
        return fn()


@dataclass(frozen=True)
class VariantJob:
    """One variant of a sweep: its name, its one-variant pipeline and the folder it runs into."""

    name: str
    plan: QuantPipeline
    folder: Path
    variant: SweepVariant | None = None  # its grid point; None for an FP32 baseline


@dataclass(frozen=True)
class VariantRun:
    """What a job sends back to the driver: the variant's pipeline result and how long it took."""

    result: PipelineResult
    seconds: float


def run_plan(plan: QuantPipeline, folder: Path) -> PipelineResult:
    """The default runner: ``plan.run(folder)``."""
    return plan.run(folder)


def run_job(runner: Runner, job: VariantJob) -> VariantRun:
    """Run ``job`` with ``runner``, timed: the work an executor ships (``functools.partial(run_job, runner)``)."""
    start = time.perf_counter()
    result = runner(job.plan, job.folder)
    return VariantRun(result=result, seconds=time.perf_counter() - start)
