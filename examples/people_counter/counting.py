"""Counting rules: a line crossed by a track's bottom-centre point, or a zone entered and left.

``LineCounter(line)`` (``min_frames=1, margin=0``) is the reference rule, the one
``../shared/data/video/count_crossings.py`` applies to the ground truth: per track, a crossing is two consecutive
points strictly on opposite sides; a point exactly on the line has no side and the side is remembered from the last
point that had one. Detected boxes jitter by a few pixels and shrink when a person is partly occluded, so a person
standing on the line is counted many times under that rule. The counter's default (``min_frames=3, margin=0.02``)
adds a dead band of 2% of the box height around the line (a point inside it has no side) and counts a crossing only
once the track has been on the new side for 3 sided points in a row (supervision's ``LineZone`` has the same
debounce, ``minimum_crossing_threshold``). On the ground-truth tracks both give the reference counts (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORGET_AFTER = 1000  # frames: a track unseen that long is gone (ByteTrack drops lost tracks far sooner)

__all__ = ["Line", "LineCounter", "Zone", "ZoneCounter", "bottom_centres", "parse_counter", "replay"]


def bottom_centres(boxes: np.ndarray) -> np.ndarray:
    """The bottom-centre point (x, y) of each xyxy box: where a person's feet are."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2.0, b[:, 3]], axis=1)


@dataclass(frozen=True)
class Line:
    """A counting line through two points; ``Line.parse("x=384")`` is vertical, ``"y=288"`` horizontal.

    Directions: for ``x=V`` left_to_right / right_to_left, for ``y=V`` top_to_bottom / bottom_to_top; for two points
    ``in`` is from the side where ``cross(b - a, p - a) > 0`` (image coordinates, y down) to the other, ``out`` back.
    """

    a: tuple[float, float]
    b: tuple[float, float]
    name: str
    in_name: str = "in"
    out_name: str = "out"

    @classmethod
    def parse(cls, text: str) -> Line:
        t = text.replace(" ", "")
        if t.startswith(("x=", "y=")):
            v = float(t[2:])
            if t[0] == "x":  # downwards direction vector: positive side is left in image coordinates
                return cls((v, 0.0), (v, 1.0), f"x={v:g}", "left_to_right", "right_to_left")
            return cls((1.0, v), (0.0, v), f"y={v:g}", "top_to_bottom", "bottom_to_top")
        parts = [float(p) for p in t.split(",")]
        if len(parts) != 4:
            msg = f"a line is 'x=V', 'y=V' or 'X1,Y1,X2,Y2', got {text!r}"
            raise ValueError(msg)
        return cls((parts[0], parts[1]), (parts[2], parts[3]), t)

    def sides(self, points: np.ndarray, band: np.ndarray | float = 0.0) -> np.ndarray:
        """-1 / 0 / +1 per point: which side of the line it is on (0: on it, or within ``band`` pixels of it)."""
        (ax, ay), (bx, by) = self.a, self.b
        cross = (bx - ax) * (points[:, 1] - ay) - (by - ay) * (points[:, 0] - ax)
        dist = cross / max(float(np.hypot(bx - ax, by - ay)), 1e-12)
        return np.where(np.abs(dist) <= band, 0, np.sign(dist)).astype(np.int64)


