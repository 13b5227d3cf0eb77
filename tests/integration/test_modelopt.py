"""ModelOptQuantizer (INT8 / FP8, TensorRT Q/DQ layout) on the real bundled YOLOv8n and COCO images (CPU).

TensorRT cannot run here, so the Q/DQ models are checked structurally and run through ONNX Runtime's
CPU EP against the FP32 model.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yoloquant.artifacts import CalibrationSet, OnnxModel, QdqModel
from yoloquant.config import Backend, CalibMethod, Precision
from yoloquant.errors import ConfigError, QuantizationError
from yoloquant.quantize import unsigned
from yoloquant.quantize.float_scope import FloatScope
from yoloquant.quantize.modelopt import ModelOptConfig, ModelOptQuantizer

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ASSETS = Path(__file__).resolve().parents[2] / "assets"


# --- config (no ModelOpt needed) ----------------------------------------------------------------


def test_config_round_trips_through_json() -> None:
    scope = FloatScope.head_and_first().with_nodes(r"^/model\.9/")
    cfg = ModelOptConfig(mode="fp8", calibration_method="minmax", keep_float=scope)
    assert ModelOptConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.mode is Precision.FP8 and cfg.calibration_method is CalibMethod.MINMAX and cfg.keep_float == scope


def test_calibration_defaults_to_the_best_measured_per_mode() -> None:
    assert ModelOptConfig().calibration_method is CalibMethod.ENTROPY
    assert ModelOptConfig().keep_float == FloatScope.head_and_first()
    assert ModelOptConfig(mode="fp8").calibration_method is CalibMethod.MINMAX
    assert ModelOptConfig.int8() == ModelOptConfig() and ModelOptConfig.fp8() == ModelOptConfig(mode="fp8")


def test_openvino_preset_is_int8_with_the_defaults_and_round_trips() -> None:
    cfg = ModelOptConfig.openvino()
    assert cfg.backend is Backend.OPENVINO and ModelOptConfig().backend is Backend.TENSORRT
    assert dataclasses.replace(cfg, backend=Backend.TENSORRT) == ModelOptConfig.int8()
    assert ModelOptConfig.fp8(keep_float="head") == ModelOptConfig(mode="fp8", keep_float="head")  # a preset's changes
    assert ModelOptConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_config_maps_onto_modelopt_arguments() -> None:
    kwargs = ModelOptQuantizer(ModelOptConfig(calibration_method="minmax")).modelopt_kwargs(("/model.22/Concat",))
    assert kwargs["calibration_method"] == "max" and kwargs["calibration_eps"] == ["cpu"]
    assert kwargs["high_precision_dtype"] == "fp32"  # ModelOpt's default would turn the model into fp16
    assert kwargs["nodes_to_exclude"] == [r"^/model\.22/Concat$"]  # exact: ModelOpt matches regexes


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"mode": "fp16"}, "int8 and fp8"),
        ({"mode": "int4"}, "mode"),
        ({"calibration_method": "percentile"}, "minmax or entropy"),
        ({"mode": "fp8", "calibration_method": "entropy"}, "fp8 needs minmax"),
        ({"keep_float": "tail"}, "unknown keep_float"),
        ({"high_precision": "int8"}, "fp32 or fp16"),
        ({"calibration_device": "tpu"}, "calibration_device"),
        ({"opset": 17}, "opset"),
        ({"keep_float": {"nodes": ("model.(",)}}, "regex"),
        ({"backend": "ort-cpu"}, "tensorrt or openvino"),
        ({"mode": "fp8", "backend": "openvino"}, "rewrites int8"),
        ({"high_precision": "fp16", "backend": "openvino"}, "rewrites int8"),
    ],
)
def test_config_rejects_bad_options(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        ModelOptConfig(**kwargs)


def test_importing_the_quantizer_does_not_import_modelopt() -> None:
    code = "import sys, yoloquant.quantize.modelopt; sys.exit('modelopt' in sys.modules or 'torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- real quantization ---------------------------------------------------------------------------


def _ort_state() -> dict[str, Any]:
    """Everything ModelOpt is known to patch in onnxruntime, by identity."""
    from onnxruntime.quantization import base_quantizer, calibrate, qdq_quantizer, registry

    state: dict[str, Any] = {"InferenceSession": ort.InferenceSession, "create_calibrator": calibrate.create_calibrator}
    for cls in (
        calibrate.CalibraterBase,
        calibrate.MinMaxCalibrater,
        calibrate.HistogramCalibrater,
        calibrate.HistogramCollector,
        qdq_quantizer.QDQQuantizer,
        base_quantizer.BaseQuantizer,
        ort.InferenceSession,
    ):
        state.update({f"{cls.__name__}.{k}": v for k, v in vars(cls).items()})
    state["QDQRegistry"] = dict(registry.QDQRegistry)
    state["QLinearOpsRegistry"] = dict(registry.QLinearOpsRegistry)
    return state


@pytest.fixture(scope="module")
def ort_before() -> dict[str, Any]:
    return _ort_state()


@pytest.fixture(scope="module")
def modelopt(ort_before: dict[str, Any]) -> None:
    pytest.importorskip("modelopt.onnx.quantization")


@pytest.fixture(scope="module")
def fp32(yolov8n_onnx: Path) -> OnnxModel:
    return OnnxModel.load(yolov8n_onnx)


def _images(info: Any, num: int, offset: int, cache: Path) -> CalibrationSet:
    from yoloquant.data.calibration import ImageCalibrator

    source = ASSETS / "coco64" / "images"
    calibrator = ImageCalibrator(source=source, num_images=num, offset=offset, cache_dir=cache, progress=False)
    return calibrator.calibrate(info)


@pytest.fixture(scope="module")
def calib(fp32: OnnxModel, tmp_path_factory: pytest.TempPathFactory) -> CalibrationSet:
    return _images(fp32.info, 8, 0, tmp_path_factory.mktemp("calib-cache"))


@pytest.fixture(scope="module")
def unseen(fp32: OnnxModel, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Four real images the quantizer never saw, as float32 model input."""
    images = _images(fp32.info, 4, 40, tmp_path_factory.mktemp("unseen-cache")).images
    return images.astype(np.float32) / 255.0


