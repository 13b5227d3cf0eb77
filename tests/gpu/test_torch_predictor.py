"""``TorchPredictor`` on a real GPU: its one-graph end to end gives the step-by-step GPU path's detections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yoloquant.data.images import read_image
from yoloquant.detections import Detections
from yoloquant.errors import InferenceError

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device for PyTorch", allow_module_level=True)

from yoloquant.backends.torch.engine import TorchEngineBuilder, TorchEngineConfig  # noqa: E402
from yoloquant.backends.torch.predictor import TorchPredictor  # noqa: E402

ASSETS = Path(__file__).resolve().parents[2] / "assets"
FRAMES = [read_image(p) for p in sorted((ASSETS / "coco64" / "images").glob("*.jpg"))[:17]]


def _engine(weights: str, tmp: Path) -> Any:
    from yoloquant.export import UltralyticsExporter

    model = UltralyticsExporter().export(ASSETS / "weights" / weights, tmp / "export")
    cfg = TorchEngineConfig(precision="fp32", batch_sizes=(1, 4), artifact_dir=tmp / "art")
    return TorchEngineBuilder(cfg).build(model)


@pytest.fixture(scope="module", params=["yolov8n.pt", "yolo26n.pt"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    with _engine(request.param, tmp_path_factory.mktemp("predictor")) as built:
        yield built


def _step_by_step(engine: Any, frames: list[np.ndarray], **kw: Any) -> list[Detections]:
    """The same work one call at a time: GPU letterbox, ``infer_gpu``, ``decode_torch``, ``scale_detections``."""
    from yoloquant.data.letterbox import scale_detections
    from yoloquant.data.letterbox_gpu import letterbox_frame
    from yoloquant.postprocess.gpu import decode_torch

    out = []
    for frame in frames:
        pixels, meta = letterbox_frame(torch.from_numpy(frame).cuda(), 640)
        (dets,) = decode_torch(engine.infer_gpu(pixels[None])[0], engine.info, multi_label=False, **kw)
        out.append(scale_detections(dets, meta))
    return out


def _assert_same(
    got: list[Detections], want: list[Detections], same: Any, *, conf: float = 0.25, exact: bool = False
) -> None:
    """Same detections. ``exact``: the same batch size ran both sides (the same kernels); otherwise FP32
    convolutions (TF32 on the GPU) round differently per batch size, so compare as tests/gpu/conftest.py's
    ``assert_same_detections`` does: clear of the threshold, boxes within a pixel."""
    assert len(got) == len(want)
    assert sum(len(d) for d in want) > 30
    for g, w in zip(got, want, strict=True):
        if not exact:
            same(g, w, conf=conf)
            continue
        assert g.classes.tolist() == w.classes.tolist()
        np.testing.assert_allclose(g.scores, w.scores, atol=1e-5)
        np.testing.assert_allclose(g.boxes, w.boxes, atol=1e-2)


@pytest.mark.parametrize(("batch_size", "depth"), [(1, 1), (4, 2)])
def test_predict_equals_the_step_by_step_gpu_path(
    engine: Any, batch_size: int, depth: int, same_detections: Any
) -> None:
    with TorchPredictor(engine, conf=0.25, depth=depth) as predictor:
        got = predictor.predict(FRAMES, batch_size=batch_size)  # 17 frames: the last batch of 4 is partial
    _assert_same(got, _step_by_step(engine, FRAMES, conf=0.25), same_detections, exact=batch_size == 1)


def test_images_past_the_fixed_limits_are_decoded_exactly(engine: Any, same_detections: Any) -> None:
    with TorchPredictor(engine, conf=0.1, candidates=4, nms_rounds=1) as predictor:
        got = predictor.predict(FRAMES[:8], batch_size=4)
    _assert_same(got, _step_by_step(engine, FRAMES[:8], conf=0.1), same_detections, conf=0.1)


def test_same_size_frames_in_one_batch_and_a_clear_error_for_bad_frames(engine: Any, same_detections: Any) -> None:
    frames = [np.ascontiguousarray(FRAMES[0][:, ::-1]), FRAMES[0], FRAMES[0]]
    with TorchPredictor(engine) as predictor:
        want = _step_by_step(engine, frames * 6, conf=0.25)
        _assert_same(predictor.predict(frames * 6, batch_size=4), want, same_detections)
        with pytest.raises(InferenceError, match="frame 1 is float32"):
            predictor.predict([FRAMES[0], FRAMES[0].astype(np.float32)])


def test_refuses_models_it_cannot_decode(engine: Any) -> None:
    import dataclasses

    from yoloquant.errors import ConfigError

    fake = type("E", (), {"info": dataclasses.replace(engine.info, task="pose")})()
    with pytest.raises(ConfigError, match="detect models"):
        TorchPredictor(fake)
