"""GPU decode + NMS (torch / torchvision) gives the CPU decoder's detections on real model outputs."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yoloquant import OnnxModel
from yoloquant.postprocess.decode import decode


@pytest.fixture(scope="module")
def raw_outputs(yolov8n_onnx: Path, coco64_batch: np.ndarray) -> np.ndarray:
    pytest.importorskip("onnxruntime")
    from yoloquant.backends.ort import OrtEngineBuilder

    with OrtEngineBuilder().build(OnnxModel.load(yolov8n_onnx)) as engine:
        return np.concatenate([engine.infer(coco64_batch[i : i + 1])[0] for i in range(16)])


def _device(name: str) -> Any:
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    return torch.device(name)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize(("conf", "multi_label"), [(0.25, False), (0.25, True), (0.001, True)])
def test_torch_decode_matches_cpu_decode(
    raw_outputs: np.ndarray, yolov8n_onnx: Path, device: str, conf: float, multi_label: bool
) -> None:
    import torch

    from yoloquant.postprocess.gpu import decode_torch

    info = OnnxModel.load(yolov8n_onnx).info
    expected = decode([raw_outputs], info, conf=conf, multi_label=multi_label)
    got = decode_torch(torch.from_numpy(raw_outputs).to(_device(device)), info, conf=conf, multi_label=multi_label)
    assert sum(len(d) for d in expected) > 16
    for e, g in zip(expected, got, strict=True):
        assert g.classes.tolist() == e.classes.tolist()
        np.testing.assert_allclose(g.boxes, e.boxes, atol=1e-3)
        np.testing.assert_allclose(g.scores, e.scores, atol=1e-6)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_torch_decode_caps_per_image_like_the_cpu_decode(
    raw_outputs: np.ndarray, yolov8n_onnx: Path, device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One NMS call for the whole batch: the per-image caps (candidates before NMS, max_det after) still
    apply image by image, as the CPU decoder applies them."""
    import torch

    cpu_module = importlib.import_module("yoloquant.postprocess.decode")
    gpu_module = importlib.import_module("yoloquant.postprocess.gpu")

    monkeypatch.setattr(cpu_module, "MAX_NMS", 40)
    monkeypatch.setattr(gpu_module, "MAX_NMS", 40)
    info = OnnxModel.load(yolov8n_onnx).info
    expected = decode([raw_outputs], info, conf=0.001, max_det=7)
    got = gpu_module.decode_torch(torch.from_numpy(raw_outputs).to(_device(device)), info, conf=0.001, max_det=7)
    assert sum(len(d) == 7 for d in expected) >= 8  # the cap binds on most images
    for e, g in zip(expected, got, strict=True):
        assert g.classes.tolist() == e.classes.tolist()
        np.testing.assert_allclose(g.boxes, e.boxes, atol=1e-3)


@pytest.mark.gpu
def test_decode_pending_on_the_engine_stream(gpu_models: dict[str, OnnxModel], coco64_batch: np.ndarray) -> None:
    _device("cuda")
    from yoloquant.backends.ort.cuda import CudaEngineBuilder
    from yoloquant.postprocess.gpu import decode_pending

    model = gpu_models["dynamic"]
    with CudaEngineBuilder(batch=16).build(model) as engine:
        (raw,) = engine.infer(coco64_batch[:16])
        expected = decode([raw], model.info, conf=0.25)
        got = decode_pending(engine.infer_async(coco64_batch[:16], download=False), engine, conf=0.25)
    for e, g in zip(expected, got, strict=True):
        assert g.classes.tolist() == e.classes.tolist()
        np.testing.assert_allclose(g.boxes, e.boxes, atol=1e-3)


def _seg_outputs() -> tuple[np.ndarray, np.ndarray]:
    """A YOLO26-seg-shaped batch: 2 images x 300 rows (boxes, scores, classes, 32 coefficients), smooth prototypes."""
    rng = np.random.default_rng(0)
    pred = np.zeros((2, 300, 38), np.float32)
    xy = rng.uniform(0, 560, (2, 300, 2))
    pred[..., 0:2], pred[..., 2:4] = xy, xy + rng.uniform(8, 80, (2, 300, 2))
    pred[..., 4] = np.sort(rng.uniform(0, 1, (2, 300)))[:, ::-1]
    pred[..., 5] = rng.integers(0, 80, (2, 300))
    pred[..., 6:] = rng.normal(0, 1, (2, 300, 32))
    yy, xx = np.mgrid[0:160, 0:160] / 160.0
    freq = rng.uniform(1, 6, (2, 32, 2, 1, 1))
    protos = np.sin(freq[:, :, 0] * 6.28 * yy + freq[:, :, 1] * 3.14 * xx).astype(np.float32)
    return pred, protos


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_torch_segment_decode_matches_the_cpu_decode(device: str) -> None:
    """Masks from the device equal postprocess.masks' (coefficients x prototypes, OpenCV bilinear upsample, crop)."""
    import torch

    from yoloquant.artifacts import ModelInfo
    from yoloquant.config import HeadType
    from yoloquant.postprocess.gpu import decode_segments_torch
    from yoloquant.postprocess.masks import decode_segments

    pytest.importorskip("cv2")
    info = ModelInfo(names={i: str(i) for i in range(80)}, task="segment", head=HeadType.END2END)
    pred, protos = _seg_outputs()
    expected = decode_segments([pred, protos], info, conf=0.25, iou=0.7, max_det=100, multi_label=False)
    dev = _device(device)
    got = decode_segments_torch([torch.from_numpy(pred).to(dev), torch.from_numpy(protos).to(dev)], info,
                                conf=0.25, max_det=100)  # fmt: skip
    assert [len(d) for d in expected] == [100, 100]
    for e, g in zip(expected, got, strict=True):
        assert g.classes.tolist() == e.classes.tolist()
        np.testing.assert_array_equal(g.boxes, e.boxes)
        assert g.masks is not None and e.masks is not None and g.masks.shape == e.masks.shape == (100, 640, 640)
        assert e.masks.sum() > 100 * 500  # real masks, not empty crops
        assert (g.masks != e.masks).mean() < 1e-4  # logits within rounding of 0 may flip


def test_torch_segment_decode_refuses_what_the_cpu_decode_refuses() -> None:
    import torch

    from yoloquant.artifacts import ModelInfo
    from yoloquant.config import HeadType
    from yoloquant.errors import InferenceError
    from yoloquant.postprocess.gpu import decode_segments_torch

    dfl = ModelInfo(names={0: "a"}, task="segment", head=HeadType.DFL)
    with pytest.raises(InferenceError, match="end-to-end head only"):
        decode_segments_torch([torch.zeros(1, 5, 38), torch.zeros(1, 32, 4, 4)], dfl)
    e2e = ModelInfo(names={0: "a"}, task="segment", head=HeadType.END2END)
    with pytest.raises(InferenceError, match="prototypes"):
        decode_segments_torch([torch.zeros(1, 5, 30), torch.zeros(1, 32, 4, 4)], e2e)
