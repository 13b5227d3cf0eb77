"""Finding and reading images, the way Ultralytics does.

Example:
    >>> from yoloquant.data.images import list_images, read_image  # doctest: +SKIP
    >>> files = list_images("datasets/coco128/images/train2017")  # doctest: +SKIP
    >>> read_image(files[0]).shape  # doctest: +SKIP
    (480, 640, 3)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yoloquant._optional import available, require
from yoloquant.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "image_size", "is_image", "list_images", "read_image"]

# The suffixes OpenCV decodes out of Ultralytics' IMG_FORMATS (avif / heic / heif need Pillow plugins).
IMAGE_SUFFIXES: tuple[str, ...] = (".bmp", ".dng", ".jp2", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp")


def is_image(path: Path) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path | str) -> list[Path]:
    """All images under ``folder`` (recursively, like Ultralytics), sorted by path.

    Args:
        folder: A directory of images.

    Returns:
        Image paths sorted by their path string, so the order is deterministic.

    Raises:
        DataError: If ``folder`` is not a directory or holds no images.

    Example:
        >>> list_images("assets/coco64/images")[0].name  # doctest: +SKIP
        '000000000009.jpg'
    """
    root = Path(folder)
    if not root.is_dir():
        msg = f"image folder {root} does not exist or is not a directory; pass a folder of images"
        raise DataError(msg)
    files = sorted((p for p in root.rglob("*") if p.is_file() and is_image(p)), key=str)
    if not files:
        msg = f"no images found in {root}; accepted suffixes: {', '.join(IMAGE_SUFFIXES)}"
        raise DataError(msg)
    return files


def read_image(path: Path | str) -> np.ndarray:
    """Read an image as BGR uint8 ``[H, W, 3]``, with the same decoder call as Ultralytics' ``imread``.

    Args:
        path: Image file.

    Raises:
        DataError: If the file is missing, empty or cannot be decoded.

    Example:
        >>> read_image("assets/coco64/images/000000000009.jpg").dtype  # doctest: +SKIP
        dtype('uint8')
    """
    cv2 = require("cv2")
    file = Path(path)
    try:
        data = np.fromfile(file, np.uint8)
    except OSError as exc:
        msg = f"cannot read image {file}: {exc}; check that the file exists and is readable"
        raise DataError(msg) from exc
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        msg = f"image {file} is empty or corrupt ({data.size} bytes could not be decoded); replace or remove it"
        raise DataError(msg)
    if image.dtype != np.uint8:  # 16-bit inputs: keep the high byte, as Ultralytics does
        image = (image >> 8).astype(np.uint8)
    return np.asarray(image)


_EXIF_ORIENTATION = 0x0112
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def image_size(path: Path | str) -> tuple[int, int]:
    """(height, width) of an image as decoded (EXIF rotation applied), from its header when Pillow is installed.

    Raises:
        DataError: If the file is missing or not an image.

    Example:
        >>> image_size("assets/coco64/images/000000000009.jpg")  # doctest: +SKIP
        (480, 640)
    """
    file = Path(path)
    if not available("PIL"):
        h, w = read_image(file).shape[:2]
        return int(h), int(w)
    pil_image = require("PIL.Image")
    try:
        with pil_image.open(file) as im:
            w, h = im.size
            if im.getexif().get(_EXIF_ORIENTATION) in _ROTATED:
                w, h = h, w
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow signals unreadable files with these
        msg = f"image {file} is missing or corrupt ({exc}); replace or remove it"
        raise DataError(msg) from exc
    return int(h), int(w)
