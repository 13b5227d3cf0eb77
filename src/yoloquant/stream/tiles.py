"""Cut a frame into overlapping tiles and merge the tiles' detections back into one set (SAHI-style slicing).

Small people far from the camera are a few pixels tall once a 1920x1080 frame is letterboxed to 640; cutting the
frame into tiles that each run at the model's input size keeps them detectable, at the cost of one inference per tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from yoloquant.detections import Detections
from yoloquant.errors import ConfigError
from yoloquant.postprocess.nms import nms

__all__ = ["TileConfig", "merge_tiles", "tile_grid"]


@dataclass(frozen=True, kw_only=True)
class TileConfig:
    """How frames are cut into tiles.

    Attributes:
        size: Tile edge in frame pixels (a tile is clipped to the frame; a frame smaller than this is one tile).
        overlap: Fraction of ``size`` neighbouring tiles share, so an object cut by one tile is whole in the next.
        full_frame: Also run the whole frame (letterboxed) to find objects larger than a tile.
        merge_iou: Class-wise NMS threshold that merges the same object found in several tiles.

    Example:
        >>> [t for t in tile_grid(576, 768, TileConfig(size=400, overlap=0.25))]
        [(0, 0, 400, 400), (0, 368, 400, 768), (176, 0, 576, 400), (176, 368, 576, 768)]
    """

    size: int = 640
    overlap: float = 0.2
    full_frame: bool = False
    merge_iou: float = 0.5

    def __post_init__(self) -> None:
        if self.size < 32 or not 0.0 <= self.overlap < 1.0 or not 0.0 < self.merge_iou <= 1.0:
            msg = (
                f"TileConfig needs size >= 32, 0 <= overlap < 1, 0 < merge_iou <= 1; got size={self.size}, "
                f"overlap={self.overlap}, merge_iou={self.merge_iou}"
            )
            raise ConfigError(msg)


def _starts(length: int, size: int, overlap: float) -> list[int]:
    if length <= size:
        return [0]
    n = math.ceil((length - size) / (size * (1.0 - overlap))) + 1
    return [round(v) for v in np.linspace(0, length - size, n)]


def tile_grid(height: int, width: int, config: TileConfig) -> list[tuple[int, int, int, int]]:
    """The tiles of a ``height`` x ``width`` frame as ``(y1, x1, y2, x2)``, row by row (plus the frame if asked)."""
    tiles = [
        (y, x, min(y + config.size, height), min(x + config.size, width))
        for y in _starts(height, config.size, config.overlap)
        for x in _starts(width, config.size, config.overlap)
    ]
    if config.full_frame and tiles != [(0, 0, height, width)]:
        tiles.append((0, 0, height, width))
    return tiles


def merge_tiles(
    parts: list[Detections], tiles: list[tuple[int, int, int, int]], *, iou: float, max_det: int = 300
) -> Detections:
    """One frame's detections from its tiles': shift each tile's boxes by its origin, then class-wise NMS.

    Example:
        >>> d = Detections(np.array([[0, 0, 10, 10]], np.float32), np.array([0.9], np.float32), np.array([0]))
        >>> merge_tiles([d, d], [(0, 0, 20, 20), (0, 5, 20, 25)], iou=0.5).boxes.tolist()
        [[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]]
    """
    names = next((p.names for p in parts if p.names is not None), None)
    shifted = []
    for d, (y1, x1, _, _) in zip(parts, tiles, strict=True):
        shifted.append(d.boxes + np.array([x1, y1, x1, y1], np.float32))
    boxes = np.concatenate(shifted) if shifted else np.zeros((0, 4), np.float32)
    scores = np.concatenate([p.scores for p in parts]) if parts else np.zeros((0,), np.float32)
    classes = np.concatenate([p.classes for p in parts]) if parts else np.zeros((0,), np.int64)
    if len(parts) <= 1 or len(scores) == 0:
        return Detections(boxes.astype(np.float32), scores, classes, names=names)
    # class offset trick: boxes of different classes never overlap, so one NMS call is class-wise
    offset = classes[:, None].astype(np.float32) * (float(boxes.max()) + 1.0)
    keep = nms(boxes + offset, scores, iou, max_det)
    return Detections(boxes[keep].astype(np.float32), scores[keep], classes[keep], names=names)