@dataclass
class LineCounter:
    """Counts tracks crossing a :class:`Line`; ``update`` once per frame with the tracked boxes and ids.

    Attributes:
        min_frames: Sided points in a row on the new side before a crossing counts (1: the reference rule).
        margin: Half-width of the dead band around the line, as a fraction of the box height (0: none).
    """

    line: Line
    min_frames: int = 1
    margin: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    _last: dict[int, int] = field(default_factory=dict, repr=False)  # confirmed side per track
    _run: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)  # (side, points in a row)
    _seen: dict[int, int] = field(default_factory=dict, repr=False)  # last frame each track was seen
    _frame: int = 0

    def __post_init__(self) -> None:
        self.counts = {self.line.in_name: 0, self.line.out_name: 0}

    def update(self, boxes: np.ndarray, ids: np.ndarray) -> list[tuple[int, str]]:
        """Returns the crossings of this frame as (track id, direction)."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        sides = self.line.sides(bottom_centres(b), band=self.margin * (b[:, 3] - b[:, 1]))
        self._frame += 1
        _forget(self._frame, ids, self._seen, self._last, self._run)
        events = []
        for tid, s in zip(ids.tolist(), sides.tolist(), strict=True):
            if s == 0:
                continue
            last = self._last.get(tid)
            if last is None:
                self._last[tid], self._run[tid] = s, (s, 1)
                continue
            side, n = self._run[tid]
            self._run[tid] = (s, n + 1 if s == side else 1)
            if s != last and self._run[tid][1] >= self.min_frames:
                d = self.line.in_name if s < last else self.line.out_name
                self.counts[d] += 1
                events.append((tid, d))
                self._last[tid] = s
        return events


@dataclass(frozen=True)
class Zone:
    """A polygon zone, ``Zone.parse("100,100;600,100;600,400;100,400")``."""

    points: tuple[tuple[float, float], ...]
    name: str

    @classmethod
    def parse(cls, text: str) -> Zone:
        pts = tuple(tuple(float(v) for v in p.split(",")) for p in text.replace(" ", "").split(";"))
        if len(pts) < 3 or any(len(p) != 2 for p in pts):
            msg = f"a zone is at least three 'X,Y' points separated by ';', got {text!r}"
            raise ValueError(msg)
        return cls(tuple((p[0], p[1]) for p in pts), "zone:" + text.replace(" ", ""))

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Even-odd rule point-in-polygon for each (x, y)."""
        inside = np.zeros(len(points), bool)
        poly = self.points
        for (x1, y1), (x2, y2) in zip(poly, poly[1:] + poly[:1], strict=True):
            crosses = (y1 > points[:, 1]) != (y2 > points[:, 1])
            with np.errstate(divide="ignore", invalid="ignore"):
                xs = x1 + (points[:, 1] - y1) * (x2 - x1) / (y2 - y1)
            inside ^= crosses & (points[:, 0] < xs)
        return inside


@dataclass
class ZoneCounter:
    """Counts tracks entering (``in``) and leaving (``out``) a :class:`Zone`, and how many are inside now."""

    zone: Zone
    counts: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    inside: int = 0
    _last: dict[int, bool] = field(default_factory=dict, repr=False)
    _seen: dict[int, int] = field(default_factory=dict, repr=False)
    _frame: int = 0

    @property
    def line(self) -> Zone:  # the name the output uses for lines and zones alike
        return self.zone

    def update(self, boxes: np.ndarray, ids: np.ndarray) -> list[tuple[int, str]]:
        flags = self.zone.contains(bottom_centres(boxes))
        self._frame += 1
        _forget(self._frame, ids, self._seen, self._last)
        events = []
        for tid, now in zip(ids.tolist(), flags.tolist(), strict=True):
            last = self._last.get(tid)
            if last is not None and now != last:
                d = "in" if now else "out"
                self.counts[d] += 1
                events.append((tid, d))
            self._last[tid] = now
        self.inside = int(flags.sum())
        return events


def _forget(frame: int, ids: np.ndarray, seen: dict[int, int], *states: dict[int, Any]) -> None:
    """Mark ``ids`` seen; every FORGET_AFTER frames drop the state of tracks unseen since, so memory stays flat."""
    for tid in ids.tolist():
        seen[tid] = frame
    if frame % FORGET_AFTER:
        return
    for tid in [t for t, f in seen.items() if frame - f > FORGET_AFTER]:
        del seen[tid]
        for state in states:
            state.pop(tid, None)


def parse_counter(text: str, *, min_frames: int = 3, margin: float = 0.02) -> LineCounter | ZoneCounter:
    """``x=384`` / ``y=288`` / ``X1,Y1,X2,Y2`` is a line, ``X,Y;X,Y;X,Y...`` a zone."""
    if ";" in text:
        return ZoneCounter(Zone.parse(text))
    return LineCounter(Line.parse(text), min_frames=min_frames, margin=margin)


def replay(rows: list[tuple[int, int, float, float, float, float, float]], counter: LineCounter | ZoneCounter) -> None:
    """Feed MOTChallenge rows (frame, id, x, y, w, h, ...; top-left boxes) to ``counter`` frame by frame."""
    by_frame: dict[int, list[tuple[int, float, float, float, float]]] = {}
    for frame, tid, x, y, w, h, *_ in rows:
        by_frame.setdefault(int(frame), []).append((int(tid), x, y, x + w, y + h))
    for frame in sorted(by_frame):
        rs = by_frame[frame]
        counter.update(np.array([r[1:] for r in rs], np.float64).reshape(-1, 4), np.array([r[0] for r in rs], np.int64))
