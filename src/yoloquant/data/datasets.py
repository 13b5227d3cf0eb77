"""``Dataset``: images (+ ground truth) from an image folder, an Ultralytics yaml or a COCO json.

Example:
    >>> ds = load_dataset("assets/coco64.yaml")  # doctest: +SKIP
    >>> len(ds.select(16).images)  # doctest: +SKIP
    16
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yoloquant._optional import require
from yoloquant.data.coco_json import read_coco_json
from yoloquant.data.images import image_size, is_image, list_images
from yoloquant.data.labels import GroundTruth, label_path_for, read_yolo_labels
from yoloquant.errors import DataError

__all__ = ["Dataset", "dataset_of_files", "load_dataset"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """An ordered set of images, optionally with ground truth.

    Attributes:
        images: Image paths in a deterministic (sorted) order.
        labels: Ground truth per image, or None when the source has no labels.
        names: Class index -> name, when the source defines them.
        source: What the dataset was loaded from (for reports).
        coco_json: The COCO json it came from, so evaluation can score against it directly.
        image_ids: COCO image id of each image (COCO json datasets only).
        category_ids: Class index -> COCO category id (COCO json datasets only).
    """

    images: tuple[Path, ...]
    labels: tuple[GroundTruth, ...] | None = None
    names: dict[int, str] | None = None
    source: str = ""
    coco_json: Path | None = None
    image_ids: tuple[int, ...] | None = None
    category_ids: dict[int, int] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def select(self, num: int | None, offset: int = 0) -> Dataset:
        """The images ``offset .. offset + num`` (all from ``offset`` when ``num`` is None).

        Raises:
            DataError: If the dataset has fewer images than asked for.

        Example:
            >>> Dataset(images=(Path("a.jpg"), Path("b.jpg"))).select(1, offset=1).images
            (PosixPath('b.jpg'),)
        """
        if offset < 0 or (num is not None and num < 1):
            msg = f"select needs num >= 1 (or None) and offset >= 0, got num={num}, offset={offset}"
            raise DataError(msg)
        stop = len(self) if num is None else offset + num
        if stop > len(self) or offset >= len(self):
            msg = (
                f"asked for {num if num is not None else 'all'} image(s) from offset {offset}, but "
                f"{self.source or 'the dataset'} has {len(self)} images; lower num_images / offset"
            )
            raise DataError(msg)
        window = slice(offset, stop)
        return dataclasses.replace(
            self,
            images=self.images[window],
            labels=self.labels[window] if self.labels is not None else None,
            image_ids=self.image_ids[window] if self.image_ids is not None else None,
        )

    def require_boxes(self, names: dict[int, str] | None = None) -> Dataset:
        """This dataset, if its ground truth has at least one box (and only classes of ``names``): what an mAP needs.

        Some images without objects are normal (background images); a set where every image has none
        would score an mAP of 0.0 that means nothing, so it is refused.

        Args:
            names: The model's class names; a ground-truth class outside them is refused.

        Raises:
            DataError: Saying why there is nothing to score (no labels at all, or every label empty or
                missing), or which image has a class the model lacks, and what to pass instead.

        Example:
            >>> load_dataset("assets/coco64.yaml").select(8).require_boxes().source  # doctest: +SKIP
            'assets/coco64.yaml[val]'
        """
        where = self.source or "the dataset"
        if self.labels is None:
            msg = (
                f"{where} has no labels (no labels/ folder beside its images/ folder, or loaded with labels=False), "
                "so it cannot be evaluated; "
                "give an image folder with a sibling labels/ folder of YOLO .txt files, a dataset yaml or a COCO json"
            )
            raise DataError(msg)
        if names is not None:
            self._check_classes(len(names))
        if any(len(gt) for gt in self.labels):
            return self
        if self.coco_json is not None:
            msg = (
                f"{where}: none of the {len(self)} selected images has an annotation of the model's classes "
                "(crowd boxes do not count), so there is nothing to score and the mAP would be 0; check the "
                "json's annotations and category names, or select other images"
            )
            raise DataError(msg)
        files = [label_path_for(f) for f in self.images]
        missing = sum(not f.is_file() for f in files)
        msg = (
            f"{where}: all {len(self)} selected images have no boxes ({len(self) - missing} label files empty, "
            f"{missing} missing, e.g. {files[0]}), so there is nothing to score and the mAP would be 0; check "
            "that the labels/ folder holds the YOLO .txt files of these images, or select other images"
        )
        raise DataError(msg)

    def _check_classes(self, num_classes: int) -> None:
        for image, gt in zip(self.images, self.labels or (), strict=True):
            if len(gt) and int(gt.classes.max()) >= num_classes:
                label = label_path_for(image) if self.coco_json is None else self.coco_json
                msg = (
                    f"{label}: class id {int(gt.classes.max())} (image {image.name}) is out of range for the model's "
                    f"{num_classes} classes (valid: 0-{num_classes - 1}); fix the label, or load the dataset with "
                    "load_dataset(..., names=model.info.names), which names the line"
                )
                raise DataError(msg)


def load_dataset(
    spec: str | Path,
    *,
    split: str = "val",
    names: dict[int, str] | None = None,
    images_dir: str | Path | None = None,
    labels: bool = True,
) -> Dataset:
    """Load a dataset from an image folder, an Ultralytics dataset yaml or a COCO json.

    Args:
        spec: A folder of images (labels from the sibling ``labels/`` folder when there is one), a
            ``.yaml`` in Ultralytics' format (with ``kpt_shape``, a pose dataset: its labels' keypoints are
            read too), or a COCO ``instances_*.json`` / ``person_keypoints_*.json``.
        split: The yaml key to read (``val``, ``train``, ``test``).
        names: The model's class names: checks yolo class ids and maps COCO categories by name.
        images_dir: The images of a COCO json, when not found by convention.
        labels: Read ground truth; False skips it (enough for calibration, and faster).

    Raises:
        DataError: If the source or anything it points to is missing or malformed.

    Example:
        >>> ds = load_dataset("assets/coco64/images")  # doctest: +SKIP
        >>> ds.labels is not None  # doctest: +SKIP
        True
    """
    path = Path(spec).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _load_yaml(path, split, names, labels)
    if suffix == ".json":
        return _load_coco(path, names, images_dir, labels)
    if path.is_dir():
        return _from_images(list_images(path), names, labels, source=str(path))
    msg = f"dataset {path} is not an image folder, a .yaml or a COCO .json (or it does not exist)"
    raise DataError(msg)


def dataset_of_files(files: tuple[Path, ...] | list[Path], names: dict[int, str] | None = None) -> Dataset:
    """A dataset of these image files, with ground truth from their sibling ``labels/`` folder if there is one.

    Example:
        >>> dataset_of_files(calibration_set.files).labels is not None  # doctest: +SKIP
        True
    """
    return _from_images(list(files), names, labels=True, source=str(Path(files[0]).parent) if files else "")


def _load_coco(path: Path, names: dict[int, str] | None, images_dir: str | Path | None, labels: bool) -> Dataset:
    if not path.is_file():
        msg = f"COCO json {path} does not exist"
        raise DataError(msg)
    coco = read_coco_json(path, Path(images_dir) if images_dir is not None else None, names)
    return Dataset(
        images=coco.images,
        labels=coco.labels if labels else None,
        names=coco.names,
        source=str(path),
        coco_json=path.resolve(),
        image_ids=coco.image_ids,
        category_ids=coco.category_ids,
    )


def _from_images(
    files: list[Path],
    names: dict[int, str] | None,
    labels: bool,
    source: str,
    kpt_shape: tuple[int, int] | None = None,
) -> Dataset:
    label_files = [label_path_for(f) for f in files]
    if not labels or not any(lf.parent.is_dir() for lf in label_files):
        return Dataset(images=tuple(files), names=names, source=source)
    num_classes = len(names) if names else None
    gts = tuple(
        read_yolo_labels(lf, image_size(f), num_classes, kpt_shape=kpt_shape)
        for f, lf in zip(files, label_files, strict=True)
    )
    return Dataset(images=tuple(files), labels=gts, names=names, source=source)


def _read_yaml(path: Path) -> dict[str, Any]:
    yaml = require("yaml")
    if not path.is_file():
        msg = f"dataset yaml {path} does not exist"
        raise DataError(msg)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        msg = f"cannot parse dataset yaml {path}: {exc}"
        raise DataError(msg) from exc
    if not isinstance(data, dict):
        msg = f"dataset yaml {path} is not a mapping with keys like 'path', 'val' and 'names'"
        raise DataError(msg)
    return data


def _yaml_names(data: dict[str, Any], path: Path) -> dict[int, str] | None:
    raw = data.get("names")
    if raw is None:
        return None
    if isinstance(raw, list):
        return dict(enumerate(str(n) for n in raw))
    if isinstance(raw, dict):
        return {int(k): str(v) for k, v in raw.items()}
    msg = f"{path}: 'names' must be a list or a mapping of class index to name, got {type(raw).__name__}"
    raise DataError(msg)


def _yaml_kpt_shape(data: dict[str, Any], path: Path) -> tuple[int, int] | None:
    """A pose dataset's ``kpt_shape: [keypoints, 2 or 3]``; None where the yaml has none."""
    raw = data.get("kpt_shape")
    if raw is None:
        return None
    if not (isinstance(raw, list) and len(raw) == 2 and all(isinstance(v, int) for v in raw) and raw[1] in (2, 3)):
        msg = f"{path}: 'kpt_shape' must be [number of keypoints, 2 or 3] (e.g. [17, 3]), got {raw!r}"
        raise DataError(msg)
    return raw[0], raw[1]


