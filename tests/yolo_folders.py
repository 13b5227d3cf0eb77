"""A few images of an Ultralytics dataset copied into a folder of their own, for ``yolo val`` to read."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path


def yolo_subset(images: Iterable[Path], source: Path, root: Path) -> Path:
    """``images`` and their labels from ``source`` (its ``labels/`` and ``data.yaml``) under ``root``; its yaml.

    ``yolo val`` writes a labels cache beside the labels, so it gets a copy instead of the shared folder.
    """
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for image in images:
        shutil.copy(image, root / "images" / image.name)
        label = source / "labels" / f"{image.stem}.txt"
        if label.exists():
            shutil.copy(label, root / "labels" / label.name)
    (root / "data.yaml").write_text((source / "data.yaml").read_text())
    return root / "data.yaml"
