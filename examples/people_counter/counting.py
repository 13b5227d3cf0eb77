"""Counting rules: a line crossed by a track's bottom-centre point, or a zone entered and left.

The line rule is the one ``../shared/data/video/count_crossings.py`` applies to the ground truth (and what
supervision's ``LineZone`` and Ultralytics' ``ObjectCounter`` do with a bottom-centre anchor): per track, a crossing
is two consecutive points strictly on opposite sides; a point exactly on the line has no side and the side is
remembered from the last point that had one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Line", "LineCounter", "Zone", "ZoneCounter", "bottom_centres", "parse_counter"]


def bottom_centres(boxes: np.ndarray) -> np.ndarray:
    """The bottom-centre point (x, y) of each xyxy box: where a person's feet are."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2.0, b[:, 3]], axis=1)


@dataclass(frozen=True)
class Line:
    """A counting line through two points; ``Line.parse("x=384")`` is vertical, ``"y=288"`` horizontal.

    ``in`` is the crossing from the line's left side to its right (for ``x=``: left -> right; for ``y=``:
    top -> bottom; for two points a->b, from the side on the left of a->b in image coordinates), ``out`` the other way.
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

    def sides(self, points: np.ndarray) -> np.ndarray:
        """-1 / 0 / +1 per point: which side of the line it is on (0: exactly on it)."""
        (ax, ay), (bx, by) = self.a, self.b
        cross = (bx - ax) * (points[:, 1] - ay) - (by - ay) * (points[:, 0] - ax)
        return np.sign(cross).astype(np.int64)


@dataclass
class LineCounter:
    """Counts tracks crossing a :class:`Line`; ``update`` once per frame with the tracked boxes and ids."""

    line: Line
    counts: dict[str, int] = field(default_factory=dict)
    _last: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.counts = {self.line.in_name: 0, self.line.out_name: 0}

    def update(self, boxes: np.ndarray, ids: np.ndarray) -> list[tuple[int, str]]:
        """Returns the crossings of this frame as (track id, direction)."""
        events = []
        for tid, s in zip(ids.tolist(), self.line.sides(bottom_centres(boxes)).tolist(), strict=True):
            if s == 0:
                continue
            last = self._last.get(tid)
            if last is not None and s != last:
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

    @property
    def line(self) -> Zone:  # the name the output uses for lines and zones alike
        return self.zone

    def update(self, boxes: np.ndarray, ids: np.ndarray) -> list[tuple[int, str]]:
        flags = self.zone.contains(bottom_centres(boxes))
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


def parse_counter(text: str) -> LineCounter | ZoneCounter:
    """``x=384`` / ``y=288`` / ``X1,Y1,X2,Y2`` is a line, ``X,Y;X,Y;X,Y...`` a zone."""
    return ZoneCounter(Zone.parse(text)) if ";" in text else LineCounter(Line.parse(text))