@pytest.fixture(scope="module", params=["int8", "fp8"])
def qdq(
    request: pytest.FixtureRequest,
    modelopt: None,
    fp32: OnnxModel,
    calib: CalibrationSet,
    tmp_path_factory: pytest.TempPathFactory,
) -> QdqModel:
    out = tmp_path_factory.mktemp(f"modelopt-{request.param}")
    return ModelOptQuantizer(ModelOptConfig(mode=request.param, keep_float="head")).quantize(fp32, calib, out)


def _producers(model: Any) -> dict[str, str]:
    return {out: n.op_type for n in model.graph.node for out in n.output}


def _run(path: Path, batch: np.ndarray) -> np.ndarray:
    from yoloquant.backends.ort import OrtEngineBuilder

    with OrtEngineBuilder().build(OnnxModel.load(path)) as engine:
        return np.concatenate([engine.infer(batch[i : i + 1])[0] for i in range(len(batch))])


def test_artifact_describes_the_quantized_model(qdq: QdqModel, fp32: OnnxModel) -> None:
    mode = qdq.config["mode"]
    assert qdq.precision is Precision(mode) and qdq.path.name == f"yolov8n-{mode}.onnx"
    assert qdq.quantizer == "modelopt" and qdq.backend == "tensorrt" and qdq.source == fp32
    assert 0 < qdq.seconds < 120
    assert ModelOptConfig.from_dict(json.loads(json.dumps(qdq.config))).keep_float == FloatScope.head()
    assert [p.name for p in qdq.path.parent.iterdir()] == [qdq.path.name]  # no temp files left


