"""OpenVINO's own runtime behind the Engine protocol, checked against ONNX Runtime on the real YOLOv8n."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from yoloquant import InferenceError, OnnxModel
from yoloquant.backends import PROVIDERS, build_engine, check_backend
from yoloquant.config import Backend
from yoloquant.data.images import read_image
from yoloquant.data.letterbox import preprocess
from yoloquant.errors import EngineBuildError, MissingDependencyError

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

from yoloquant.backends.openvino import OpenVinoEngine, OpenVinoEngineBuilder
from yoloquant.backends.ort import OrtEngineBuilder


def _images(coco64_images: Path, n: int) -> np.ndarray:
    files = sorted(coco64_images.glob("*.jpg"))[:n]
    return np.stack([preprocess(read_image(f), 640)[0] for f in files]).astype(np.float32) / np.float32(255.0)


def test_fp32_outputs_match_onnxruntime(yolov8n_onnx: Path, coco64_images: Path) -> None:
    model = OnnxModel.load(yolov8n_onnx)
    with OrtEngineBuilder().build(model) as ort_engine, OpenVinoEngineBuilder().build(model) as ov_engine:
        for image in _images(coco64_images, 3):
            x = image[None]
            (reference,), (got,) = ort_engine.infer(x), ov_engine.infer(x)
            assert got.shape == reference.shape == (1, 84, 8400)
            # boxes in pixels (0-640), class scores in [0, 1]: both runtimes compute fp32 with their own kernels
            np.testing.assert_allclose(got[:, :4], reference[:, :4], atol=0.02)
            np.testing.assert_allclose(got[:, 4:], reference[:, 4:], atol=1e-4)


def test_engine_validates_reports_and_closes_twice(yolov8n_onnx: Path) -> None:
    engine = build_engine(OnnxModel.load(yolov8n_onnx), Backend.OPENVINO, threads=1)
    assert isinstance(engine, OpenVinoEngine)
    assert engine.providers == [PROVIDERS[Backend.OPENVINO]] == ["OpenVINO:CPU"]
    assert repr(engine) == "OpenVinoEngine(device='CPU', imgsz=(640, 640), open)"
    with pytest.raises(InferenceError, match=r"expected a float32 batch of shape \[B, 3, 640, 640\]"):
        engine.infer(np.zeros((1, 3, 640, 640), np.float64))
    with pytest.raises(InferenceError, match="exported for batch 1 but got batch 2"):
        engine.infer(np.zeros((2, 3, 640, 640), np.float32))
    first = engine.infer(np.zeros((1, 3, 640, 640), np.float32))[0]
    engine.infer(np.ones((1, 3, 640, 640), np.float32))
    assert not np.shares_memory(first, engine.infer(np.zeros((1, 3, 640, 640), np.float32))[0])
    engine.close()
    engine.close()
    assert engine.providers == []
    assert repr(engine).endswith("closed)")
    with pytest.raises(InferenceError, match="engine is closed"):
        engine.infer(np.zeros((1, 3, 640, 640), np.float32))
    with OpenVinoEngineBuilder().build(OnnxModel.load(yolov8n_onnx)) as scoped:
        pass
    assert scoped.providers == []


def test_unloadable_model_is_an_engine_build_error(tmp_path: Path, yolov8n_onnx: Path) -> None:
    model = OnnxModel.load(yolov8n_onnx)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(yolov8n_onnx.read_bytes()[:5000])
    with pytest.raises(EngineBuildError, match=r"OpenVINO could not compile .*broken\.onnx"):
        OpenVinoEngineBuilder().build(OnnxModel(path=broken, info=model.info))
    with pytest.raises(EngineBuildError, match="no device 'GPU'"):
        OpenVinoEngineBuilder(device="GPU").build(model)


def test_missing_openvino_names_the_extra(monkeypatch: pytest.MonkeyPatch, yolov8n_onnx: Path) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail as in a base install
    with pytest.raises(MissingDependencyError, match=r'pip install "yoloquant\[openvino\]"'):
        OpenVinoEngineBuilder().build(OnnxModel.load(yolov8n_onnx))
    with pytest.raises(MissingDependencyError, match=r'pip install "yoloquant\[openvino\]"'):
        check_backend(Backend.OPENVINO)


def test_signed_int8_activations_are_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    onnx = pytest.importorskip("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["out"]),
    ]
    shape = [1, 3, 32, 32]
    graph = helper.make_graph(
        nodes,
        "signed",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, shape)],
        inits,
    )
    path = tmp_path / "signed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    from yoloquant.artifacts import ModelInfo
    from yoloquant.backends.openvino.engine import signed_activation_quantizers

    assert signed_activation_quantizers(path) == 1
    with (
        caplog.at_level("WARNING"),
        OpenVinoEngineBuilder().build(OnnxModel(path=path, info=ModelInfo(names={0: "a"}))),
    ):
        pass
    assert "1 signed int8 activation Q/DQ pairs, which OpenVINO's CPU plugin mis-executes" in caplog.text


def test_pipeline_runs_fp32_on_openvino_with_the_same_map(
    yolov8n_onnx: Path, coco64_yaml: Path, tmp_path: Path
) -> None:
    from yoloquant import QuantPipeline

    result = (
        QuantPipeline.from_onnx(yolov8n_onnx)
        .quantize("fp32", backend="openvino")
        .evaluate(coco64_yaml, num_images=4, offset=40)
        .benchmark(iterations=5, warmup=1)
        .with_progress(False)
        .run(tmp_path / "run")
    )
    cpu, ov = result.variants
    assert (cpu.name, ov.name) == ("fp32", "fp32-openvino")
    assert ov.providers == ("OpenVINO:CPU",)
    assert not [w for w in result.warnings if "fell back" in w or "asked for" in w]
    assert ov.map50_95 == pytest.approx(cpu.map50_95, abs=1e-3)
