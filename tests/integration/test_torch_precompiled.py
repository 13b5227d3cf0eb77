"""A real ``aot_compile`` of the YOLOv8n module on the CPU, saved and loaded back (the GPU build is tests/gpu's)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")

from yoloquant.backends.torch.engine import _module  # noqa: E402
from yoloquant.backends.torch.precompiled import PrecompiledModel, precompiled_file  # noqa: E402
from yoloquant.config import Precision  # noqa: E402
from yoloquant.errors import InferenceError  # noqa: E402

pytestmark = pytest.mark.slow  # tens of seconds of C++ compiling on 2 cores


def test_a_saved_function_loads_and_gives_the_module_outputs(yolov8n_pt: Path, tmp_path: Path) -> None:
    module = _module(yolov8n_pt, Precision.FP32, torch.device("cpu"))
    x = torch.randint(0, 256, (1, 3, 640, 640), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = module(x)
    built = PrecompiledModel(module, (640, 640))
    built.compile(1)  # batch 1: the size whose grid the checkpoint's head still holds
    built.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [precompiled_file(1)] and not built.unsaved
    loaded = PrecompiledModel(module, (640, 640))
    loaded.load(tmp_path, (1,))
    head = next(m for m in module.modules() if type(m).__name__ == "Detect")
    head.anchors = head.anchors + 1000  # what another size's capture can leave there: the function builds its own
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), want, atol=1e-3, rtol=1e-4)
    with pytest.raises(InferenceError, match=r"takes uint8 \[B, 3, 640, 640\], got torch.float32"):
        loaded(x.float())
