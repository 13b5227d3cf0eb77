"""ImageCalibrator: letterboxed uint8 data, content-hash cache hits and misses."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from yoloquant.artifacts import ModelInfo
from yoloquant.data import calibration
from yoloquant.data.calibration import ImageCalibrator, default_cache_dir
from yoloquant.data.images import list_images, read_image
from yoloquant.data.letterbox import preprocess
from yoloquant.errors import ConfigError, DataError
from yoloquant.protocols import Calibrator

ASSETS = Path(__file__).resolve().parents[2] / "assets"
INFO = ModelInfo(names={0: "a"}, imgsz=(320, 320))
pytest.importorskip("cv2")


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for f in list_images(ASSETS / "coco64" / "images")[:4]:
        shutil.copy(f, folder)
    return folder


def test_calibrate_letterboxes_and_caches(images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calib = ImageCalibrator(source=images, num_images=3, offset=1, cache_dir=tmp_path / "cache", progress=False)
    assert isinstance(calib, Calibrator)
    first = calib.calibrate(INFO)
    files = list_images(images)[1:4]
    assert first.files == tuple(files) and first.images.shape == (3, 3, 320, 320)
    np.testing.assert_array_equal(first.images[0], preprocess(read_image(files[0]), 320)[0])
    assert (tmp_path / "cache" / f"{first.digest}.npy").is_file()
    assert not list((tmp_path / "cache").glob("*.tmp"))  # the atomic write left no temp file

    def no_preprocessing(*args: object, **kwargs: object) -> None:
        msg = "a cache hit must not preprocess"
        raise AssertionError(msg)

    monkeypatch.setattr(calibration, "preprocess", no_preprocessing)
    second = calib.calibrate(INFO)
    assert second.digest == first.digest
    np.testing.assert_array_equal(second.images, first.images)


def test_changed_image_bytes_or_size_change_the_key(images: Path, tmp_path: Path) -> None:
    calib = ImageCalibrator(source=images, num_images=2, cache_dir=tmp_path / "cache", progress=False)
    before = calib.calibrate(INFO).digest
    assert calib.calibrate(ModelInfo(names={0: "a"}, imgsz=(256, 256))).digest != before
    target = list_images(images)[1]
    target.write_bytes(target.read_bytes() + b"\0")  # same pixels, different bytes
    assert calib.calibrate(INFO).digest != before
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3


def test_cache_dir_env_and_errors(images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLOQUANT_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env" / "calib"
    ImageCalibrator(source=images, num_images=1, progress=False).calibrate(INFO)
    assert len(list((tmp_path / "env" / "calib").glob("*.npy"))) == 1
    with pytest.raises(DataError, match=r"has 4 images"):
        ImageCalibrator(source=images, num_images=5, progress=False).calibrate(INFO)
    with pytest.raises(ConfigError, match=r"num_images >= 1"):
        ImageCalibrator(source=images, num_images=0)
