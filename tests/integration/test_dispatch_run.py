"""A user's own quantizer (no ``progress`` field, no calibration) runs through a real pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from yoloquant import QuantPipeline
from yoloquant.testing import CallbackQuantizer


def test_a_custom_quantizer_runs_quietly_and_one_that_needs_no_calibration_gets_no_images(
    yolov8n_onnx: Path, coco64_images: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    int8, fp16 = CallbackQuantizer(name="mine"), CallbackQuantizer(name="float", needs_calibration=False)
    result = (
        QuantPipeline.from_onnx(yolov8n_onnx)
        .calibrate(coco64_images, num_images=2)
        .quantize("int8", quantizer=int8)
        .quantize("fp16", quantizer=fp16)
        .with_progress(False)
        .run(tmp_path / "run")
    )
    assert [v.name for v in result.variants] == ["fp32", "int8-mine", "fp16-float"]
    assert int8.images == [2] and fp16.images == [0]  # only the quantizer that calibrates got the images
    assert int8.progress == [False] and fp16.progress == [False]  # asked, not rewritten
    assert result.variant("int8-mine").quantization["quantizer"] == "mine"  # type: ignore[index]
