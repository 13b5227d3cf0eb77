"""COCO ``instances_*.json`` files: images, boxes and the category-name mapping."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yoloquant.data.labels import COORD_TOLERANCE, GroundTruth
from yoloquant.errors import DataError

__all__ = ["CocoJson", "find_images_dir", "read_coco_json"]


@dataclass(frozen=True, eq=False)
class CocoJson:
    """What a COCO json holds, mapped onto model class indices.

    Attributes:
        images: Image paths, sorted.
        image_ids: COCO image id of each image.
        labels: Ground truth per image (iscrowd=1 skipped), classes as model indices.
        names: Model class index -> name.
        category_ids: Model class index -> COCO category id, for classes the json has.
    """

    images: tuple[Path, ...]
    image_ids: tuple[int, ...]
    labels: tuple[GroundTruth, ...]
    names: dict[int, str]
    category_ids: dict[int, int]


def _split_candidates(json_path: Path) -> list[str]:
    stem = json_path.stem
    stem = stem.removeprefix("instances_")
    parts = stem.split("_")
    return ["_".join(parts[:i]) for i in range(len(parts), 0, -1)]


def find_images_dir(json_path: Path) -> Path:
    """Find a COCO json's images by convention, next to its ``annotations/`` folder.

    For ``<root>/annotations/instances_train2017.json`` it tries ``<root>/images/train2017``,
    ``<root>/train2017`` and ``<root>/images``.

    Raises:
        DataError: Listing the folders it tried.

    Example:
        >>> find_images_dir(Path("coco/annotations/instances_val2017.json"))  # doctest: +SKIP
        PosixPath('coco/images/val2017')
    """
    root = json_path.resolve().parent
    root = root.parent if root.name == "annotations" else root
    tried: list[Path] = []
    for split in _split_candidates(json_path):
        tried += [root / "images" / split, root / split]
    tried.append(root / "images")
    for candidate in tried:
        if candidate.is_dir():
            return candidate
    msg = (
        f"cannot find the images of {json_path}; tried {', '.join(str(t) for t in tried)}. "
        "Pass load_dataset(json, images_dir=...)"
    )
    raise DataError(msg)


def _load(json_path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        msg = f"cannot read COCO json {json_path}: {exc}"
        raise DataError(msg) from exc
    for key in ("images", "annotations", "categories"):
        if key not in data:
            msg = f"{json_path} has no '{key}' key, so it is not a COCO instances json"
            raise DataError(msg)
    return data


def _class_mapping(
    categories: list[dict[str, Any]], names: dict[int, str] | None, json_path: Path
) -> tuple[dict[int, str], dict[int, int]]:
    """(model names, model index -> category id); categories are matched to names by name."""
    cats = sorted(categories, key=lambda c: int(c["id"]))
    if names is None:
        names = {i: str(c["name"]) for i, c in enumerate(cats)}
    by_name = {str(c["name"]): int(c["id"]) for c in cats}
    category_ids = {i: by_name[n] for i, n in names.items() if n in by_name}
    if not category_ids:
        msg = (
            f"no category name of {json_path} matches a model class name "
            f"(json: {sorted(by_name)[:5]}..., model: {list(names.values())[:5]}...)"
        )
        raise DataError(msg)
    return names, category_ids


def _resolve_image(images_dir: Path, file_name: str) -> Path:
    path = images_dir / file_name
    return path if path.is_file() else images_dir / Path(file_name).name


def read_coco_json(json_path: Path, images_dir: Path | None = None, names: dict[int, str] | None = None) -> CocoJson:
    """Read a COCO instances json into image paths and per-image ground truth.

    Args:
        json_path: ``instances_*.json``.
        images_dir: Folder of its images; None finds it with :func:`find_images_dir`.
        names: The model's class names; json categories are mapped to them by name. None uses the
            json's categories in id order.

    Raises:
        DataError: On an unreadable json, no matching category names, or missing image files.

    Example:
        >>> coco = read_coco_json(Path("assets/coco64/annotations/instances_coco64.json"))  # doctest: +SKIP
    """
    data = _load(json_path)
    root = images_dir if images_dir is not None else find_images_dir(json_path)
    names, category_ids = _class_mapping(data["categories"], names, json_path)
    index_of = {cat: idx for idx, cat in category_ids.items()}
    anns: dict[int, list[dict[str, Any]]] = {}
    for ann in data["annotations"]:
        anns.setdefault(int(ann["image_id"]), []).append(ann)
    entries = sorted(
        ((_resolve_image(root, str(im["file_name"])), im) for im in data["images"]), key=lambda e: str(e[0])
    )
    missing = [p for p, _ in entries if not p.is_file()]
    if missing:
        msg = f"{len(missing)} image(s) of {json_path} are not in {root}, e.g. {missing[0]}; pass images_dir=..."
        raise DataError(msg)
    known = {int(c["id"]) for c in data["categories"]}
    for _, im in entries:
        _check_annotations(anns.get(int(im["id"]), []), im, known, json_path)
    labels = tuple(_ground_truth(anns.get(int(im["id"]), []), index_of, im) for _, im in entries)
    return CocoJson(
        images=tuple(p for p, _ in entries),
        image_ids=tuple(int(im["id"]) for _, im in entries),
        labels=labels,
        names=names,
        category_ids=category_ids,
    )


def _check_annotations(anns: list[dict[str, Any]], image: dict[str, Any], known: set[int], json_path: Path) -> None:
    """Each annotation's category is one of the json's, and its box lies inside its image (to a small tolerance)."""
    h, w = int(image["height"]), int(image["width"])
    for ann in anns:
        where = f"{json_path}: annotation id {ann.get('id')} of image {image.get('file_name')} ({w}x{h})"
        if int(ann["category_id"]) not in known:
            msg = (
                f"{where} has category_id {ann['category_id']}, which is not in the json's categories "
                f"({sorted(known)[:8]}...); fix the annotation or add its category"
            )
            raise DataError(msg)
        box = ann.get("bbox")
        if not isinstance(box, list) or len(box) != 4:
            msg = f"{where} has bbox {box!r}; COCO boxes are [x, y, width, height] in pixels"
            raise DataError(msg)
        x, y, bw, bh = (float(v) for v in box)
        tx, ty = max(1.0, COORD_TOLERANCE * w), max(1.0, COORD_TOLERANCE * h)
        if bw < 0 or bh < 0 or x < -tx or y < -ty or x + bw > w + tx or y + bh > h + ty:
            msg = (
                f"{where} has bbox {box} outside the image; COCO boxes are [x, y, width, height] in pixels of the "
                "image (not normalized, not x1 y1 x2 y2): fix the json"
            )
            raise DataError(msg)


def _ground_truth(anns: list[dict[str, Any]], index_of: dict[int, int], image: dict[str, Any]) -> GroundTruth:
    kept = [a for a in anns if not a.get("iscrowd", 0) and int(a["category_id"]) in index_of]
    xywh = np.asarray([a["bbox"] for a in kept], np.float32).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    classes = np.asarray([index_of[int(a["category_id"])] for a in kept], np.int64)
    return GroundTruth(boxes=boxes, classes=classes, shape=(int(image["height"]), int(image["width"])))
