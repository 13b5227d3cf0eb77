"""Letterbox preprocessing vs Ultralytics' own val dataset and predict transform, byte for byte."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from yoloquant.data.images import list_images, read_image
from yoloquant.data.letterbox import LetterboxMeta, normalize_pixels, preprocess, scale_boxes

ASSETS = Path(__file__).resolve().parents[2] / "assets"
cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled images plus synthetic odd shapes (upscaled, tall, thin, exact), in a scratch copy."""
    root = tmp_path_factory.mktemp("lb") / "images"
    shutil.copytree(ASSETS / "coco64" / "images", root)
    rng = np.random.default_rng(0)
    for h, w in [(37, 100), (1000, 300), (640, 640), (641, 639), (333, 500), (12, 700)]:
        cv2.imwrite(str(root / f"synthetic_{h}x{w}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return root


def test_val_preprocess_is_byte_identical_to_ultralytics_dataset(image_dir: Path) -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    pytest.importorskip("ultralytics")
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset

    cfg = get_cfg(overrides={"imgsz": 640, "rect": False, "task": "detect"})
    data = {"names": {i: str(i) for i in range(80)}, "nc": 80, "channels": 3}
    dataset = build_yolo_dataset(cfg, str(image_dir), 1, data, mode="val")
    assert len(dataset) == len(list_images(image_dir)) == 70
    for i in range(len(dataset)):
        item = dataset[i]
        ours, meta = preprocess(read_image(item["im_file"]), 640)
        assert ours.dtype == np.uint8 and ours.shape == (3, 640, 640)
        np.testing.assert_array_equal(ours, item["img"].numpy(), err_msg=item["im_file"])
        (gain_y, gain_x), (pad_x, pad_y) = item["ratio_pad"]
        assert meta.gain == pytest.approx((gain_y, gain_x), rel=1e-12)
        assert meta.pad == (pad_x, pad_y)
        assert meta.shape == tuple(item["ori_shape"])


def test_scale_boxes_matches_ultralytics_with_ratio_pad(image_dir: Path) -> None:
    pytest.importorskip("ultralytics")
    from ultralytics.utils import ops

    rng = np.random.default_rng(1)
    for name in ["synthetic_37x100.png", "synthetic_1000x300.png", "000000000009.jpg"]:
        _, meta = preprocess(read_image(image_dir / name), 640)
        xy = rng.uniform(-20, 660, (50, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(1, 300, (50, 2)).astype(np.float32)], 1)
        theirs = ops.scale_boxes((640, 640), boxes.copy(), meta.shape, ratio_pad=(meta.gain, meta.pad))
        np.testing.assert_allclose(scale_boxes(boxes, meta), theirs, rtol=1e-6, atol=1e-4)


def test_predict_mode_matches_ultralytics_letterbox_and_default_scale_boxes(image_dir: Path) -> None:
    pytest.importorskip("ultralytics")
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils import ops

    for name in ["synthetic_37x100.png", "synthetic_333x500.png", "000000000025.jpg"]:
        image = read_image(image_dir / name)
        ours, meta = preprocess(image, 640, mode="predict")
        theirs = LetterBox((640, 640), auto=False, stride=32)(image=image)
        np.testing.assert_array_equal(ours, theirs.transpose(2, 0, 1)[::-1])
        boxes = np.array([[10.0, 100.0, 300.0, 500.0], [0.0, 0.0, 640.0, 640.0]], np.float32)
        expected = ops.scale_boxes((640, 640), boxes.copy(), image.shape[:2])
        np.testing.assert_allclose(scale_boxes(boxes, meta), expected, rtol=1e-6, atol=1e-4)


def test_hand_computed_letterbox() -> None:
    image = np.full((100, 200, 3), (10, 20, 30), np.uint8)  # BGR
    chw, meta = preprocess(image, 64)
    assert meta == LetterboxMeta(shape=(100, 200), gain=(0.32, 0.32), pad=(0, 16))
    assert chw[:, 16:48, :].reshape(3, -1).T.tolist()[0] == [30, 20, 10]  # RGB inside
    assert (chw[:, :16] == 114).all() and (chw[:, 48:] == 114).all()  # gray bands above and below
    back = scale_boxes(np.array([[0.0, 16.0, 64.0, 48.0], [-5.0, 0.0, 70.0, 64.0]]), meta)
    np.testing.assert_allclose(back, [[0, 0, 200, 100], [0, 0, 200, 100]])  # second one clipped


def test_normalize_pixels_is_bit_identical_to_float32_division() -> None:
    every = np.arange(256, dtype=np.uint8)
    out = normalize_pixels(every)
    assert out.dtype == np.float32
    # independent reference: exact rational x/255 rounded once to the nearest float32
    reference = np.array([np.float32(np.float64(x) / 255.0) for x in range(256)], np.float32)
    assert out.tobytes() == reference.tobytes()
    assert out[0] == 0.0 and out[255] == 1.0
    torch = pytest.importorskip("torch")  # what Ultralytics' validator computes: img.float() / 255
    assert out.tobytes() == (torch.from_numpy(every).float() / 255).numpy().tobytes()


def test_normalize_pixels_of_a_view_is_contiguous_and_unchanged() -> None:
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (1, 8, 6, 3), dtype=np.uint8)
    view = hwc.transpose(0, 3, 1, 2)[:, ::-1]  # a strided view, as a CHW / RGB flip gives
    out = normalize_pixels(view)
    assert out.flags.c_contiguous and out.shape == (1, 3, 8, 6)
    assert out.tobytes() == np.ascontiguousarray(view.astype(np.float32) / 255.0).tobytes()  # the code it replaced