def test_metadata_equals_the_source(qdq: QdqModel, fp32: OnnxModel) -> None:
    src = {p.key: p.value for p in onnx.load(str(fp32.path)).metadata_props}
    dst = {p.key: p.value for p in onnx.load(str(qdq.path)).metadata_props}
    assert dst == src
    assert OnnxModel.load(qdq.path).info == fp32.info


def test_qdq_dtype_and_opset(qdq: QdqModel) -> None:
    model = onnx.load(str(qdq.path))
    inits = {i.name: i for i in model.graph.initializer}
    zps = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    want = onnx.TensorProto.INT8 if qdq.precision is Precision.INT8 else onnx.TensorProto.FLOAT8E4M3FN
    assert zps and {z.data_type for z in zps} == {want}
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 19


def test_head_stays_float_and_the_body_is_quantized(qdq: QdqModel, fp32: OnnxModel) -> None:
    model = onnx.load(str(qdq.path))
    producers = _producers(model)
    keep = FloatScope.head().node_names(onnx.load(str(fp32.path)))
    nodes = {n.name: n for n in model.graph.node}
    assert len(keep) == 30 and set(keep) <= set(nodes)  # ModelOpt keeps Ultralytics' node names
    for name in keep:
        assert all(producers.get(i) != "DequantizeLinear" for i in nodes[name].input), name
    floats = {n for names in qdq.float_nodes.values() for n in names}
    assert set(keep) - {n for n in keep if nodes[n].op_type == "Reshape"} <= floats
    assert len(qdq.quantized_nodes["Conv"]) >= 53  # 64 convs - 6 output convs - DFL (- fp8's 4 thin convs)
    assert not set(qdq.quantized_nodes["Conv"]) & set(keep)


def test_outputs_match_fp32_on_unseen_images(qdq: QdqModel, fp32: OnnxModel, unseen: np.ndarray) -> None:
    ref, out = _run(fp32.path, unseen), _run(qdq.path, unseen)  # [B, 84, 8400]: 4 box + 80 class scores
    assert out.shape == ref.shape
    scores_ref, scores = ref[:, 4:].ravel(), out[:, 4:].ravel()
    cosine = float(scores_ref @ scores / (np.linalg.norm(scores_ref) * np.linalg.norm(scores)))
    assert cosine > MIN_COSINE, cosine
    for r, q in zip(ref, out, strict=True):
        best = np.argsort(r[4:].max(0))[-10:]  # the ten most confident anchors of FP32
        assert (r[4:, best].argmax(0) == q[4:, best].argmax(0)).mean() >= 0.9
        assert np.abs(r[:4, best] - q[:4, best]).max() < MAX_BOX_PIXELS  # box centre / size


# Measured on these images (8 calibration images): cosine 0.987 (int8) / 0.985 (fp8), box error <= 7 px.
MIN_COSINE, MAX_BOX_PIXELS = 0.97, 12


def test_onnxruntime_is_not_patched(qdq: QdqModel, ort_before: dict[str, Any]) -> None:
    from onnxruntime.quantization import registry

    after = _ort_state()
    changed = sorted(k for k in ort_before.keys() | after.keys() if ort_before.get(k) is not after.get(k))
    changed = [k for k in changed if not k.endswith("Registry") or ort_before[k] != after[k]]
    assert changed == []
    # ModelOpt deletes these from ORT's registries when it quantizes in-process
    assert {"Reshape", "Transpose", "Slice", "Split"} <= set(registry.QDQRegistry)
    assert {"Sigmoid", "Concat", "Softmax", "Relu"} <= set(registry.QLinearOpsRegistry)


