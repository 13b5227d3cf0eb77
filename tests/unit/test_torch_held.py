"""The torch engine holds the tensors its CUDA graphs read by address (CPU: the Ultralytics head's anchors)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")

from yoloquant.backends.torch.engine import _module  # noqa: E402
from yoloquant.backends.torch.replay import held_tensors  # noqa: E402
from yoloquant.config import Precision  # noqa: E402


def test_held_tensors_keep_the_anchors_a_new_batch_size_replaces(yolov8n_pt: Path) -> None:
    module = _module(yolov8n_pt, Precision.FP32, torch.device("cpu"))
    head = next(m for m in module.modules() if type(m).__name__ == "Detect")
    with torch.inference_mode():
        module(torch.zeros((1, 3, 64, 64), dtype=torch.uint8))
        first = head.anchors
        held = held_tensors(module)
        module(torch.zeros((2, 3, 64, 64), dtype=torch.uint8))
    # the head made new anchors for the new shape: a graph captured at batch 1 still reads the old ones
    assert head.anchors is not first
    assert any(t is first for t in held) and any(t is head.strides for t in held_tensors(module))
    assert not any(t is p for t in held for p in module.parameters())  # parameters are owned by the module
