"""GpuStreamRunner on the CPU device (letterbox, batching and decode in torch) against the CPU runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yoloquant.artifacts import OnnxModel
from yoloquant.data.letterbox import normalize_pixels
from yoloquant.errors import ConfigError
from yoloquant.stream import GpuStreamRunner, StreamRunner, TileConfig, VideoSource
from yoloquant.testing import CallbackEngine

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")
VIDEO = Path(__file__).resolve().parents[2] / "assets" / "video" / "one-by-one-person.mp4"
SEG26_PT = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "data"
    / "weights"
    / "yolo26n-seg_coco_from_int8ir"
    / "yolo26n-seg.pt"
)


class _TensorEngine:
    """An ONNX Runtime CPU engine behind ``infer_gpu``: torch tensors in and out, one image per call."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.info, self.batches = engine, engine.info, []

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return list(self.engine.infer(batch))

    def infer_gpu(self, pixels: Any) -> list[Any]:
        self.batches.append(tuple(pixels.shape))
        per_image = [self.engine.infer(normalize_pixels(p[None].numpy())) for p in pixels]
        return [torch.from_numpy(np.concatenate(outs)) for outs in zip(*per_image, strict=True)]  # all outputs


@pytest.fixture(scope="module")
def engine(yolov8n_onnx: Path) -> Any:
    from yoloquant.backends.ort import OrtEngineBuilder

    with OrtEngineBuilder().build(OnnxModel.load(yolov8n_onnx)) as e:
        yield e


def _boxes(results: list[Any]) -> dict[tuple[int, int], np.ndarray]:
    return {(r.stream, r.index): r.detections.boxes for r in results}


def _assert_close_boxes(want: dict[tuple[int, int], np.ndarray], have: dict[tuple[int, int], np.ndarray]) -> None:
    for key, boxes in want.items():
        assert have[key].shape == boxes.shape, key
        if len(boxes):  # the GPU letterbox differs from OpenCV's by one level on a few pixels
            assert float(np.abs(np.sort(have[key], 0) - np.sort(boxes, 0)).max()) < 2.0, key


@pytest.mark.parametrize("tiles", [None, TileConfig(size=400, overlap=0.25)])
def test_gpu_runner_gives_the_cpu_runners_detections(engine: Any, tiles: TileConfig | None) -> None:
    def sources() -> list[VideoSource]:
        return [VideoSource(VIDEO, max_frames=4, start=100 + 300 * k) for k in range(2)]  # two streams, one engine

    ref = list(StreamRunner(engine, sources(), batch_size=1, classes=(0,), tiles=tiles))
    fake = _TensorEngine(engine)
    got = list(GpuStreamRunner(fake, sources(), device="cpu", batch_size=4, classes=(0,), tiles=tiles))
    assert set(fake.batches) == {(4, 3, 640, 640)}  # fixed-size batches across the two streams
    want, have = _boxes(ref), _boxes(got)
    assert set(want) == set(have) and sum(len(b) for b in want.values()) >= 4
    _assert_close_boxes(want, have)