def test_modelopt_failures_become_quantization_errors(modelopt: None, fp32: OnnxModel, tmp_path: Path) -> None:
    bad = CalibrationSet(images=np.zeros((2, 3, 320, 320), np.uint8), files=(), digest="wrong-size")
    with pytest.raises(QuantizationError, match=r"ModelOpt int8 quantization of yolov8n-fp32\.onnx failed") as info:
        ModelOptQuantizer().quantize(fp32, bad, tmp_path)
    assert info.value.__cause__ is not None and info.value.artifact == fp32.path
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_empty_calibration_set_is_rejected(fp32: OnnxModel, tmp_path: Path) -> None:
    empty = CalibrationSet(images=np.zeros((0, 3, 640, 640), np.uint8), files=(), digest="empty")
    with pytest.raises(QuantizationError, match="empty"):
        ModelOptQuantizer().quantize(fp32, empty, tmp_path)


# --- YOLO26n (end-to-end head, output [1, 300, 6]) ----------------------------------------------


@pytest.mark.slow  # 10-20 s; `make test-all` (ORT's YOLO26 test covers the top-k in the default run)
def test_yolo26_end_to_end_head_keeps_top_k_float(
    modelopt: None, calib: CalibrationSet, unseen: np.ndarray, tmp_path: Path
) -> None:
    from yoloquant.export import UltralyticsExporter

    v26 = UltralyticsExporter().export(ASSETS / "weights" / "yolo26n.pt", tmp_path / "export")
    qdq = ModelOptQuantizer(ModelOptConfig(mode="int8", keep_float="head")).quantize(v26, calib, tmp_path / "int8")
    keep = set(FloatScope.head().node_names(onnx.load(str(v26.path))))
    assert {"TopK", "GatherElements"} <= {op for op, names in qdq.float_nodes.items() if set(names) & keep}
    assert not {n for names in qdq.quantized_nodes.values() for n in names} & keep
    assert len(qdq.quantized_nodes["Conv"]) >= 90
    ref, out = _run(v26.path, unseen[:2]), _run(qdq.path, unseen[:2])
    assert out.shape == ref.shape == (2, 300, 6)
    twins = []
    for r, q in zip(ref, out, strict=True):
        top = r[r[:, 4] > 0.5]
        assert len(top) > 0
        for det in top:  # a confident FP32 detection's INT8 twin: same class, box within 20 px
            same = q[(q[:, 5] == det[5]) & (q[:, 4] > 0.25)]
            twins.append(bool(len(same)) and float(np.abs(same[:, :4] - det[:4]).max(1).min()) < 20)
    assert np.mean(twins) >= 0.8, twins  # YOLO26n loses more than YOLOv8n (-0.5 mAP on coco128)


# --- OpenVINO rewrite (uint8 activations, folded weights) -----------------------------------------


@pytest.fixture(scope="module")
def openvino_qdq(
    modelopt: None, fp32: OnnxModel, calib: CalibrationSet, tmp_path_factory: pytest.TempPathFactory
) -> QdqModel:
    cfg = dataclasses.replace(ModelOptConfig.openvino(), keep_float="head")  # qdq's int8 model, rewritten
    return ModelOptQuantizer(cfg).quantize(fp32, calib, tmp_path_factory.mktemp("modelopt-openvino"))


def _tensorrt_int8(qdq: QdqModel) -> Any:
    if qdq.precision is not Precision.INT8:
        pytest.skip("the OpenVINO rewrite is for int8 models")
    return onnx.load(str(qdq.path))


def _run_proto(model: Any, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"images": batch[i : i + 1]})[0] for i in range(len(batch))])


def _scales(model: Any) -> dict[str, tuple[float, int, int]]:
    """Activation tensor -> (scale, zero point, zero-point dtype) of the QuantizeLinear reading it."""
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for q in model.graph.node:
        if q.op_type == "QuantizeLinear" and q.input[0] not in inits:
            zero = inits[q.input[2]]
            scale = onnx.numpy_helper.to_array(inits[q.input[1]])
            out[q.input[0]] = (float(scale), int(onnx.numpy_helper.to_array(zero)), zero.data_type)
    return out


