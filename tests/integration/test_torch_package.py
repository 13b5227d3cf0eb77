"""A real AOTInductor package of the YOLOv8n module, compiled for the CPU (the GPU build is tests/gpu's)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")

from yoloquant.backends.torch.compiled import ArtifactMeta, load_package, read_meta, save_package  # noqa: E402
from yoloquant.backends.torch.engine import _module  # noqa: E402
from yoloquant.config import Precision  # noqa: E402

pytestmark = pytest.mark.slow  # about a minute of C++ compiling on 2 cores


def test_package_runs_any_batch_size_like_the_module(yolov8n_pt: Path, tmp_path: Path) -> None:
    module = _module(yolov8n_pt, Precision.FP32, torch.device("cpu"))
    meta = ArtifactMeta(torch=str(torch.__version__), cuda=None, gpu="cpu", capability=(0, 0), checkpoint_sha256="-",
                        precision="fp32", batch_sizes=(1,), imgsz=(640, 640), kind="aoti", max_batch=4)  # fmt: skip
    save_package(tmp_path, module, meta)
    assert read_meta(tmp_path) == meta and sorted(p.name for p in tmp_path.iterdir()) == ["engine.json", "model.pt2"]
    runner = load_package(tmp_path)
    for batch in (1, 3):
        x = torch.randint(0, 256, (batch, 3, 640, 640), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            torch.testing.assert_close(runner(x), module(x), atol=1e-3, rtol=1e-4)