def _yaml_root(data: dict[str, Any], path: Path) -> Path:
    """Ultralytics' rule: ``path`` if given (absolute, or relative to the cwd), else the yaml's folder."""
    if not data.get("path"):
        return path.resolve().parent
    root = Path(str(data["path"])).expanduser()
    if root.is_absolute() or root.exists():
        return root.resolve()
    beside = path.resolve().parent / root
    return beside if beside.exists() else root.resolve()


def _resolve_entry(root: Path, entry: str) -> Path:
    target = (root / entry).resolve()
    if not target.exists() and entry.startswith("../"):
        target = (root / entry[3:]).resolve()
    return target


def _images_of(target: Path, where: str) -> list[Path]:
    if target.is_dir():
        return list_images(target)
    if target.is_file() and target.suffix.lower() == ".txt":
        lines = [x.strip() for x in target.read_text(encoding="utf-8-sig").splitlines() if x.strip()]
        files = [target.parent / x[2:] if x.startswith("./") else Path(x) for x in lines]
        files = [f if f.is_absolute() or f.exists() else target.parent / f for f in files]
        return [f for f in files if is_image(f)]
    if target.is_file() and is_image(target):
        return [target]
    msg = f"{where} points to {target}, which does not exist; fix the yaml's 'path' or this key"
    raise DataError(msg)


def _load_yaml(path: Path, split: str, names: dict[int, str] | None, labels: bool) -> Dataset:
    data = _read_yaml(path)
    value = data.get(split)
    if not value:
        msg = f"{path} has no '{split}' key (has: {sorted(data)}); pass split=... or add it"
        raise DataError(msg)
    root = _yaml_root(data, path)
    entries = value if isinstance(value, list) else [value]
    files: list[Path] = []
    for entry in entries:
        files += _images_of(_resolve_entry(root, str(entry)), f"{path} key '{split}'")
    if not files:
        msg = f"{path} key '{split}' lists no images"
        raise DataError(msg)
    files = sorted(set(files), key=str)
    yaml_names = _yaml_names(data, path)
    source = f"{path}[{split}]"
    kpt_shape = _yaml_kpt_shape(data, path)
    return _from_images(files, names if names is not None else yaml_names, labels, source, kpt_shape)
