"""BrevitasQuantizer (W8 / W4 weights, int8 or float activations, QCDQ ONNX) on the real bundled YOLOv8n.

The exported ONNX is checked against a hand computation of the weight quantization, against the
quantized PyTorch model it came from, and against the FP32 model on real COCO images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yoloquant.artifacts import CalibrationSet, ModelInfo, OnnxModel, QdqModel
from yoloquant.config import Backend, CalibMethod, Precision
from yoloquant.errors import ConfigError
from yoloquant.quantize import QuantizerName, make_quantizer
from yoloquant.quantize.brevitas import ActScale, BrevitasConfig, BrevitasQuantizer, Protect, Rounding, WeightScale
from yoloquant.quantize.brevitas.config import for_precision

onnx = pytest.importorskip("onnx")
pytest.importorskip("brevitas")
pytest.importorskip("onnxoptimizer")
torch = pytest.importorskip("torch")

from yoloquant.quantize.brevitas import ptq  # noqa: E402  (needs torch)

# --- config and wiring (no model run) -----------------------------------------------------------


def test_presets_follow_the_precision_and_round_trip_through_json() -> None:
    w4 = BrevitasConfig.w4a8()
    assert (w4.weight_bits, w4.act_bits, w4.name) == (4, 8, "w4a8")
    assert w4.rounding is Rounding.QRONOS and w4.protect is Protect.EARLY and w4.weight_scale is WeightScale.MSE
    w8 = BrevitasConfig.w8a16()
    assert (w8.act_bits, w8.rounding, w8.protect) == (None, Rounding.NEAREST, Protect.NONE)
    w8a8 = BrevitasConfig.w8a8()
    assert w8a8.act_zero_point and w8a8.act_scale is ActScale.PERCENTILE and not w8a8.weight_zero_point
    assert not w4.act_zero_point
    assert BrevitasConfig.from_dict(json.loads(json.dumps(w4.to_dict()))) == w4


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"weight_bits": 2}, "weight_bits must be 4 or 8"),
        ({"act_bits": 4}, "act_bits must be 8"),
        ({"protect": "tail"}, "protect"),
        ({"keep_float": "everything"}, "unknown keep_float"),
        ({"opset": 11}, "opset"),
        ({"rounding": "stochastic"}, "rounding"),
        ({"rounding_iters": 0}, "rounding_iters"),
    ],
)
def test_bad_options_name_the_value(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        BrevitasConfig(**kwargs)


def test_presets_refuse_precisions_brevitas_does_not_make() -> None:
    with pytest.raises(ConfigError, match="Brevitas makes w8a16, w8a8, w4a16, w4a8, not 'fp8'"):
        for_precision(BrevitasConfig, "fp8", {})


def test_the_old_preset_spelling_names_the_new_one() -> None:
    with pytest.raises(ConfigError, match=r"BrevitasConfig\.w4a8\(\*\*changes\)"):
        BrevitasConfig.preset("w4a8")


def test_make_quantizer_picks_brevitas_for_its_precisions() -> None:
    q = make_quantizer(Precision.W4A16, Backend.ORT_CPU, keep_float="head", calibration_method=None)
    assert isinstance(q, BrevitasQuantizer) and q.config == BrevitasConfig.w4a16(keep_float="head")
    q = make_quantizer(Precision.W8A8, Backend.ORT_CPU, calibration_method=CalibMethod.PERCENTILE)
    assert isinstance(q, BrevitasQuantizer) and q.config.act_scale is ActScale.PERCENTILE
    trt = make_quantizer(Precision.W8A8, Backend.TENSORRT, quantizer=QuantizerName.BREVITAS)
    assert isinstance(trt, BrevitasQuantizer) and not trt.config.act_zero_point  # TensorRT: symmetric int8 only
    assert trt.config.act_scale is ActScale.MSE
    with pytest.raises(ConfigError, match="Brevitas makes"):
        make_quantizer(Precision.INT8, Backend.ORT_CPU, quantizer=QuantizerName.BREVITAS)
    with pytest.raises(ConfigError, match="not 'entropy'"):
        make_quantizer(Precision.W8A8, Backend.ORT_CPU, calibration_method=CalibMethod.ENTROPY)


@pytest.mark.parametrize(
    ("precision", "changes", "start"),
    [
        ("w8a8", {"act_zero_point": False}, "int8 Q/DQ"),
        ("w8a8", {}, "no TensorRT"),  # the preset's uint8 activations: zero points
        ("w4a8", {"weight_zero_point": True}, "no TensorRT"),
        ("w8a16", {}, "no GPU speedup"),
        ("w4a16", {}, "no GPU speedup"),
        ("w4a8", {}, "no GPU speedup"),
    ],
)
def test_only_symmetric_w8a8_is_reported_as_tensorrt_int8(precision: str, changes: dict[str, Any], start: str) -> None:
    from yoloquant.quantize.brevitas.quantizer import _tensorrt_note

    assert _tensorrt_note(for_precision(BrevitasConfig, precision, changes)).startswith(start)


# --- roles of the convs on the real model -------------------------------------------------------


@pytest.fixture(scope="module")
def detector(yolov8n_pt: Path) -> Any:
    return ptq.load_detector(yolov8n_pt)


def test_conv_bits_follow_presets(detector: Any) -> None:
    head = {"model.22.cv2.0.2", "model.22.cv2.1.2", "model.22.cv2.2.2"} | {f"model.22.cv3.{i}.2" for i in range(3)}
    plain = ptq.conv_bits(detector, BrevitasConfig(weight_bits=4, act_bits=None))
    assert plain["model.22.dfl.conv"] is None  # the DFL projection is decode, never quantized
    assert len(plain) == 64 and sum(b == 4 for b in plain.values()) == 63
    kept = ptq.conv_bits(detector, BrevitasConfig(weight_bits=4, keep_float="head+first"))
    assert {n for n, b in kept.items() if b is None} == head | {"model.0.conv", "model.22.dfl.conv"}
    early = ptq.conv_bits(detector, BrevitasConfig(weight_bits=4, protect="early"))
    eights = {n for n, b in early.items() if b == 8}
    assert head <= eights and {n.split(".")[1] for n in eights - head} == {"0", "1", "2", "3", "4"}
    assert ptq.conv_bits(detector, BrevitasConfig(weight_bits=8, protect="early"))["model.1.conv"] == 8
    detect = ptq.conv_bits(detector, BrevitasConfig(weight_bits=4, protect="early+detect"))
    assert {n for n, b in detect.items() if b == 8} == eights | {n for n in detect if n.startswith("model.22.cv")}
    assert sum(b == 4 for b in detect.values()) == 32  # model.5-21


# --- quantize + export on real images ----------------------------------------------------------


def _calibration(images: Path, info: ModelInfo, n: int) -> CalibrationSet:
    from yoloquant.data.calibration import ImageCalibrator

    return ImageCalibrator(source=images, num_images=n, progress=False).calibrate(info)


def _quantize(onnx_path: Path, pt: Path, images: Path, out: Path, config: BrevitasConfig) -> QdqModel:
    model = OnnxModel(path=onnx_path, info=ModelInfo.from_onnx(onnx_path), checkpoint=pt)
    return BrevitasQuantizer(config, progress=False).quantize(model, _calibration(images, model.info, 4), out)


def _dequantized_weight(model: Any, conv_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8 values, per-channel scales, float weights) feeding one Conv of a QCDQ model."""
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    consts = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}
    values = inits | consts
    conv = next(n for n in graph.node if n.op_type == "Conv" and n.name == conv_name)
    dq = producers[conv.input[1]]
    assert dq.op_type == "DequantizeLinear"
    source = producers.get(dq.input[0])
    q = values[source.input[0]] if source is not None and source.op_type == "Clip" else values[dq.input[0]]
    return q, values[dq.input[1]], q.astype(np.float32) * values[dq.input[1]].reshape(-1, 1, 1, 1)


