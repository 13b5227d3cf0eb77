"""Loading datasets from folders, Ultralytics yamls and COCO json, and their error messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from yoloquant.data.datasets import Dataset, load_dataset
from yoloquant.data.images import list_images, read_image
from yoloquant.errors import DataError

ASSETS = Path(__file__).resolve().parents[2] / "assets"
COCO64 = ASSETS / "coco64"
pytest.importorskip("cv2")


def _small_set(tmp_path: Path, n: int = 3) -> Path:
    """A copy of the first ``n`` bundled images with their labels: <tmp>/ds/images, <tmp>/ds/labels."""
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for image in list_images(COCO64 / "images")[:n]:
        shutil.copy(image, root / "images")
        label = COCO64 / "labels" / f"{image.stem}.txt"
        if label.exists():
            shutil.copy(label, root / "labels")
    return root


def test_folder_labels_are_pixel_boxes(tmp_path: Path) -> None:
    root = _small_set(tmp_path)
    ds = load_dataset(root / "images")
    assert [p.name for p in ds.images] == sorted(p.name for p in (root / "images").iterdir())
    assert ds.labels is not None
    first = ds.labels[0]
    h, w = read_image(ds.images[0]).shape[:2]
    assert first.shape == (h, w)
    rows = np.loadtxt(root / "labels" / f"{ds.images[0].stem}.txt", ndmin=2)
    cx, cy, bw, bh = rows[0, 1:]
    expected = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
    i = int(np.argmin(np.abs(first.boxes - np.asarray(expected, np.float32)).sum(1)))
    np.testing.assert_allclose(first.boxes[i], expected, atol=1e-3)
    assert int(first.classes[i]) == int(rows[0, 0])


def test_image_without_label_file_has_no_objects_and_no_labels_dir_means_none(tmp_path: Path) -> None:
    root = _small_set(tmp_path)
    missing = next((root / "labels").iterdir())
    missing.unlink()
    ds = load_dataset(root / "images")
    assert ds.labels is not None
    assert len(ds.labels[[p.stem for p in ds.images].index(missing.stem)]) == 0
    shutil.rmtree(root / "labels")
    assert load_dataset(root / "images").labels is None


def test_yaml_matches_folder_and_has_names() -> None:
    ds = load_dataset(ASSETS / "coco64.yaml")
    assert len(ds) == 64 and ds.names is not None and ds.names[0] == "person"
    assert ds.images == tuple(list_images(COCO64 / "images"))
    assert ds.labels is not None and sum(len(g) for g in ds.labels) > 400


def test_yaml_path_key_list_and_txt_split(tmp_path: Path) -> None:
    root = _small_set(tmp_path, n=4)
    images = sorted((root / "images").iterdir())
    (root / "val.txt").write_text("\n".join(f"./images/{p.name}" for p in images[:2]) + "\n")
    yaml_dir = tmp_path / "cfg"
    yaml_dir.mkdir()
    (yaml_dir / "d.yaml").write_text(f"path: {root}\ntrain: [images, images]\nval: val.txt\nnames: [person, bicycle]\n")
    with pytest.raises(DataError, match=r"labels/.*\.txt:\d+: class id \d+ .*out of range for 2 class names"):
        load_dataset(yaml_dir / "d.yaml")  # bundled labels use 80 classes
    ds = load_dataset(yaml_dir / "d.yaml", names={i: str(i) for i in range(80)})
    assert [p.name for p in ds.images] == [p.name for p in images[:2]]
    assert len(load_dataset(yaml_dir / "d.yaml", split="train", labels=False)) == 4  # deduplicated


def test_coco_json_found_by_convention_and_mapped_by_name() -> None:
    names = load_dataset(ASSETS / "coco64.yaml", labels=False).names
    ds = load_dataset(COCO64 / "annotations" / "instances_coco64.json", names=names)
    assert len(ds) == 64 and ds.coco_json is not None and ds.image_ids is not None
    assert ds.category_ids is not None and ds.category_ids[0] == 1 and ds.category_ids[79] == 90
    data = json.loads((COCO64 / "annotations" / "instances_coco64.json").read_text())
    crowd = sum(a.get("iscrowd", 0) for a in data["annotations"])
    assert ds.labels is not None and sum(len(g) for g in ds.labels) == len(data["annotations"]) - crowd
    # A box from xywh: the first non-crowd annotation of the first image.
    ann = next(a for a in data["annotations"] if a["image_id"] == ds.image_ids[0] and not a.get("iscrowd"))
    x, y, w, h = ann["bbox"]
    assert any(np.allclose(b, [x, y, x + w, y + h], atol=1e-3) for b in ds.labels[0].boxes)


def test_coco_json_explicit_images_dir_and_not_found(tmp_path: Path) -> None:
    ann = tmp_path / "instances_val2017.json"
    shutil.copy(COCO64 / "annotations" / "instances_coco64.json", ann)
    with pytest.raises(DataError, match=r"images_dir"):
        load_dataset(ann)
    assert len(load_dataset(ann, images_dir=COCO64 / "images")) == 64


def test_select_is_deterministic_and_checks_size() -> None:
    ds = load_dataset(COCO64 / "images", labels=False)
    part = ds.select(8, offset=4)
    assert part.images == ds.images[4:12]
    with pytest.raises(DataError, match=r"has 64 images"):
        ds.select(10, offset=60)
    assert Dataset(images=()).source == ""


def test_missing_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope.*does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"no images found in .*empty.*\.jpg"):
        load_dataset(tmp_path / "empty")


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"broken\.jpg"):
        read_image(bad)
    with pytest.raises(DataError, match=r"missing\.jpg"):
        read_image(tmp_path / "missing.jpg")


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("-1 0.5 0.5 0.1 0.1", r"class id -1"),
        ("1.5 0.5 0.5 0.1 0.1", r"class id 1\.5"),
        ("80 0.5 0.5 0.1 0.1", r"class id 80 .*out of range for 80"),
        ("cat 0.5 0.5 0.1 0.1", r"non-number .*'cat 0\.5"),
        ("0 0.5 0.5 0.1", r"expected 5 values"),
    ],
)
def test_bad_label_line_names_file_and_line(tmp_path: Path, line: str, pattern: str) -> None:
    root = _small_set(tmp_path, n=1)
    label = next((root / "labels").iterdir())
    label.write_text("0 0.5 0.5 0.2 0.2\n" + line + "\n")
    with pytest.raises(DataError, match=rf"{label.name}:2: .*{pattern}"):
        load_dataset(root / "images", names={i: str(i) for i in range(80)})


def test_yaml_pointing_nowhere_names_yaml_and_key(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_text("val: does/not/exist\nnames: [a]\n")
    with pytest.raises(DataError, match=r"d\.yaml key 'val' points to .*does/not/exist"):
        load_dataset(tmp_path / "d.yaml")
    with pytest.raises(DataError, match=r"no 'test' key"):
        load_dataset(tmp_path / "d.yaml", split="test")