def test_folding_the_weights_keeps_every_output_bit(qdq: QdqModel, unseen: np.ndarray) -> None:
    model = _tensorrt_int8(qdq)
    ref = _run_proto(model, unseen[:1])
    assert unsigned.fold_weight_quantizers(model) == len(qdq.quantized_nodes["Conv"])
    inits = {i.name: i for i in model.graph.initializer}
    assert not [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits]
    weights = [inits[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weights and {w.data_type for w in weights} == {onnx.TensorProto.INT8}
    assert np.array_equal(_run_proto(model, unseen[:1]), ref)  # ONNX Runtime's own QuantizeLinear rounded alike


def test_uint8_on_the_int8_grid_computes_the_same(qdq: QdqModel, unseen: np.ndarray) -> None:
    model = _tensorrt_int8(qdq)
    ref = _run_proto(model, unseen[:1])
    before = _scales(model)
    assert unsigned.to_uint8(model, {t: -128 * s for t, (s, _, _) in before.items()}) == len(before) > 50
    after = _scales(model)
    assert {(s, z, t) for s, z, t in after.values()} == {
        (s, 128, onnx.TensorProto.UINT8) for s, _, _ in before.values()
    }
    assert np.array_equal(_run_proto(model, unseen[:1]), ref)


def test_openvino_layout_keeps_the_clip_and_refines_the_grid(
    openvino_qdq: QdqModel, qdq: QdqModel, fp32: OnnxModel, unseen: np.ndarray
) -> None:
    trt = _tensorrt_int8(qdq)
    model = onnx.load(str(openvino_qdq.path))
    assert openvino_qdq.backend == "openvino" and openvino_qdq.precision is Precision.INT8
    assert openvino_qdq.quantized_nodes == qdq.quantized_nodes  # same placement as ModelOpt's
    old, new = _scales(trt), _scales(model)
    assert new.keys() == old.keys() and {t for _, _, t in new.values()} == {onnx.TensorProto.UINT8}
    for tensor, (scale, zero, _) in new.items():
        clip = 127 * old[tensor][0]
        assert abs((255 - zero) * scale - clip) <= scale, tensor  # ModelOpt's calibrated clip, to one step
        if tensor.endswith("act/Mul_output_0"):  # a SiLU output: >= -0.2785, so about half the step
            assert 0 < zero * scale <= 0.2785 + scale and scale < 0.6 * old[tensor][0], tensor
    assert openvino_qdq.path.stat().st_size < 0.35 * qdq.path.stat().st_size  # int8 weights, not float
    ref, sym, asym = _run(fp32.path, unseen), _run(qdq.path, unseen), _run(openvino_qdq.path, unseen)
    for part in (slice(0, 4), slice(4, None)):  # boxes, class scores: closer to FP32 than ModelOpt's int8
        assert np.mean((asym[:, part] - ref[:, part]) ** 2) < 0.9 * np.mean((sym[:, part] - ref[:, part]) ** 2)


def test_minima_need_the_float_model_the_tensors_came_from(fp32: OnnxModel, calib: CalibrationSet) -> None:
    with pytest.raises(QuantizationError, match="not in the float model"):
        unsigned.observed_minima(onnx.load(str(fp32.path)), ["no/such/tensor"], calib)


def test_make_quantizer_rewrites_modelopt_int8_for_openvino() -> None:
    from yoloquant.config import Backend
    from yoloquant.quantize import make_quantizer

    def config(precision: Precision, backend: Backend) -> ModelOptConfig:
        quantizer = make_quantizer(precision, backend, quantizer="modelopt")
        assert isinstance(quantizer, ModelOptQuantizer)
        return quantizer.config

    assert config(Precision.INT8, Backend.OPENVINO) == ModelOptConfig.openvino()
    assert config(Precision.INT8, Backend.ORT_CPU) == ModelOptConfig.int8()
    assert config(Precision.FP8, Backend.OPENVINO).backend is Backend.TENSORRT