def test_w8a16_weights_match_a_hand_computed_per_channel_quantization(
    yolov8n_onnx: Path, yolov8n_pt: Path, coco64_images: Path, tmp_path: Path, detector: Any
) -> None:
    qdq = _quantize(yolov8n_onnx, yolov8n_pt, coco64_images, tmp_path, BrevitasConfig.w8a16())
    model = onnx.load(str(qdq.path))
    q, scale, _ = _dequantized_weight(model, "/model.2/cv1/conv/Conv")
    w = detector.model[2].cv1.conv.weight.detach().numpy()
    expected_scale = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127  # absmax, narrow range [-127, 127]
    np.testing.assert_allclose(scale.reshape(-1), expected_scale, rtol=1e-6)
    np.testing.assert_array_equal(q, np.round(w / expected_scale.reshape(-1, 1, 1, 1)).astype(np.int8))
    assert qdq.precision is Precision.W8A16 and qdq.format == "qcdq"
    assert len(qdq.quantized_nodes["Conv"]) == 63 and "QuantizeLinear" not in {n.op_type for n in model.graph.node}
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["yoloquant.head"] == "dfl" and "names" in meta  # the float export's metadata came over
    assert qdq.config["tensorrt"].startswith("no GPU speedup")  # weight-only: TensorRT dequantizes to float convs


