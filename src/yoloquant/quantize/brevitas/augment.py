"""Training batches with Ultralytics' own augmentation (mosaic, random affine, HSV, flips).

The labeled images are laid out the way Ultralytics reads a dataset (``images/`` links and ``labels/``
YOLO ``.txt`` files written from yoloquant's ground truth, whatever format it came in) in a scratch
folder, and ``ultralytics.data.build_yolo_dataset(..., mode="train")`` serves them with the default
``yolo train`` hyperparameters. With few images (a calibration set), this is what keeps a fine-tune
from memorising them.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from yoloquant._optional import require
from yoloquant.data.datasets import Dataset
from yoloquant.data.labels import GroundTruth

__all__ = ["augmented_batches", "write_yolo_layout"]

_KEYS = ("img", "batch_idx", "cls", "bboxes")  # what the Ultralytics loss reads


def write_yolo_layout(data: Dataset, labels: tuple[GroundTruth, ...], root: Path) -> Path:
    """Link ``data``'s images into ``root/images`` and write their labels to ``root/labels``; returns images/."""
    images, texts = root / "images", root / "labels"
    images.mkdir(parents=True)
    texts.mkdir()
    for i, (image, gt) in enumerate(zip(data.images, labels, strict=True)):
        name = f"{i:06d}"
        os.symlink(image.resolve(), images / f"{name}{image.suffix.lower()}")
        height, width = gt.shape
        xyxy = gt.boxes / np.asarray([width, height, width, height], np.float32)
        xywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        rows = [f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, (x, y, w, h) in zip(gt.classes, xywh, strict=True)]
        (texts / f"{name}.txt").write_text("".join(f"{row}\n" for row in rows))
    return images


def augmented_batches(
    images: Path, names: dict[int, str], *, imgsz: int, batch_size: int, seed: int, workers: int
) -> Generator[dict[str, Any], None, None]:
    """Endless shuffled batches in the loss's format (``img`` float in [0, 1]) from an Ultralytics layout.

    ``close()`` it when done: that stops the data loader's worker processes.
    """
    torch = require("torch")
    build = require("ultralytics.data.build")
    utils = require("ultralytics.utils")
    random.seed(seed)  # Ultralytics' transforms draw from the global generators
    np.random.seed(seed)
    hyp = utils.IterableSimpleNamespace(**(utils.DEFAULT_CFG_DICT | {"imgsz": imgsz, "task": "detect", "cache": False}))
    data = {"names": names, "nc": len(names), "channels": 3}
    with _quiet_ultralytics(utils):
        dataset = build.build_yolo_dataset(hyp, str(images), batch_size, data, mode="train")
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(dataset) >= batch_size,
        num_workers=workers,
        collate_fn=dataset.collate_fn,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=workers > 0,
    )
    while True:
        for batch in loader:
            out = {key: batch[key] for key in _KEYS}
            out["img"] = out["img"].float() / 255
            yield out


@contextmanager
def _quiet_ultralytics(utils: Any) -> Iterator[None]:
    """Ultralytics logs a line per dataset scan; keep it at warnings while the dataset is built."""
    level = utils.LOGGER.level
    utils.LOGGER.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        utils.LOGGER.setLevel(level)
