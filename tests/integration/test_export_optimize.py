"""The DFL rewrite keeps the model's outputs and the head detection, and only touches the DFL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from yoloquant import OnnxModel
from yoloquant.backends.ort import OrtEngineBuilder
from yoloquant.config import ExportConfig
from yoloquant.data.images import read_image
from yoloquant.data.letterbox import preprocess
from yoloquant.export import UltralyticsExporter
from yoloquant.export.optimize import rewrite_dfl_softmax
from yoloquant.quantize.graph import find_head

onnx = pytest.importorskip("onnx")
pytest.importorskip("ultralytics")


@pytest.fixture(scope="module")
def plain_onnx(tmp_path_factory: pytest.TempPathFactory, yolov8n_pt: Path) -> Path:
    out = tmp_path_factory.mktemp("plain")
    return UltralyticsExporter(ExportConfig(fast_dfl=False)).export(yolov8n_pt, out).path


def _run(path: Path, image: np.ndarray) -> np.ndarray:
    with OrtEngineBuilder().build(OnnxModel.load(path)) as engine:
        return engine.infer(image)[0]


def test_rewritten_model_gives_the_same_outputs(plain_onnx: Path, yolov8n_onnx: Path, coco64_images: Path) -> None:
    chw, _ = preprocess(read_image(sorted(coco64_images.iterdir())[0]), 640)
    image = chw[None].astype(np.float32) / 255.0
    np.testing.assert_allclose(_run(yolov8n_onnx, image), _run(plain_onnx, image), atol=1e-3, rtol=1e-5)


def test_only_the_dfl_changes(plain_onnx: Path, yolov8n_onnx: Path) -> None:
    plain, fast = onnx.load(str(plain_onnx)), onnx.load(str(yolov8n_onnx))
    ops = [n.op_type for n in fast.graph.node]
    assert ops.count("Conv") == [n.op_type for n in plain.graph.node].count("Conv") - 1
    assert ops.count("MatMul") == 1
    softmax = next(n for n in fast.graph.node if n.op_type == "Softmax")
    assert onnx.helper.get_attribute_value(softmax.attribute[0]) == -1
    head_plain, head_fast = find_head(plain), find_head(fast)
    assert head_fast.output_convs == head_plain.output_convs  # the 6 box / class output convs
    assert "MatMul" in head_fast.decode_ops and "Softmax" in head_fast.decode_ops


def test_a_model_without_dfl_is_left_alone(tmp_path: Path, assets: Path) -> None:
    path = UltralyticsExporter(ExportConfig(fast_dfl=False)).export(assets / "weights" / "yolo26n.pt", tmp_path).path
    model = onnx.load(str(path))
    before = model.SerializeToString()
    assert not rewrite_dfl_softmax(model)
    assert model.SerializeToString() == before
