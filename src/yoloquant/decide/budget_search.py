"""The budget search's questions, and where its candidate models are measured: here, or on an executor.

The search (:func:`tries`: k = 1, 2, 4, ... then bisection) asks "does keeping the k most sensitive groups
float meet the budget?" one k at a time, each question depending on the answers before. :class:`Candidates`
answers them. Without an executor it builds and measures each asked k here, one after the other. On an
:class:`~yoloquant.decide.executor.Executor` with room for P tasks it measures, as one batch, the k asked
together with the ks the search would ask next after either answer (:func:`ahead`: breadth-first over its
decision tree, a failed step first, since early steps mostly fail), and keeps what comes back. The search
still asks the same ks in the same order as in one process and reads only those, so it chooses the same k
and makes the same model; what was measured and never asked is dropped (``Candidates.unasked``).

Example:
    >>> ahead(8, {}, width=3)  # k = 1; 2 if that fails (if it passes, the search ends); 4 if both fail
    [1, 2, 4]
    >>> ahead(8, {1: False, 2: False}, width=2)  # 8 if 4 fails, else bisect: 3
    [4, 8]
"""

from __future__ import annotations

import shutil
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from yoloquant.decide.executor import Executor, closing_map

if TYPE_CHECKING:
    from yoloquant.decide._ortcache import SharedCalibration
    from yoloquant.decide.evaluator import Evaluate
    from yoloquant.eval.coco import EvalResult

__all__ = ["Candidates", "ahead", "next_question", "tries"]


def tries(n: int, passes: Callable[[int], bool]) -> None:
    """Exponential then binary search for the smallest k in 1..n with passes(k); passes caches."""
    k, lo = 1, 0
    while k < n and not passes(k):
        lo, k = k, min(2 * k, n)
    if not passes(k):
        return
    hi = k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid


class _Unanswered(Exception):
    def __init__(self, k: int) -> None:
        self.k = k


def next_question(n: int, known: Mapping[int, bool]) -> int | None:
    """The first k the search over ``n`` groups asks whose answer is not in ``known``; None once it is done."""

    def passes(k: int) -> bool:
        if k in known:
            return known[k]
        raise _Unanswered(k)

    try:
        tries(n, passes)
    except _Unanswered as asked:
        return asked.k
    return None


def ahead(n: int, known: Mapping[int, bool], *, width: int) -> list[int]:
    """Up to ``width`` ks to measure at once: the next question, then the questions after each possible answer
    (breadth-first, the failing answer first). Empty once the search needs nothing more."""
    out: list[int] = []
    queue: deque[dict[int, bool]] = deque([dict(known)])
    while queue and len(out) < width:
        answers = queue.popleft()
        k = next_question(n, answers)
        if k is None:
            continue
        if k not in out:
            out.append(k)
        queue.extend(({**answers, k: False}, {**answers, k: True}))
    return out


@dataclass(frozen=True)
class _Candidate:
    """One model to measure: the FP32 model (``k`` None), or the k most sensitive groups float."""

    k: int | None
    nodes: tuple[str, ...] = ()

    @property
    def name(self) -> str:  # the executor's name for it in an error
        return "the FP32 model" if self.k is None else f"the budget candidate with {self.k} groups float"


def _measure(shared: SharedCalibration, evaluate: Evaluate, float_mode: str, work: Path, job: _Candidate) -> EvalResult:
    """One candidate as an executor task: built from the shared ranges in a folder of its own, removed after."""
    if job.k is None:
        return evaluate(shared.model)
    folder = work / f"candidate-{job.k:04d}"
    try:
        built = shared.in_folder(folder).build(
            job.nodes, folder / f"float-{job.k}.onnx", metadata=False, float_mode=float_mode
        )
        return evaluate(built)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class Candidates:
    """Measures the search's candidates: here one at a time (``executor`` None), or in batches on ``executor``.

    Args:
        shared: The calibration every candidate is quantized from.
        evaluate: Measures a model on the search images (on a worker, with an executor: it is pickled).
        max_map_drop: The budget a candidate passes within, in mAP points vs the FP32 model.
        float_mode: ``exclude`` or ``dequantize`` (see :meth:`SharedCalibration.build`).
        work: Work folder; with an executor, a folder every worker reads and writes at the same path.
        executor: Where candidates are measured; None: here.
    """

    def __init__(
        self,
        shared: SharedCalibration,
        evaluate: Evaluate,
        *,
        max_map_drop: float,
        float_mode: str,
        work: Path,
        executor: Executor | None = None,
    ) -> None:
        self.shared, self.evaluate, self.float_mode, self.work = shared, evaluate, float_mode, work
        self.executor, self.max_map_drop, self._fp32 = executor, max_map_drop, float("nan")
        self.width = max(1, int(getattr(executor, "parallelism", 1))) if executor is not None else 1
        self._ahead: dict[int, EvalResult] = {}  # measured, not yet asked
        self.batches: list[list[int]] = []  # the ks each executor batch measured, for the log and tests

    @property
    def unasked(self) -> list[int]:
        """Candidates measured ahead that the search never asked about."""
        return sorted(self._ahead)

    def baseline_and_int8(self) -> tuple[EvalResult, EvalResult]:
        """The FP32 model's and the full INT8 model's results (both at once on an executor)."""
        if self.executor is None:
            base, int8 = self.evaluate(self.shared.model), self._here(0, ())
        else:
            got = self._run([_Candidate(None), _Candidate(0)])
            base, int8 = got[None], got[0]
        self._fp32 = base.primary
        return base, int8

    def passes(self, result: EvalResult) -> bool:
        """Whether ``result`` is within ``max_map_drop`` points of the FP32 model's (``baseline_and_int8`` first)."""
        return (self._fp32 - result.primary) * 100 <= self.max_map_drop

    def result(self, k: int, nodes: Callable[[int], list[str]], n: int, known: Mapping[int, bool]) -> EvalResult:
        """The result of keeping the ``k`` most sensitive of ``n`` groups float (``nodes(k)``); on an executor,
        measured in a batch with the ks the search may ask next (``known``: its answers so far)."""
        if self.executor is None:
            return self._here(k, nodes(k))
        if k not in self._ahead:
            answered = {**known, **{j: self.passes(r) for j, r in self._ahead.items()}}
            batch = [k, *(j for j in ahead(n, answered, width=self.width) if j != k)][: self.width]
            got = self._run([_Candidate(j, tuple(nodes(j))) for j in batch])
            self._ahead.update((j, got[j]) for j in batch)
        return self._ahead.pop(k)

    def _here(self, k: int, nodes: list[str] | tuple[str, ...]) -> EvalResult:
        path = self.work / f"float-{k}.onnx"
        built = self.shared.build(nodes, path, metadata=False, float_mode=self.float_mode)
        try:
            return self.evaluate(built)
        finally:
            built.path.unlink(missing_ok=True)

    def _run(self, jobs: list[_Candidate]) -> dict[int | None, EvalResult]:
        if self.executor is None:  # only called with one
            return {}
        self.shared._full_int8()  # the ranges (and the full INT8 model) made once, here, before workers read them
        self.batches.append([j.k for j in jobs if j.k is not None])
        task = partial(_measure, self.shared, self.evaluate, self.float_mode, self.work)
        got: dict[int | None, EvalResult] = {}
        for job, outcome in closing_map(self.executor, task, jobs):
            if isinstance(outcome, Exception):
                outcome.add_note(f"while measuring {job.name} of the accuracy budget search")
                raise outcome
            got[job.k] = outcome
        return got
