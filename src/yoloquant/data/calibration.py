"""``ImageCalibrator``: letterboxed calibration images, cached on disk by content hash.

Example:
    >>> calib = ImageCalibrator(source="assets/coco64/images", num_images=32)  # doctest: +SKIP
    >>> data = calib.calibrate(model.info)  # doctest: +SKIP
    >>> data.images.shape  # doctest: +SKIP
    (32, 3, 640, 640)
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yoloquant._io import atomic_open
from yoloquant.artifacts import CalibrationSet, ModelInfo
from yoloquant.data.datasets import load_dataset
from yoloquant.data.images import read_image
from yoloquant.data.letterbox import PREPROCESS_VERSION, preprocess
from yoloquant.errors import ConfigError, DataError

__all__ = ["ImageCalibrator", "default_cache_dir"]

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$YOLOQUANT_CACHE/calib`` if set, else ``~/.cache/yoloquant/calib``."""
    env = os.environ.get("YOLOQUANT_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "yoloquant"
    for folder in (base, base / "calib"):
        if folder.exists() and not folder.is_dir():
            how = f"YOLOQUANT_CACHE={env}" if env else "the default cache"
            msg = (
                f"the calibration cache {folder} ({how}) is a file, not a folder; point YOLOQUANT_CACHE at a "
                "folder (it is created if missing), or unset it to use ~/.cache/yoloquant"
            )
            raise ConfigError(msg)
    return base / "calib"


def _digest(files: tuple[Path, ...], imgsz: tuple[int, int]) -> str:
    h = hashlib.sha256(f"{PREPROCESS_VERSION}|{imgsz[0]}x{imgsz[1]}|{len(files)}".encode())
    for f in files:
        try:
            h.update(hashlib.sha256(f.read_bytes()).digest())
        except OSError as exc:
            msg = f"cannot read calibration image {f}: {exc}"
            raise DataError(msg) from exc
    return h.hexdigest()


@dataclass(frozen=True, kw_only=True)
class ImageCalibrator:
    """Calibration images from a folder, an Ultralytics yaml or a COCO json.

    Attributes:
        source: Image folder, dataset yaml or COCO json (labels are not needed).
        num_images: How many images to use, taken in sorted order from ``offset``.
        offset: Index of the first image, to keep calibration and evaluation images disjoint.
        split: The yaml split to read.
        cache_dir: Where letterboxed arrays are cached; None = :func:`default_cache_dir`.
        progress: Show a progress bar while preprocessing.
    """

    source: str | Path
    num_images: int = 64
    offset: int = 0
    split: str = "train"
    cache_dir: Path | None = None
    progress: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        if self.num_images < 1 or self.offset < 0:
            msg = f"need num_images >= 1 and offset >= 0, got {self.num_images} and {self.offset}"
            raise ConfigError(msg)

    def calibrate(self, info: ModelInfo) -> CalibrationSet:
        """Letterbox the selected images to ``info.imgsz``, loading them from the cache when it has them.

        Raises:
            DataError: If the source has too few images or one cannot be read.
            ConfigError: If the model input is not square.
        """
        h, w = info.imgsz
        if h != w:
            msg = f"calibration letterboxes to a square input; the model's imgsz is {info.imgsz}"
            raise ConfigError(msg)
        dataset = load_dataset(self.source, split=self.split, labels=False).select(self.num_images, self.offset)
        digest = _digest(dataset.images, info.imgsz)
        cache = (self.cache_dir or default_cache_dir()) / f"{digest}.npy"
        if cache.is_file():
            try:
                images = np.load(cache, allow_pickle=False)
                if images.shape == (len(dataset), 3, h, w) and images.dtype == np.uint8:
                    log.info("calibration images loaded from cache %s", cache)
                    return CalibrationSet(images=images, files=dataset.images, digest=digest)
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable calibration cache %s: %s", cache, exc)
        images = self._preprocess(dataset.images, h)
        try:
            with atomic_open(cache) as fh:
                np.save(fh, images, allow_pickle=False)
        except OSError as exc:  # a cache that cannot be written (full disk, read-only) only costs the next run time
            log.warning(
                "calibration images not cached in %s (%s); set YOLOQUANT_CACHE to a writable folder", cache.parent, exc
            )
        return CalibrationSet(images=images, files=dataset.images, digest=digest)

    def _preprocess(self, files: tuple[Path, ...], imgsz: int) -> np.ndarray:
        from tqdm import tqdm

        out = np.empty((len(files), 3, imgsz, imgsz), np.uint8)
        for i, f in enumerate(tqdm(files, desc="calibration images", disable=not self.progress, leave=False)):
            out[i] = preprocess(read_image(f), imgsz)[0]
        return out
