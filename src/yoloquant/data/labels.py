"""Ground truth per image, and YOLO ``.txt`` label files (``cls cx cy w h``, normalized)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yoloquant.errors import DataError

__all__ = ["COORD_TOLERANCE", "GroundTruth", "label_path_for", "read_yolo_labels"]

# How far outside [0, 1] a normalized coordinate may be (rounding in label converters) before it is an error;
# values within it are clipped. Ultralytics allows 0.01; real COCO labels stay within [0, 1] exactly.
COORD_TOLERANCE = 1e-3


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """Objects of one image: boxes always; polygons and keypoints where the labels have them.

    Attributes:
        boxes: float32 ``[N, 4]`` x1, y1, x2, y2 in original-image pixels.
        classes: int64 ``[N]`` model class indices.
        shape: Image (height, width).
        polygons: One float32 ``[K, 2]`` x, y pixel polygon per object where the label file has segment
            polygons (a plain box line becomes its four corners), else None.
        keypoints: float32 ``[N, K, 3]`` x, y (pixels), visibility where read with a keypoint shape, else None.
    """

    boxes: np.ndarray
    classes: np.ndarray
    shape: tuple[int, int]
    polygons: tuple[np.ndarray, ...] | None = None
    keypoints: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.classes.shape[0])


@dataclass(frozen=True, eq=False)
class _Row:
    """One label line, normalized: ``class cx cy w h``, and its polygon [K, 2] or keypoints [K, 3]."""

    values: list[float]
    polygon: np.ndarray | None = None
    keypoints: np.ndarray | None = None


def label_path_for(image: Path) -> Path:
    """Ultralytics' rule: the last ``/images/`` becomes ``/labels/`` and the suffix ``.txt``.

    Example:
        >>> label_path_for(Path("/d/images/train/a.jpg")).as_posix()
        '/d/labels/train/a.txt'
    """
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(os.fspath(image).rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")


def _parse_line(parts: list[str], where: str, line: str, kpt_shape: tuple[int, int] | None = None) -> _Row:
    try:
        values = [float(v) for v in parts]
    except ValueError:
        msg = f"{where}: non-number in label line {line!r}; expected 'class cx cy w h' (normalized floats)"
        raise DataError(msg) from None
    if kpt_shape is not None:
        return _pose_row(values, where, line, kpt_shape)
    if len(values) == 5:
        return _Row([values[0], *_normalized(values[1:], where, line)])
    if len(values) > 6 and len(values) % 2:  # segment polygon: class x1 y1 x2 y2 ... -> its box
        xy = np.asarray(_normalized(values[1:], where, line), np.float32).reshape(-1, 2)
        (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
        return _Row([values[0], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], polygon=xy)
    msg = f"{where}: expected 5 values 'class cx cy w h' (or a polygon), got {len(values)} in {line!r}"
    raise DataError(msg)


def _pose_row(values: list[float], where: str, line: str, kpt_shape: tuple[int, int]) -> _Row:
    """``class cx cy w h`` then K keypoints of ``x y`` or ``x y visibility`` (Ultralytics' pose labels)."""
    k, dims = kpt_shape
    if len(values) != 5 + k * dims:
        msg = f"{where}: a pose label with kpt_shape {list(kpt_shape)} has {5 + k * dims} values, got {len(values)}"
        raise DataError(msg)
    points = np.asarray(values[5:], np.float32).reshape(k, dims)
    xy = np.asarray(_normalized(points[:, :2].ravel().tolist(), where, line), np.float32).reshape(k, 2)
    vis = points[:, 2:3] if dims == 3 else np.full((k, 1), 2.0, np.float32)  # x y only: all labelled visible
    return _Row([values[0], *_normalized(values[1:5], where, line)], keypoints=np.concatenate([xy, vis], axis=1))


def _normalized(coords: list[float], where: str, line: str) -> list[float]:
    """Coordinates clipped to [0, 1]; beyond :data:`COORD_TOLERANCE` outside it, a DataError."""
    bad = [v for v in coords if not -COORD_TOLERANCE <= v <= 1 + COORD_TOLERANCE]
    if bad:
        msg = (
            f"{where}: coordinate {bad[0]:g} in {line!r} is outside [0, 1]; YOLO labels are normalized by the "
            "image size (x / width, y / height): fix the label file (pixel coordinates? divide them by the "
            "image's width and height)"
        )
        raise DataError(msg)
    return [min(max(v, 0.0), 1.0) for v in coords]


def _check_class(cls: float, where: str, line: str, num_classes: int | None) -> None:
    if cls < 0 or cls % 1:
        msg = f"{where}: class id {cls:g} in {line!r} is not a non-negative integer; fix the label file"
        raise DataError(msg)
    if num_classes is not None and cls >= num_classes:
        msg = (
            f"{where}: class id {int(cls)} in {line!r} is out of range for {num_classes} class names "
            f"(valid: 0-{num_classes - 1}); fix the label or the dataset's names"
        )
        raise DataError(msg)


def read_yolo_labels(
    path: Path, shape: tuple[int, int], num_classes: int | None = None, *, kpt_shape: tuple[int, int] | None = None
) -> GroundTruth:
    """Read one YOLO label file into pixel boxes (and polygons or keypoints); a missing file means no objects.

    Duplicate rows (by class and box) are dropped, as Ultralytics does.

    Args:
        path: The ``.txt`` label file.
        shape: Image (height, width), to turn normalized coordinates into pixels.
        num_classes: Number of class names, to reject out-of-range ids; None skips that check.
        kpt_shape: ``(keypoints, 2 or 3)`` of a pose dataset (its yaml's ``kpt_shape``): each line is a box and
            that many keypoints. None reads boxes and segment polygons.

    Raises:
        DataError: Naming ``file:line`` and the text, on a non-number, a bad class id, a coordinate
            outside [0, 1] (beyond :data:`COORD_TOLERANCE`) or a line of the wrong length.

    Example:
        >>> gt = read_yolo_labels(Path("labels/a.txt"), (480, 640), 80)  # doctest: +SKIP
    """
    rows: list[_Row] = []
    if path.is_file():
        text = path.read_text(encoding="utf-8-sig")
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            row = _parse_line(line.split(), where, line.strip(), kpt_shape)
            _check_class(row.values[0], where, line.strip(), num_classes)
            rows.append(row)
    if not rows:
        points = np.zeros((0, kpt_shape[0], 3), np.float32) if kpt_shape else None
        return GroundTruth(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), shape, keypoints=points)
    labels, first = np.unique(np.asarray([r.values for r in rows], np.float32), axis=0, return_index=True)
    kept = [rows[i] for i in first]
    h, w = shape
    cx, cy, bw, bh = (labels[:, i] for i in range(1, 5))
    boxes = np.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], axis=1)
    return GroundTruth(
        boxes=boxes.astype(np.float32),
        classes=labels[:, 0].astype(np.int64),
        shape=shape,
        polygons=_polygons(kept, boxes, shape),
        keypoints=_keypoints(kept, shape) if kpt_shape else None,
    )


def _polygons(rows: list[_Row], boxes: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, ...] | None:
    """Pixel polygons of a file with any polygon line; its plain box lines become the box's corners."""
    if all(r.polygon is None for r in rows):
        return None
    scale = np.asarray([shape[1], shape[0]], np.float32)
    corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 4, 2).astype(np.float32)
    return tuple(c if r.polygon is None else r.polygon * scale for r, c in zip(rows, corners, strict=True))


def _keypoints(rows: list[_Row], shape: tuple[int, int]) -> np.ndarray:
    scale = np.asarray([shape[1], shape[0], 1.0], np.float32)
    return np.stack([r.keypoints for r in rows if r.keypoints is not None]) * scale