@pytest.mark.slow  # 10-20 s; `make test-all` (W4: the slow example runs it too)
def test_w4a8_has_int4_weights_int8_inputs_and_runs_like_its_torch_model(
    yolov8n_onnx: Path, yolov8n_pt: Path, coco64_images: Path, tmp_path: Path
) -> None:
    config = BrevitasConfig.w4a8(rounding="nearest", act_scale="percentile", protect="head")
    qdq = _quantize(yolov8n_onnx, yolov8n_pt, coco64_images, tmp_path, config)
    model = onnx.load(str(qdq.path))
    q, _, _ = _dequantized_weight(model, "/model.2/cv1/conv/Conv")
    assert q.min() >= -7 and q.max() <= 7  # 4-bit narrow range
    q8, _, _ = _dequantized_weight(model, "/model.22/cv2.0/cv2.0.2/Conv")  # protected head output conv
    assert q8.max() > 7
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == 63  # one int8 input per quantized conv
    assert ops.count("Clip") == 57  # the 4-bit weights' [-7, 7]; the 8-bit ones need none
    assert qdq.config["weight_bits_by_conv"] == {"4-bit": 57, "8-bit": 6, "float": 1}

    from yoloquant.backends.ort.engine import OrtEngineBuilder

    image = _calibration(coco64_images, qdq.info, 1).batches(1)[0]
    detector = ptq.load_detector(yolov8n_pt)
    ptq.quantize_convs(detector, config)
    ptq.calibrate(detector, [torch.from_numpy(b) for b in _calibration(coco64_images, qdq.info, 4).batches(4)], config)
    from yoloquant.quantize.brevitas.export import _export_mode

    _export_mode(detector, qdq.info)
    with torch.no_grad():
        expected = detector(torch.from_numpy(image)).numpy()
    with OrtEngineBuilder().build(qdq) as engine:
        got = engine.infer(image)[0]
    with OrtEngineBuilder().build(OnnxModel.load(yolov8n_onnx)) as engine:
        fp32 = engine.infer(image)[0]
    # measured: ONNX vs its torch model 0.53 px median box error, 0.004 max score error; FP32 vs it: 8.3 px, 0.94
    # (int8 rounding ties resolve differently and compound over 60 layers; the quantization itself is the same)
    box_err, fp32_box_err = np.median(np.abs(got - expected)[:, :4]), np.median(np.abs(fp32 - expected)[:, :4])
    assert box_err < 0.1 * fp32_box_err and np.abs(got - expected)[:, 4:].max() < 0.02


