"""Pareto front of latency vs accuracy, and the pick under user constraints.

Example:
    >>> pts = [Point("a", 10.0, 0.50), Point("b", 8.0, 0.49), Point("c", 9.0, 0.48)]
    >>> [p.name for p in pareto_front(pts)]
    ['b', 'a']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Point", "pareto_front", "recommend"]


@dataclass(frozen=True)
class Point:
    """A variant's median latency (ms, lower is better) and mAP50-95 (higher is better)."""

    name: str
    latency_ms: float
    map50_95: float


def _dominates(q: Point, p: Point) -> bool:
    better_or_equal = q.latency_ms <= p.latency_ms and q.map50_95 >= p.map50_95
    return better_or_equal and (q.latency_ms < p.latency_ms or q.map50_95 > p.map50_95)


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points no other point beats on both latency and mAP, fastest first."""
    front = [p for p in points if not any(_dominates(q, p) for q in points)]
    return sorted(front, key=lambda p: (p.latency_ms, -p.map50_95))


def recommend(
    points: Sequence[Point], baseline: Point, *, max_map_drop: float | None = None, min_speedup: float | None = None
) -> Point | None:
    """The fastest point within the mAP drop (points vs ``baseline``) and speedup constraints; ties: higher mAP."""
    ok = [
        p
        for p in points
        if (max_map_drop is None or (baseline.map50_95 - p.map50_95) * 100 <= max_map_drop + 1e-9)
        and (min_speedup is None or baseline.latency_ms / p.latency_ms >= min_speedup - 1e-9)
    ]
    return min(ok, key=lambda p: (p.latency_ms, -p.map50_95)) if ok else None
