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


def _step_by_step(engine: Any, frames: list[np.ndarray], batch_size: int, **kw: Any) -> list[Detections]:
    """The same work one call at a time, at the same batch size (so the same kernels, bit for bit): GPU
    letterbox, ``infer_gpu`` (a partial batch padded with gray), ``decode_torch``, ``scale_detections``."""
    from yoloquant.data.letterbox import scale_detections
    from yoloquant.data.letterbox_gpu import letterbox_frame
    from yoloquant.postprocess.gpu import decode_torch

    out = []
    for start in range(0, len(frames), batch_size):
        done = [letterbox_frame(torch.from_numpy(f).cuda(), 640) for f in frames[start : start + batch_size]]
        pixels = torch.full((batch_size, 3, 640, 640), 114, dtype=torch.uint8, device="cuda")
        for i, (chw, _) in enumerate(done):
            pixels[i] = chw
        dets = decode_torch(engine.infer_gpu(pixels)[0], engine.info, multi_label=False, **kw)
        out += [scale_detections(d, meta) for d, (_, meta) in zip(dets, done, strict=False)]
    return out


def _assert_same(got: list[Detections], want: list[Detections], *, at_least: int = 30) -> None:
    assert len(got) == len(want)
    assert sum(len(d) for d in want) > at_least
    for g, w in zip(got, want, strict=True):
        assert g.classes.tolist() == w.classes.tolist()
        np.testing.assert_allclose(g.scores, w.scores, atol=1e-5)
        np.testing.assert_allclose(g.boxes, w.boxes, atol=1e-2)


@pytest.mark.parametrize(("batch_size", "depth"), [(1, 1), (1, 2), (4, 2)])  # depth 2: two streams
def test_predict_equals_the_step_by_step_gpu_path(engine: Any, batch_size: int, depth: int) -> None:
    with TorchPredictor(engine, conf=0.25, depth=depth) as predictor:
        got = predictor.predict(FRAMES, batch_size=batch_size)  # 17 frames: the last batch of 4 is partial
    _assert_same(got, _step_by_step(engine, FRAMES, batch_size, conf=0.25))


def test_images_past_the_fixed_limits_are_decoded_exactly(engine: Any) -> None:
    with TorchPredictor(engine, conf=0.1, candidates=4, nms_rounds=1) as predictor:
        got = predictor.predict(FRAMES[:8], batch_size=4)
    _assert_same(got, _step_by_step(engine, FRAMES[:8], 4, conf=0.1), at_least=10)


def test_same_size_frames_in_one_batch_and_a_clear_error_for_bad_frames(engine: Any) -> None:
    frames = [np.ascontiguousarray(FRAMES[0][:, ::-1]), FRAMES[0], FRAMES[0]]
    with TorchPredictor(engine) as predictor:
        want = _step_by_step(engine, frames * 6, 4, conf=0.25)
        _assert_same(predictor.predict(frames * 6, batch_size=4), want)
        with pytest.raises(InferenceError, match="frame 1 is float32"):
            predictor.predict([FRAMES[0], FRAMES[0].astype(np.float32)])


def test_refuses_models_it_cannot_decode(engine: Any) -> None:
    import dataclasses

    from yoloquant.errors import ConfigError

    fake = type("E", (), {"info": dataclasses.replace(engine.info, task="pose")})()
    with pytest.raises(ConfigError, match="detect models"):
        TorchPredictor(fake)


def test_the_example_runs(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    script = ASSETS.parent / "examples" / "gpu_predictor.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, check=False,
                          env={**os.environ, "YOLO_OFFLINE": "1"}, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "64 frames," in proc.stdout and " people, " in proc.stdout
