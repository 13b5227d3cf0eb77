"""The fixed-shape decode (what a CUDA graph captures) gives the CPU decoder's detections, scaled to the frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yoloquant import OnnxModel
from yoloquant.data.images import read_image
from yoloquant.data.letterbox import LetterboxMeta, preprocess, scale_boxes
from yoloquant.postprocess.decode import decode


@pytest.fixture(scope="module")
def metas(coco64_images: Path) -> list[LetterboxMeta]:
    return [preprocess(read_image(f), 640)[1] for f in sorted(coco64_images.glob("*.jpg"))[:16]]


@pytest.fixture(scope="module")
def raw_outputs(yolov8n_onnx: Path, coco64_batch: np.ndarray) -> np.ndarray:
    pytest.importorskip("onnxruntime")
    from yoloquant.backends.ort import OrtEngineBuilder

    with OrtEngineBuilder().build(OnnxModel.load(yolov8n_onnx)) as engine:
        return np.concatenate([engine.infer(coco64_batch[i : i + 1])[0] for i in range(16)])


def _device(name: str) -> Any:
    torch = pytest.importorskip("torch")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    return torch.device(name)


def _run(raw: np.ndarray, metas: list[LetterboxMeta], device: str, **spec: Any) -> tuple[Any, Any]:
    import torch

    from yoloquant.postprocess.gpu_static import StaticDecode, decode_static, letterbox_params

    dev = _device(device)
    params = torch.from_numpy(letterbox_params(metas, raw.shape[0])).to(dev)
    out = decode_static(torch.from_numpy(raw).to(dev), params, StaticDecode(**spec))
    return out, (out.table.cpu().numpy(), out.count.cpu().numpy(), out.exact.cpu().numpy())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("setting", [(0.25, False), (0.25, True), (0.1, False)], ids=["predict", "multi", "low"])
def test_static_decode_matches_the_cpu_decoder_in_frame_pixels(
    raw_outputs: np.ndarray, metas: list[LetterboxMeta], yolov8n_onnx: Path, device: str, setting: tuple[float, bool]
) -> None:
    conf, multi_label = setting
    info = OnnxModel.load(yolov8n_onnx).info
    expected = decode([raw_outputs], info, conf=conf, multi_label=multi_label)
    _, (table, count, exact) = _run(raw_outputs, metas, device, end2end=False, conf=conf, multi_label=multi_label)
    assert exact.all()
    assert sum(len(d) for d in expected) > 16
    for e, rows, n, meta in zip(expected, table, count, metas, strict=True):
        assert n == len(e)
        assert rows[:n, 5].astype(np.int64).tolist() == e.classes.tolist()
        np.testing.assert_allclose(rows[:n, 4], e.scores, atol=1e-6)
        np.testing.assert_allclose(rows[:n, :4], scale_boxes(e.boxes, meta), atol=1e-3)
        assert not rows[n:].any()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_static_decode_flags_what_it_cannot_decode_exactly(
    raw_outputs: np.ndarray, metas: list[LetterboxMeta], device: str
) -> None:
    """Too few candidate slots, or too few suppression rounds, mark the image not exact (the caller then
    decodes it with the exact decoder); a cap that binds nowhere marks none."""
    _, (_, _, exact) = _run(raw_outputs, metas, device, end2end=False, conf=0.25, candidates=8)
    crowded = (raw_outputs[:, 4:].max(1) > 0.25).sum(1) > 8
    assert crowded.any()
    assert exact.tolist() == (~crowded).tolist()
    _, (_, _, exact) = _run(raw_outputs, metas, device, end2end=False, conf=0.25, nms_rounds=1)
    assert not exact.all()  # one round cannot tell whether a suppressed box was itself suppressed


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_static_decode_of_an_end_to_end_head_keeps_model_order_and_max_det(metas: list[LetterboxMeta],
                                                                           device: str) -> None:  # fmt: skip
    from yoloquant.postprocess.decode import decode_end2end

    rng = np.random.default_rng(0)
    raw = np.zeros((16, 300, 6), np.float32)
    raw[..., :2] = rng.uniform(0, 300, (16, 300, 2))
    raw[..., 2:4] = raw[..., :2] + rng.uniform(1, 300, (16, 300, 2))
    raw[..., 4] = rng.uniform(0, 1, (16, 300))
    raw[..., 5] = rng.integers(0, 80, (16, 300))
    _, (table, count, exact) = _run(raw, metas, device, end2end=True, conf=0.3, max_det=100)
    assert exact.all()
    for p, rows, n, meta in zip(raw, table, count, metas, strict=True):
        e = decode_end2end(p, conf=0.3, max_det=100)
        assert n == len(e) == 100
        np.testing.assert_array_equal(rows[:n, 4], e.scores)
        np.testing.assert_allclose(rows[:n, :4], scale_boxes(e.boxes, meta), atol=1e-4)


def test_letterbox_params_rows_are_the_metas_and_identity_after() -> None:
    from yoloquant.postprocess.gpu_static import letterbox_params

    meta = LetterboxMeta(shape=(480, 640), gain=(0.5, 0.25), pad=(3, 80))
    rows = letterbox_params([meta], 2)
    assert rows.tolist() == [[3, 80, 0.25, 0.5, 640, 480], [0, 0, 1, 1, 1, 1]]