@pytest.fixture(scope="module")
def seg26_onnx(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    """The real YOLO26n-seg of ../shared/data at 320 px (cheap): an end-to-end head with a prototype output."""
    if not SEG26_PT.exists():
        pytest.skip("needs ../shared/data (yolo26n-seg)")
    pytest.importorskip("ultralytics")
    from yoloquant.config import ExportConfig
    from yoloquant.export import UltralyticsExporter

    return UltralyticsExporter(ExportConfig(imgsz=320)).export(SEG26_PT, tmp_path_factory.mktemp("seg26"))


@pytest.mark.parametrize("task", ["pose", "segment"])
def test_gpu_runner_streams_pose_and_seg_models_like_the_cpu_runner(task: str, request: pytest.FixtureRequest) -> None:
    """All the engine's outputs reach the decode (a seg head's prototypes too), decoded by the model's task; the
    results are the CPU runner's, keypoints included (masks only when asked for: ``masks=True``, below)."""
    from yoloquant.backends.ort import OrtEngineBuilder

    model = request.getfixturevalue("yolov8n_pose_onnx" if task == "pose" else "seg26_onnx")
    assert model.info.task == task

    def sources() -> list[VideoSource]:
        return [VideoSource(VIDEO, max_frames=3, start=100 + 300 * k) for k in range(2)]

    with OrtEngineBuilder().build(model) as cpu:
        ref = list(StreamRunner(cpu, sources(), batch_size=1, classes=(0,)))
        fake = _TensorEngine(cpu)
        got = list(GpuStreamRunner(fake, sources(), device="cpu", batch_size=2, classes=(0,)))
    assert set(fake.batches) == {(2, 3, *model.info.imgsz)}
    want, have = _boxes(ref), _boxes(got)
    assert set(want) == set(have) and sum(len(b) for b in want.values()) >= 3
    _assert_close_boxes(want, have)
    assert all(r.detections.masks is None for r in ref + got)
    if task == "pose":  # results arrive in another order across the two streams: pair them by frame
        by_frame = {(g.stream, g.index): g for g in got}
        for r in ref:
            g = by_frame[(r.stream, r.index)]
            assert r.detections.keypoints is not None and g.detections.keypoints is not None
            assert r.detections.keypoints.shape == g.detections.keypoints.shape == (len(r.detections), 17, 3)
            if len(r.detections):
                order_r, order_g = np.argsort(r.detections.boxes[:, 0]), np.argsort(g.detections.boxes[:, 0])
                xy_r, xy_g = r.detections.keypoints[order_r, :, :2], g.detections.keypoints[order_g, :, :2]
                assert float(np.abs(xy_r - xy_g).max()) < 3.0


def test_gpu_runner_computes_seg_masks_only_when_asked_and_then_as_the_cpu_runner(
    seg26_onnx: OnnxModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from yoloquant.backends.ort import OrtEngineBuilder
    from yoloquant.postprocess import gpu

    calls: list[int] = []
    real = gpu.decode_segments_torch

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(gpu, "decode_segments_torch", counted)
    with OrtEngineBuilder().build(seg26_onnx) as cpu:
        list(GpuStreamRunner(_TensorEngine(cpu), VideoSource(VIDEO, max_frames=2, start=150), device="cpu"))
        assert not calls  # boxes only: no mask work on the device
        ref = list(StreamRunner(cpu, VideoSource(VIDEO, max_frames=2, start=150), masks=True))
        got = list(GpuStreamRunner(_TensorEngine(cpu), VideoSource(VIDEO, max_frames=2, start=150), device="cpu",
                                   masks=True))  # fmt: skip
    assert calls
    for r, g in zip(ref, got, strict=True):  # one stream: the same order
        assert r.detections.masks is not None and g.detections.masks is not None
        assert g.detections.masks.shape == r.detections.masks.shape and len(r.detections) > 0
        inter = (r.detections.masks & g.detections.masks).sum((1, 2))
        union = (r.detections.masks | g.detections.masks).sum((1, 2))
        assert float((inter / np.maximum(union, 1)).min()) > 0.9  # the GPU letterbox differs by a level here and there


def test_stream_results_carry_keypoints_and_asked_for_masks_as_predict_gives_them(
    yolov8n_pose_onnx: OnnxModel, request: pytest.FixtureRequest
) -> None:
    """A frame's result holds what ``predict`` gives for the same image: keypoints always, masks with
    ``masks=True`` (frame-sized), in frame pixels."""
    from yoloquant.backends.ort import OrtEngineBuilder
    from yoloquant.postprocess.predict import predict

    for model, options in ((yolov8n_pose_onnx, {}), (request.getfixturevalue("seg26_onnx"), {"masks": True})):
        with OrtEngineBuilder().build(model) as cpu:
            results = list(StreamRunner(cpu, VideoSource(VIDEO, max_frames=2, start=150), **options))
            for r in results:
                (want,) = predict(cpu, [r.image])
                got = r.detections
                assert len(got) == len(want) and len(got) > 0
                np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
                if want.keypoints is not None:
                    np.testing.assert_allclose(got.keypoints, want.keypoints, atol=1e-3)
                else:
                    assert got.keypoints is None
                if want.masks is not None:
                    assert got.masks is not None and got.masks.shape == (len(got), *r.image.shape[:2])
                    np.testing.assert_array_equal(got.masks, want.masks)


def test_gpu_runner_refuses_an_engine_without_infer_gpu() -> None:
    from yoloquant.artifacts import ModelInfo

    cpu_only = CallbackEngine(lambda x: [x], ModelInfo(names={0: "person"}))
    with pytest.raises(ConfigError, match="infer_gpu"):
        GpuStreamRunner(cpu_only, VIDEO)
