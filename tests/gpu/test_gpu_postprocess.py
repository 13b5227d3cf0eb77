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


# -- pose -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pose_outputs(yolov8n_pose_onnx: OnnxModel, coco64_batch: np.ndarray) -> np.ndarray:
    """The real YOLOv8n-pose's ``[16, 56, 8400]`` outputs (ONNX Runtime CPU) on 16 bundled COCO images."""
    pytest.importorskip("onnxruntime")
    from yoloquant.backends.ort import OrtEngineBuilder

    with OrtEngineBuilder().build(yolov8n_pose_onnx) as engine:
        return np.concatenate([engine.infer(coco64_batch[i : i + 1])[0] for i in range(16)])


def _assert_same_keypoints(expected: list[Any], got: list[Any]) -> None:
    for e, g in zip(expected, got, strict=True):
        assert g.classes.tolist() == e.classes.tolist()
        np.testing.assert_allclose(g.boxes, e.boxes, atol=1e-3)
        np.testing.assert_allclose(g.scores, e.scores, atol=1e-6)
        assert g.keypoints is not None and e.keypoints is not None and g.keypoints.shape == e.keypoints.shape
        np.testing.assert_allclose(g.keypoints, e.keypoints, atol=1e-3)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("conf", [0.25, 0.001])
def test_torch_pose_decode_matches_the_cpu_decode(
    pose_outputs: np.ndarray, yolov8n_pose_onnx: OnnxModel, device: str, conf: float
) -> None:
    """A DFL pose head (YOLOv8n-pose): the same people, boxes and keypoints (with visibility) as postprocess.pose."""
    import torch

    from yoloquant.postprocess.gpu import decode_pose_torch

    info = yolov8n_pose_onnx.info
    expected = decode([pose_outputs], info, conf=conf)
    got = decode_pose_torch([torch.from_numpy(pose_outputs).to(_device(device))], info, conf=conf)
    assert sum(len(d) for d in expected) >= 10 and sum(len(d) > 0 for d in expected) >= 5  # people in several images
    assert all(d.keypoints is not None and d.keypoints.shape[1:] == (17, 3) for d in expected)
    _assert_same_keypoints(expected, got)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_torch_detect_decode_of_a_pose_model_run_as_a_detector(
    pose_outputs: np.ndarray, yolov8n_pose_onnx: OnnxModel, device: str
) -> None:
    """A pose model exported as task 'detect': the keypoint channels after the class score are not class scores."""
    import dataclasses

    import torch

    from yoloquant.postprocess.gpu import decode_torch

    info = dataclasses.replace(yolov8n_pose_onnx.info, task="detect")
    expected = decode([pose_outputs], info, conf=0.25)
    got = decode_torch(torch.from_numpy(pose_outputs).to(_device(device)), info, conf=0.25)
    assert sum(len(d) for d in expected) >= 10 and all(set(d.classes.tolist()) <= {0} for d in got)
    for e, g in zip(expected, got, strict=True):
        assert g.classes.tolist() == e.classes.tolist()
        np.testing.assert_allclose(g.boxes, e.boxes, atol=1e-3)


def _pose26_outputs() -> np.ndarray:
    """A YOLO26-pose-shaped batch: 2 images x 300 rows (box, score, class, 17 keypoints of x, y, visibility)."""
    rng = np.random.default_rng(1)
    pred = np.zeros((2, 300, 6 + 51), np.float32)
    xy = rng.uniform(0, 560, (2, 300, 2))
    pred[..., 0:2], pred[..., 2:4] = xy, xy + rng.uniform(8, 80, (2, 300, 2))
    pred[..., 4] = np.sort(rng.uniform(0, 1, (2, 300)))[:, ::-1]
    pred[..., 6:] = rng.uniform(0, 640, (2, 300, 51))
    pred[..., 8::3] = rng.uniform(0, 1, (2, 300, 17))
    return pred


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_torch_end_to_end_pose_decode_matches_the_cpu_decode(device: str) -> None:
    import torch

    from yoloquant.artifacts import ModelInfo
    from yoloquant.config import HeadType
    from yoloquant.postprocess.gpu import decode_pose_torch

    info = ModelInfo(names={0: "person"}, task="pose", source_task="pose", head=HeadType.END2END, kpt_shape=(17, 3))
    pred = _pose26_outputs()
    expected = decode([pred], info, conf=0.25, max_det=100)
    got = decode_pose_torch([torch.from_numpy(pred).to(_device(device))], info, conf=0.25, max_det=100)
    assert [len(d) for d in expected] == [100, 100]
    for e, g in zip(expected, got, strict=True):  # no arithmetic on the way: equal, not close
        np.testing.assert_array_equal(g.boxes, e.boxes)
        assert g.keypoints is not None and e.keypoints is not None
        np.testing.assert_array_equal(g.keypoints, e.keypoints)


