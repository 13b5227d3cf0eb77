"""Pareto front of latency vs accuracy, and the pick under user constraints.

Accuracy is one metric's value (higher is better): the task's primary metric, mAP50-95 for detection
(see :mod:`yoloquant.tasks`); the caller picks which and keeps the name.

:func:`recommend` is the plain rule (fastest within the constraints, on point values);
:func:`recommend_within_noise` is the sweep's: among the qualifying variants it takes the fastest whose
mAP the evaluation images cannot tell from the most accurate one's, and among variants whose speed is
tied within noise, the simplest.

Example:
    >>> pts = [Point("a", 10.0, 0.50), Point("b", 8.0, 0.49), Point("c", 9.0, 0.48)]
    >>> [p.name for p in pareto_front(pts)]
    ['b', 'a']
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from yoloquant.eval.bootstrap import paired_delta

__all__ = [
    "Candidate",
    "Point",
    "Recommendation",
    "pareto_front",
    "recommend",
    "recommend_within_noise",
    "resolved_steps",
    "same_accuracy",
    "same_speed",
]


@dataclass(frozen=True)
class Point:
    """A variant's median latency (ms, lower is better) and accuracy (higher is better).

    Attributes:
        accuracy: The value of the metric the front ranks by (the task's primary metric).
    """

    name: str
    latency_ms: float
    accuracy: float


def _dominates(q: Point, p: Point) -> bool:
    better_or_equal = q.latency_ms <= p.latency_ms and q.accuracy >= p.accuracy
    return better_or_equal and (q.latency_ms < p.latency_ms or q.accuracy > p.accuracy)


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points no other point beats on both latency and accuracy, fastest first."""
    front = [p for p in points if not any(_dominates(q, p) for q in points)]
    return sorted(front, key=lambda p: (p.latency_ms, -p.accuracy))


def recommend(
    points: Sequence[Point], baseline: Point, *, max_map_drop: float | None = None, min_speedup: float | None = None
) -> Point | None:
    """The fastest point within the accuracy drop (points vs ``baseline``) and speedup constraints; ties: higher one."""
    ok = [
        p
        for p in points
        if (max_map_drop is None or (baseline.accuracy - p.accuracy) * 100 <= max_map_drop + 1e-9)
        and (min_speedup is None or baseline.latency_ms / p.latency_ms >= min_speedup - 1e-9)
    ]
    return min(ok, key=lambda p: (p.latency_ms, -p.accuracy)) if ok else None


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A variant as the noise-aware recommendation sees it.

    Attributes:
        name: Variant name.
        accuracy: The measured value of the ranking metric (the task's primary one, e.g. mAP50-95).
        replicates: Its bootstrap replicates of that metric, paired with every other candidate's (same
            images, resample count and seed); None when the evaluation did not resample.
        latency_ms: Raw latency samples in interleaved round order (round i of every candidate ran together).
        simplicity: Sort key, lower = simpler (e.g. float nodes, options changed from the defaults).
        baseline: The FP32 reference: a candidate only when no quantized variant qualifies.
    """

    name: str
    accuracy: float
    replicates: np.ndarray | None
    latency_ms: tuple[float, ...]
    simplicity: tuple[float, ...] = ()
    baseline: bool = False

    @property
    def p50(self) -> float:
        return float(np.median(self.latency_ms))


def same_accuracy(a: Candidate, b: Candidate) -> bool:
    """Whether the paired 95% interval of ``a - b`` (accuracy) holds 0: the images cannot tell them apart.

    Without replicates on either side only exactly equal mAPs count as the same.
    """
    if a.replicates is None or b.replicates is None or a.replicates.shape != b.replicates.shape:
        return a.accuracy == b.accuracy
    return paired_delta(a.replicates, b.replicates, a.accuracy, b.accuracy).contains(0.0)


def same_speed(a: Candidate, b: Candidate, *, resamples: int = 1000, seed: int = 0) -> bool:
    """Whether the 95% interval of the median per-round latency ratio ``a / b`` holds 1.

    Rounds are resampled with replacement (the same draws for both, so the pairing by round is kept);
    samples of unequal length (not timed together) are never tied unless their medians are equal.
    """
    x, y = np.asarray(a.latency_ms, np.float64), np.asarray(b.latency_ms, np.float64)
    if len(x) != len(y) or len(x) < 2:
        return a.p50 == b.p50
    ratio = x / y
    draws = np.random.default_rng(seed).integers(0, len(ratio), size=(resamples, len(ratio)))
    low, high = np.percentile(np.median(ratio[draws], axis=1), [2.5, 97.5])
    return bool(low <= 1.0 <= high)


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    """The pick and why: ``best`` (most accurate qualifying), ``same_as_best`` (its accuracy within noise,
    fastest first), ``same_speed`` (those tied in speed with the fastest of them), ``qualifying``."""

    pick: str | None
    best: str | None
    same_as_best: tuple[str, ...]
    same_speed: tuple[str, ...]
    qualifying: tuple[str, ...]


def recommend_within_noise(candidates: Sequence[Candidate], qualifies: Callable[[Candidate], bool]) -> Recommendation:
    """The fastest candidate whose mAP is indistinguishable from the most accurate qualifying one.

    1. Qualifying: the quantized candidates that ``qualifies`` (the constraints); the baseline only when
       none does.
    2. Best: the qualifying candidate with the highest accuracy.
    3. Same as best: qualifying candidates whose paired interval vs the best holds 0 (:func:`same_accuracy`).
    4. Among those, the fastest by median latency, and every one whose speed is tied with it
       (:func:`same_speed`); the pick is the simplest of the tied (lowest ``simplicity``), then the fastest.

    Example:
        >>> c = [Candidate(name="a", accuracy=0.5, replicates=None, latency_ms=(1.0, 1.0))]
        >>> recommend_within_noise(c, lambda _: True).pick
        'a'
    """
    quantized = [c for c in candidates if not c.baseline and qualifies(c)]
    ok = quantized or [c for c in candidates if c.baseline and qualifies(c)]
    if not ok:
        return Recommendation(pick=None, best=None, same_as_best=(), same_speed=(), qualifying=())
    best = max(ok, key=lambda c: (c.accuracy, -c.p50))
    same = sorted((c for c in ok if c is best or same_accuracy(c, best)), key=lambda c: c.p50)
    fastest = same[0]
    tied = [c for c in same if c is fastest or same_speed(c, fastest)]
    pick = min(tied, key=lambda c: (c.simplicity, c.p50, -c.accuracy))
    return Recommendation(
        pick=pick.name,
        best=best.name,
        same_as_best=tuple(c.name for c in same),
        same_speed=tuple(c.name for c in tied),
        qualifying=tuple(c.name for c in ok),
    )


def resolved_steps(front: Sequence[Candidate]) -> list[bool]:
    """For each Pareto point (fastest first), whether its mAP gain over the next faster point is resolved.

    The fastest point gets True. A False marks a point that costs latency for accuracy these images
    cannot tell from the faster point's.
    """
    return [True] + [not same_accuracy(b, a) for a, b in itertools.pairwise(front)]
