"""``Detections``: what an engine's decoded output is, per image."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from yoloquant.errors import ConfigError

__all__ = ["KEYPOINT_MIN_VISIBILITY", "Detections"]

# Ultralytics' 20-colour palette (``ultralytics.utils.plotting.Colors``), as BGR.
_PALETTE = tuple(
    (int(h[4:6], 16), int(h[2:4], 16), int(h[0:2], 16))
    for h in (
        *("042AFF", "0BDBEB", "F3F3F3", "00DFB7", "111F68", "FF6FDD", "FF444F", "CCED00", "00F344", "BD00FF"),
        *("00B4FF", "DD00BA", "00FFFF", "26C000", "01FFB3", "7D24FF", "7B0068", "FF1B6C", "FC6D2F", "A2FF0B"),
    )
)


# COCO's 17-keypoint skeleton (0-based keypoint pairs, as Ultralytics' Annotator draws it)
_SKELETON = (
    *((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8)),
    *((7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)),
)
KEYPOINT_MIN_VISIBILITY = 0.5  # keypoints drawn: visibility above this (Ultralytics' kpt conf threshold)


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections of one image.

    Attributes:
        boxes: float32 ``[N, 4]`` as x1, y1, x2, y2 in pixels of the image they refer to.
        scores: float32 ``[N]`` confidence.
        classes: int64 ``[N]`` class index into the model's ``names``.
        names: The model's class index -> name (``predict`` fills it in), or None.
        masks: ``[N, H, W]`` instance masks over that image (segmentation tasks), or None.
        keypoints: float32 ``[N, K, 3]`` as x, y, visibility in that image's pixels (pose tasks), or None.

    :meth:`select` indexes every per-detection array alike; code that filters detections uses it.

    Example:
        >>> dets = Detections(np.array([[2, 2, 9, 9]], np.float32), np.array([0.9], np.float32),
        ...                   np.array([0]), names={0: "person"})
        >>> dets.labels
        ['person']
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: Mapping[int, str] | None = field(default=None, repr=False)
    masks: np.ndarray | None = field(default=None, repr=False)
    keypoints: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = self.scores.shape[0]
        shapes = {"boxes": (self.boxes, (n, 4)), "classes": (self.classes, (n,))}
        if self.masks is not None:
            shapes["masks"] = (self.masks, (n, *self.masks.shape[1:3]))
        if self.keypoints is not None:
            shapes["keypoints"] = (self.keypoints, (n, *self.keypoints.shape[1:2], 3))
        for name, (array, want) in shapes.items():
            if array.shape != want:
                msg = f"Detections.{name} has shape {array.shape}; {n} scores need {name} of shape {want}"
                raise ConfigError(msg)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def select(self, index: np.ndarray | slice) -> Detections:
        """The detections at ``index`` (indices, a boolean mask or a slice), masks and keypoints included.

        Example:
            >>> dets = Detections(np.zeros((2, 4), np.float32), np.array([0.9, 0.2], np.float32), np.array([0, 1]))
            >>> dets.select(dets.scores > 0.5).classes.tolist()
            [0]
        """
        return Detections(
            self.boxes[index],
            self.scores[index],
            self.classes[index],
            names=self.names,
            masks=None if self.masks is None else self.masks[index],
            keypoints=None if self.keypoints is None else self.keypoints[index],
        )

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))

    @property
    def labels(self) -> list[str]:
        """The class name of each detection (its index as text where the names are unknown)."""
        names = self.names or {}
        return [names.get(int(c), str(int(c))) for c in self.classes]

    def draw(self, image: np.ndarray, *, thickness: int = 2, font_scale: float = 0.5) -> np.ndarray:
        """A copy of ``image`` with each box, its class name and score drawn (OpenCV, its built-in font).

        Keypoints (pose) are drawn too: a dot for each keypoint whose visibility is above
        :data:`KEYPOINT_MIN_VISIBILITY`, and for COCO's 17 keypoints the skeleton lines between such dots.

        Args:
            image: The image the boxes refer to: BGR ``[H, W, 3]`` (or anything :func:`predict` takes as an array).
            thickness: Box line width in pixels.
            font_scale: Label text size (OpenCV's Hershey font; nothing is downloaded).

        Raises:
            DataError: If ``image`` is not an image (see :func:`yoloquant.data.images.as_bgr`).

        Example:
            >>> dets = predict(engine, "bus.jpg")[0]  # doctest: +SKIP
            >>> cv2.imwrite("bus-dets.jpg", dets.draw(cv2.imread("bus.jpg")))  # doctest: +SKIP
        """
        from yoloquant._optional import require
        from yoloquant.data.images import as_bgr

        cv2 = require("cv2")
        out = as_bgr(image).copy()
        font = cv2.FONT_HERSHEY_SIMPLEX
        for box, score, cls, label in zip(self.boxes, self.scores, self.classes, self.labels, strict=True):
            color = _PALETTE[int(cls) % len(_PALETTE)]
            x1, y1, x2, y2 = (round(float(v)) for v in box)
            cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
            text = f"{label} {float(score):.2f}"
            (tw, th), base = cv2.getTextSize(text, font, font_scale, 1)
            top = y1 - th - base if y1 - th - base >= 0 else y1  # above the box, or inside it at the top edge
            cv2.rectangle(out, (x1, top), (x1 + tw, top + th + base), color, cv2.FILLED)
            ink = (0, 0, 0) if sum(color) > 382 else (255, 255, 255)
            cv2.putText(out, text, (x1, top + th), font, font_scale, ink, 1, cv2.LINE_AA)
        for points, cls in zip(self.keypoints if self.keypoints is not None else (), self.classes, strict=False):
            _draw_keypoints(cv2, out, points, _PALETTE[int(cls) % len(_PALETTE)], thickness)
        return out

    def __repr__(self) -> str:
        top = sorted(set(self.labels))[:5]
        shown = f", labels={top}" if top else ""
        return f"Detections(n={len(self)}, max_score={float(self.scores.max()) if len(self) else 0.0:.3f}{shown})"


def _draw_keypoints(cv2: Any, image: np.ndarray, points: np.ndarray, color: tuple[int, int, int], width: int) -> None:
    """One detection's ``[K, 3]`` keypoints: skeleton lines (17 COCO keypoints) then dots, the visible ones only."""
    seen = points[:, 2] > KEYPOINT_MIN_VISIBILITY
    xy = [(round(float(x)), round(float(y))) for x, y in points[:, :2]]
    if len(points) == 17:
        for a, b in _SKELETON:
            if seen[a] and seen[b]:
                cv2.line(image, xy[a], xy[b], color, max(width - 1, 1), cv2.LINE_AA)
    for p, visible in zip(xy, seen, strict=True):
        if visible:
            cv2.circle(image, p, width + 2, (0, 0, 255), -1, cv2.LINE_AA)