def test_zero_points_give_uint8_activations_and_shifted_weights(
    yolov8n_onnx: Path, yolov8n_pt: Path, coco64_images: Path, tmp_path: Path
) -> None:
    config = BrevitasConfig.w8a8(weight_zero_point=True)
    qdq = _quantize(yolov8n_onnx, yolov8n_pt, coco64_images, tmp_path, config)
    model = onnx.load(str(qdq.path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    quants = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    points = [inits[q.input[2]] for q in quants]
    assert len(quants) == 63 and all(p.dtype == np.uint8 for p in points)
    assert [i.name for i in model.graph.input] == ["images"]  # biases are constants, not graph inputs
    assert "Clip" not in {n.op_type for n in model.graph.node}  # 8-bit weights need no Clip
    assert inits[quants[0].input[2]] == 0  # the image is >= 0: its range starts at zero
    assert sum(int(p) > 0 for p in points) > 50  # SiLU outputs dip below zero: the grid shifts up
    weights = [
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] not in {q.output[0] for q in quants}
    ]
    shifts = [inits[w.input[2]] for w in weights if len(w.input) > 2 and w.input[2] in inits]
    assert shifts and any(np.any(s != 0) for s in shifts)  # per-channel weight zero points
    assert qdq.config["tensorrt"].startswith("no TensorRT")

    from yoloquant.backends.ort.engine import OrtEngineBuilder

    image = _calibration(coco64_images, qdq.info, 1).batches(1)[0]
    with OrtEngineBuilder().build(qdq) as engine:
        got = engine.infer(image)[0]
    with OrtEngineBuilder().build(OnnxModel.load(yolov8n_onnx)) as engine:
        fp32 = engine.infer(image)[0]
    confident = fp32[0, 4:].max(axis=0) > 0.5  # anchors that detect something
    assert confident.sum() > 10 and np.median(np.abs(got - fp32)[0, :4, confident]) < 2.0  # pixels


def test_adaround_and_qat_are_refused_together() -> None:
    from yoloquant.quantize.brevitas import QatConfig

    with pytest.raises(ConfigError, match="rounding='qronos'"):
        BrevitasQuantizer(BrevitasConfig.w4a8(rounding="adaround"), qat=QatConfig(steps=1))


def test_needs_the_checkpoint(yolov8n_onnx: Path, tmp_path: Path) -> None:
    model = OnnxModel.load(yolov8n_onnx)
    data = CalibrationSet(images=np.zeros((1, 3, 640, 640), np.uint8), files=(), digest="x")
    with pytest.raises(ConfigError, match="from_ultralytics"):
        BrevitasQuantizer().quantize(model, data, tmp_path)


@pytest.mark.slow  # 10-20 s; `make test-all` (QAT: research path)
def test_qat_fine_tunes_the_ptq_model_and_keeps_its_grid(
    yolov8n_onnx: Path, yolov8n_pt: Path, coco64_images: Path, tmp_path: Path
) -> None:
    from yoloquant.quantize.brevitas import QatConfig

    config = BrevitasConfig.w4a16(rounding="nearest", protect="head")
    model = OnnxModel(path=yolov8n_onnx, info=ModelInfo.from_onnx(yolov8n_onnx), checkpoint=yolov8n_pt)
    data = _calibration(coco64_images, model.info, 4)
    ptq_only = BrevitasQuantizer(config, progress=False).quantize(model, data, tmp_path / "ptq")
    qat = QatConfig(steps=2, batch_size=2, lr=1e-3, seed=0)
    tuned = BrevitasQuantizer(config, qat=qat, progress=False).quantize(model, data, tmp_path / "qat")
    report = tuned.config["qat"]
    assert report["steps"] == 2 and report["images_seen"] == 4 and report["data"] == "calibration images"
    assert np.isfinite(report["loss_first"]) and np.isfinite(report["loss_last"])
    before = _dequantized_weight(onnx.load(str(ptq_only.path)), "/model.2/cv1/conv/Conv")
    after = _dequantized_weight(onnx.load(str(tuned.path)), "/model.2/cv1/conv/Conv")
    assert after[0].min() >= -7 and after[0].max() <= 7  # still 4-bit after the BatchNorms were folded back
    assert not np.allclose(before[2], after[2])  # training moved the weights


def test_pipeline_runs_a_brevitas_variant_quietly(
    yolov8n_pt: Path, coco64_images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from yoloquant import QuantPipeline

    result = (
        QuantPipeline.from_ultralytics(yolov8n_pt)
        .calibrate(coco64_images, num_images=2)
        .quantize("w8a8", calibration_method="percentile")
        .quantize("int8")
        .evaluate(coco64_images, num_images=4)
        .with_progress(False)
        .run(tmp_path / "run")
    )
    w8a8 = result.variant("w8a8")
    assert w8a8.map50_95 is not None and abs(w8a8.map50_95 - result.baseline.map50_95) < 0.05  # type: ignore[operator]
    err = capsys.readouterr().err
    assert "calibrating" not in err  # the Brevitas and ONNX Runtime quantizers' bars follow with_progress
