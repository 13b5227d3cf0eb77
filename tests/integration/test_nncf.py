"""NNCF INT8 on the real YOLOv8n and coco64 images, run on OpenVINO's own runtime."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from yoloquant import OnnxModel, QdqModel
from yoloquant.artifacts import CalibrationSet
from yoloquant.config import Backend, CalibMethod, EvalConfig, Precision
from yoloquant.data.calibration import ImageCalibrator
from yoloquant.data.datasets import load_dataset
from yoloquant.errors import ConfigError, MissingDependencyError
from yoloquant.eval.coco import evaluate
from yoloquant.quantize import graph, make_quantizer, unsigned
from yoloquant.quantize.float_scope import FloatScope
from yoloquant.quantize.nncf import NncfConfig, NncfQuantizer

nncf = pytest.importorskip("nncf")
pytest.importorskip("openvino")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from yoloquant.backends.openvino import OpenVinoEngineBuilder  # noqa: E402


@pytest.fixture(scope="module")
def fp32(yolov8n_onnx: Path) -> OnnxModel:
    return OnnxModel.load(yolov8n_onnx)


@pytest.fixture(scope="module")
def calib(fp32: OnnxModel, coco64_images: Path, tmp_path_factory: pytest.TempPathFactory) -> CalibrationSet:
    cache = tmp_path_factory.mktemp("calib-cache")
    return ImageCalibrator(source=coco64_images, num_images=8, cache_dir=cache, progress=False).calibrate(fp32.info)


@pytest.fixture(scope="module")
def nncf_model(fp32: OnnxModel, calib: CalibrationSet, tmp_path_factory: pytest.TempPathFactory) -> QdqModel:
    return NncfQuantizer(progress=False).quantize(fp32, calib, tmp_path_factory.mktemp("nncf"))


def _activation_zero_point_types(path: Path) -> set[int]:
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    return {
        inits[n.input[2]].data_type
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits and len(n.input) > 2
    }


def test_nncf_model_is_uint8_keeps_decode_float_and_metadata(nncf_model: QdqModel, fp32: OnnxModel) -> None:
    assert (nncf_model.quantizer, nncf_model.backend, nncf_model.precision) == ("nncf", "openvino", Precision.INT8)
    assert _activation_zero_point_types(nncf_model.path) == {onnx.TensorProto.UINT8}
    assert OnnxModel.load(nncf_model.path).info == fp32.info  # names, imgsz, head copied back
    decode = set(graph.find_head(onnx.load(str(fp32.path))).decode)
    model = onnx.load(str(nncf_model.path))
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    # every feature conv, the head's box / class output convs included, has int8 weights (as in Ultralytics' export)
    assert len(convs) == 63
    assert all(producers.get(c.input[1]) == "DequantizeLinear" for c in convs)
    # NNCF quantizes C2f's Split / Concat inputs rather than each conv input (OpenVINO propagates it), so fewer
    # convs look "quantized" to the ONNX Runtime-centric classification; none of the decode path does
    quantized = {n for names in nncf_model.quantized_nodes.values() for n in names}
    assert not decode & quantized
    assert not any(
        producers.get(i) == "DequantizeLinear" for n in model.graph.node if n.name in decode for i in n.input
    )
    assert nncf_model.path.name == "yolov8n-int8.onnx"


def test_nncf_map_on_openvino_is_close_to_fp32(nncf_model: QdqModel, fp32: OnnxModel, coco64_yaml: Path) -> None:
    images = load_dataset(coco64_yaml).select(16, offset=32)  # disjoint from the 8 calibration images
    config = EvalConfig(resamples=0)
    with OpenVinoEngineBuilder().build(fp32) as engine:
        base = evaluate(engine, images, config, progress=False)
    with OpenVinoEngineBuilder().build(nncf_model) as engine:
        got = evaluate(engine, images, config, progress=False)
    # measured +1.3 points (16 images resolve only a few points); the unshifted int8 activations score ~0 here
    assert got.map50_95 > base.map50_95 - 0.04, (got, base)


def test_uint8_shift_is_exact_on_onnxruntime(tmp_path: Path) -> None:
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(-7, np.int8), "z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq"),
    ]
    g = helper.make_graph(
        nodes,
        "shift",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [64])],
        inits,
        value_info=[helper.make_tensor_value_info("q", onnx.TensorProto.INT8, [64])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.linspace(-7.0, 7.0, 64, dtype=np.float32)  # beyond both ends of the grid: clipping too

    def run(m: object) -> np.ndarray:
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
        return np.asarray(session.run(None, {"x": x})[0])

    before = run(model)
    assert unsigned.shift_to_uint8(model) == 1
    np.testing.assert_array_equal(run(model), before)
    assert {i.data_type for i in model.graph.initializer if "zero_point" in i.name} == {onnx.TensorProto.UINT8}


def test_quantizer_is_chosen_by_name_and_refuses_what_it_cannot_do() -> None:
    assert make_quantizer(Precision.INT8, Backend.OPENVINO, quantizer="nncf") == NncfQuantizer()
    made = make_quantizer(Precision.INT8, Backend.OPENVINO, quantizer="nncf", keep_float="head")
    assert made.config.keep_float == FloatScope.head()  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="backend='openvino'"):
        make_quantizer(Precision.INT8, Backend.ORT_CPU, quantizer="nncf")
    with pytest.raises(ConfigError, match="NNCF chooses its own activation ranges"):
        make_quantizer(Precision.INT8, Backend.OPENVINO, quantizer="nncf", calibration_method=CalibMethod.MINMAX)
    with pytest.raises(ConfigError, match="unknown NNCF preset"):
        NncfConfig(preset="fast")  # type: ignore[arg-type]
    cfg = NncfConfig(keep_float=FloatScope(nodes=("^/model.0/",)))
    assert NncfConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="NNCF's recipe keeps the decode path float"):
        NncfConfig(keep_float="nothing")


def test_missing_nncf_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, fp32: OnnxModel, calib: CalibrationSet, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(MissingDependencyError, match=r'NNCF is not installed.*pip install "yoloquant\[openvino\]"'):
        NncfQuantizer(progress=False).quantize(fp32, calib, tmp_path)
