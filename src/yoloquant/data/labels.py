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
    """Boxes of one image.

    Attributes:
        boxes: float32 ``[N, 4]`` x1, y1, x2, y2 in original-image pixels.
        classes: int64 ``[N]`` model class indices.
        shape: Image (height, width).
    """

    boxes: np.ndarray
    classes: np.ndarray
    shape: tuple[int, int]

    def __len__(self) -> int:
        return int(self.classes.shape[0])


def label_path_for(image: Path) -> Path:
    """Ultralytics' rule: the last ``/images/`` becomes ``/labels/`` and the suffix ``.txt``.

    Example:
        >>> label_path_for(Path("/d/images/train/a.jpg")).as_posix()
        '/d/labels/train/a.txt'
    """
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(os.fspath(image).rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")


def _parse_line(parts: list[str], where: str, line: str) -> list[float]:
    try:
        values = [float(v) for v in parts]
    except ValueError:
        msg = f"{where}: non-number in label line {line!r}; expected 'class cx cy w h' (normalized floats)"
        raise DataError(msg) from None
    if len(values) == 5:
        return [values[0], *_normalized(values[1:], where, line)]
    if len(values) > 6 and len(values) % 2:  # segment polygon: class x1 y1 x2 y2 ... -> its box
        xy = np.asarray(_normalized(values[1:], where, line), np.float32).reshape(-1, 2)
        (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
        return [values[0], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    msg = f"{where}: expected 5 values 'class cx cy w h' (or a polygon), got {len(values)} in {line!r}"
    raise DataError(msg)


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


def read_yolo_labels(path: Path, shape: tuple[int, int], num_classes: int | None = None) -> GroundTruth:
    """Read one YOLO label file into pixel boxes; a missing file means no objects.

    Duplicate rows are dropped, as Ultralytics does.

    Args:
        path: The ``.txt`` label file.
        shape: Image (height, width), to turn normalized coordinates into pixels.
        num_classes: Number of class names, to reject out-of-range ids; None skips that check.

    Raises:
        DataError: Naming ``file:line`` and the text, on a non-number, a bad class id or a coordinate
            outside [0, 1] (beyond :data:`COORD_TOLERANCE`).

    Example:
        >>> gt = read_yolo_labels(Path("labels/a.txt"), (480, 640), 80)  # doctest: +SKIP
    """
    rows: list[list[float]] = []
    if path.is_file():
        text = path.read_text(encoding="utf-8-sig")
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            values = _parse_line(line.split(), where, line.strip())
            _check_class(values[0], where, line.strip(), num_classes)
            rows.append(values)
    labels = np.unique(np.asarray(rows, np.float32), axis=0) if rows else np.zeros((0, 5), np.float32)
    h, w = shape
    cx, cy, bw, bh = (labels[:, i] for i in range(1, 5))
    boxes = np.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], axis=1)
    return GroundTruth(boxes=boxes.astype(np.float32), classes=labels[:, 0].astype(np.int64), shape=shape)
