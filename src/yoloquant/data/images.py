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

__all__ = ["IMAGE_SUFFIXES", "as_bgr", "image_size", "is_image", "list_images", "read_image"]

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


def as_bgr(image: object, what: str = "image") -> np.ndarray:
    """An in-memory image as BGR uint8 ``[H, W, 3]``, or a DataError that says what to pass instead.

    Accepts what OpenCV and NumPy code hands around: BGR ``[H, W, 3]``, grayscale ``[H, W]`` or ``[H, W, 1]``,
    BGRA ``[H, W, 4]`` (alpha dropped); uint8, uint16 (high byte, as :func:`read_image`), integers in 0-255,
    and floats in 0-1 (scaled by 255) or 0-255.

    Raises:
        DataError: On None (a failed ``cv2.imread``), a non-array, an empty image, another channel layout,
            or values outside those ranges.

    Example:
        >>> as_bgr(np.zeros((4, 6), np.uint8)).shape
        (4, 6, 3)
    """
    if image is None:
        msg = (
            f"{what} is None, not an image: cv2.imread returns None for a missing or unreadable file; "
            "check the path (or pass the path itself)"
        )
        raise DataError(msg)
    if not isinstance(image, np.ndarray):
        msg = f"{what} is a {type(image).__name__}; pass a BGR uint8 array [H, W, 3] (as cv2.imread returns) or a path"
        raise DataError(msg)
    array = image[:, :, None] if image.ndim == 2 else image
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        msg = f"{what} has shape {image.shape}; pass [H, W, 3] BGR, [H, W] grayscale or [H, W, 4] BGRA (not CHW)"
        raise DataError(msg)
    if array.shape[0] == 0 or array.shape[1] == 0:
        msg = f"{what} is empty (shape {image.shape}); pass an image of at least 1x1 pixels"
        raise DataError(msg)
    array = _as_uint8(array, what)
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def _as_uint8(array: np.ndarray, what: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    kind = array.dtype.kind
    if kind not in "iuf":
        msg = f"{what} is a {array.dtype} array; pass uint8 BGR (0-255), or floats in 0-1 or 0-255"
        raise DataError(msg)
    low, high = float(array.min()), float(array.max())
    if kind == "f" and np.isfinite(low) and np.isfinite(high) and low >= 0 and high <= 1:
        return np.asarray(np.rint(array * 255.0), np.uint8)  # float in 0..1, as from img / 255
    if np.isfinite(low) and np.isfinite(high) and low >= 0 and high <= 255:
        return np.asarray(np.rint(array), np.uint8)
    msg = (
        f"{what} is {array.dtype} with values {low:g}..{high:g}; pass uint8 BGR (0-255), or floats in 0-1 or 0-255 "
        "(e.g. np.clip(image, 0, 255).astype(np.uint8))"
    )
    raise DataError(msg)
