"""The torch letterbox against the CPU (OpenCV) one: the same geometry exactly, pixels within one level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from yoloquant.data.images import read_image
from yoloquant.data.letterbox import preprocess

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

from yoloquant.data.letterbox_gpu import letterbox_batch, letterbox_frame, preprocess_via_torch  # noqa: E402

IMAGES = sorted((Path(__file__).resolve().parents[2] / "assets" / "coco64" / "images").glob("*.jpg"))[:12]


@pytest.mark.parametrize("mode", ["val", "predict"])
@pytest.mark.parametrize("imgsz", [640, 320])  # 320: every image is resized (down)
def test_same_geometry_and_pixels_within_one_level(mode: str, imgsz: int) -> None:
    worst, differing = 0, []
    for path in IMAGES:
        image = read_image(path)
        ref, ref_meta = preprocess(image, imgsz, mode=mode)  # type: ignore[arg-type]
        got, meta = letterbox_frame(torch.from_numpy(image), imgsz, mode=mode)  # type: ignore[arg-type]
        assert meta == ref_meta, path.name  # the same boxes back, exactly
        diff = np.abs(got.numpy().astype(np.int16) - ref.astype(np.int16))
        worst = max(worst, int(diff.max()))
        differing.append(float((diff > 0).mean()))
    assert worst <= 1  # OpenCV's 11-bit fixed-point weights against float bilinear
    assert max(differing) < 0.15 and np.mean(differing) < 0.1


def test_a_batch_of_mixed_sizes_and_the_numpy_wrapper() -> None:
    frames = [torch.from_numpy(read_image(p)) for p in IMAGES[:3]]
    batch, metas = letterbox_batch(frames, 320)
    assert batch.shape == (3, 3, 320, 320) and batch.dtype == torch.uint8 and len(metas) == 3
    chw, meta = preprocess_via_torch(read_image(IMAGES[0]), 320, device="cpu")
    assert chw.shape == (3, 320, 320) and meta == preprocess(read_image(IMAGES[0]), 320)[1]
    assert (chw[:, 0, 0] == 114).all() or (chw[:, -1, -1] == 114).all() or meta.pad == (0, 0)