def test_torch_pose_decode_refuses_what_the_cpu_decode_refuses() -> None:
    import torch

    from yoloquant.artifacts import ModelInfo
    from yoloquant.errors import InferenceError
    from yoloquant.postprocess.gpu import decode_pose_torch

    with pytest.raises(InferenceError, match="no 'kpt_shape' metadata"):
        decode_pose_torch([torch.zeros(1, 56, 8)], ModelInfo(names={0: "person"}, task="pose", source_task="pose"))
    wide = ModelInfo(names={0: "person"}, task="pose", source_task="pose", kpt_shape=(17, 3))
    with pytest.raises(InferenceError, match=r"outputs \[B, 4 \+ 1 \+ 51, anchors\]; got \(1, 11, 8\)"):
        decode_pose_torch([torch.zeros(1, 11, 8)], wide)


# -- dispatch by task -------------------------------------------------------------------------------------


def _dfl_seg_outputs() -> tuple[np.ndarray, np.ndarray]:
    """A YOLOv8-seg-shaped batch at 64 px: 2 images x 84 anchors (cx, cy, w, h, 3 class scores, 4 coefficients)."""
    rng = np.random.default_rng(2)
    pred = np.zeros((2, 4 + 3 + 4, 84), np.float32)
    pred[:, 0:2] = rng.uniform(8, 56, (2, 2, 84))
    pred[:, 2:4] = rng.uniform(4, 24, (2, 2, 84))
    pred[:, 4:7] = rng.uniform(0, 0.6, (2, 3, 84))
    pred[:, 7:] = rng.normal(0, 1, (2, 4, 84))
    return pred, rng.normal(0, 1, (2, 4, 16, 16)).astype(np.float32)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_decode_outputs_torch_decodes_each_task_as_decode_does(
    raw_outputs: np.ndarray, yolov8n_onnx: Path, pose_outputs: np.ndarray, yolov8n_pose_onnx: OnnxModel, device: str
) -> None:
    """All outputs in, the model's task picks the decoder: postprocess.decode()'s results for every shipped head."""
    import torch

    from yoloquant.artifacts import ModelInfo
    from yoloquant.config import HeadType
    from yoloquant.postprocess.gpu import decode_outputs_torch

    pytest.importorskip("cv2")
    dev = _device(device)
    names = {i: str(i) for i in range(80)}
    cases = [
        (OnnxModel.load(yolov8n_onnx).info, [raw_outputs]),
        (yolov8n_pose_onnx.info, [pose_outputs]),
        (ModelInfo(names=names, task="segment", source_task="segment", head=HeadType.END2END), list(_seg_outputs())),
        (ModelInfo(names={0: "a", 1: "b", 2: "c"}, imgsz=(64, 64), task="segment", source_task="segment"),
         list(_dfl_seg_outputs())),
    ]  # fmt: skip
    for info, outputs in cases:
        expected = decode(outputs, info, conf=0.25, max_det=100, multi_label=False)
        got = decode_outputs_torch([torch.from_numpy(o).to(dev) for o in outputs], info, conf=0.25, max_det=100,
                                   multi_label=False)  # fmt: skip
        assert sum(len(d) for d in expected) > 4, info
        for e, g in zip(expected, got, strict=True):
            assert g.classes.tolist() == e.classes.tolist(), info
            np.testing.assert_allclose(g.boxes, e.boxes, atol=1e-3)
            assert (g.keypoints is None) == (e.keypoints is None) and (g.masks is None) == (e.masks is None), info
            if e.keypoints is not None:
                np.testing.assert_allclose(g.keypoints, e.keypoints, atol=1e-3)
            if e.masks is not None and len(e):  # logits within rounding of 0 may flip
                assert g.masks.shape == e.masks.shape and (g.masks != e.masks).mean() < 1e-3, info
