"""OrtStaticQuantizer on the real bundled YOLOv8n / YOLO26n and real COCO images (CPU)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yoloquant._cpu import saturates_u8s8
from yoloquant.artifacts import CalibrationSet, OnnxModel, QdqModel
from yoloquant.config import CalibMethod, Precision
from yoloquant.errors import ConfigError, QuantizationError
from yoloquant.quantize.float_scope import FloatScope
from yoloquant.quantize.ort_static import OrtQuantConfig, OrtStaticQuantizer

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ASSETS = Path(__file__).resolve().parents[2] / "assets"
CALIB_IMAGES = 8


def _letterbox(files: list[Path]) -> np.ndarray:
    """Ultralytics' own val preprocessing (its LetterBox), as an independent reference."""
    cv2 = pytest.importorskip("cv2")
    from ultralytics.data.augment import LetterBox

    box = LetterBox((640, 640), auto=False, scaleup=False, center=True)
    out = []
    for f in files:
        im = cv2.imread(str(f))
        r = 640 / max(im.shape[:2])
        if r != 1:
            w, h = (min(math.ceil(d * r), 640) for d in (im.shape[1], im.shape[0]))
            im = cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
        out.append(box(image=im)[..., ::-1].transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out))


@pytest.fixture(scope="module")
def images() -> list[Path]:
    return sorted((ASSETS / "coco64" / "images").glob("*.jpg"))


@pytest.fixture(scope="module")
def calib(images: list[Path]) -> CalibrationSet:
    files = images[:CALIB_IMAGES]
    return CalibrationSet(images=_letterbox(files), files=tuple(files), digest="coco64[:8]")


@pytest.fixture(scope="module")
def test_batch(images: list[Path]) -> np.ndarray:
    """Images the quantizer never saw during calibration."""
    return _letterbox(images[40:44]).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def v8_qdq(yolov8n_onnx: Path, calib: CalibrationSet, tmp_path_factory: pytest.TempPathFactory) -> QdqModel:
    out = tmp_path_factory.mktemp("v8-int8")
    return OrtStaticQuantizer(OrtQuantConfig(reduce_range=False)).quantize(OnnxModel.load(yolov8n_onnx), calib, out)


@pytest.fixture(scope="module")
def v26_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ultralytics = pytest.importorskip("ultralytics")
    out = tmp_path_factory.mktemp("v26-export")
    pt = out / "yolo26n.pt"
    shutil.copy(ASSETS / "weights" / "yolo26n.pt", pt)
    return Path(ultralytics.YOLO(str(pt)).export(format="onnx", imgsz=640, opset=17, simplify=True))


def _run(path: Path, batch: np.ndarray, *, fused: bool = True) -> np.ndarray:
    """Outputs per image; ``fused=False`` runs the Q/DQ arithmetic itself (float ops on dequantized values, the same on
    every CPU) instead of ORT's integer kernels (which saturate 8-bit weights on x86 CPUs without VNNI)."""
    opts = ort.SessionOptions()
    if not fused:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: batch[i : i + 1]})[0] for i in range(len(batch))])


def _producers(model: Any) -> dict[str, str]:
    return {out: n.op_type for n in model.graph.node for out in n.output}


# --- config ---------------------------------------------------------------------------------


def test_config_round_trips_through_json() -> None:
    cfg = OrtQuantConfig(calibration_method="entropy", keep_float=FloatScope(first_conv=True, nodes=(r"model\.0/",)))
    data = json.loads(json.dumps(cfg.to_dict()))
    assert OrtQuantConfig.from_dict(data) == cfg
    assert cfg.calibration_method is CalibMethod.ENTROPY
    assert OrtQuantConfig.from_dict(json.loads(json.dumps(OrtQuantConfig.openvino().to_dict()))).backend == "openvino"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"calibration_method": "kl"}, "calibration_method"),
        ({"percentile": 50.0}, "percentile"),
        ({"qdq_op_types": ()}, "qdq_op_types"),
        ({"qdq_op_types": ("Conv", "NonMaxSuppression")}, "NonMaxSuppression"),
        ({"op_types": ("Conv",)}, "op_types= is now qdq_op_types="),
        ({"keep_float": {"nodes": ("model.(",)}}, "regex"),
        ({"calib_chunk": 0}, "calib_chunk"),
        ({"backend": "tensorrt"}, "onnxruntime or openvino"),
    ],
)
def test_config_rejects_bad_options(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        OrtQuantConfig(**kwargs)  # type: ignore[arg-type]


# --- YOLOv8n --------------------------------------------------------------------------------


def test_artifact_describes_the_int8_model(v8_qdq: QdqModel, yolov8n_onnx: Path) -> None:
    assert v8_qdq.path.is_file() and v8_qdq.path.name == f"{yolov8n_onnx.stem.removesuffix('-fp32')}-int8.onnx"
    assert v8_qdq.precision is Precision.INT8
    assert v8_qdq.quantizer == "ort-static" and v8_qdq.backend == "ort-cpu"
    assert v8_qdq.seconds > 0
    assert v8_qdq.source.path == yolov8n_onnx
    json.dumps(v8_qdq.config)
    assert [p.name for p in v8_qdq.path.parent.iterdir()] == [v8_qdq.path.name]  # no temp files left


def test_metadata_is_carried_over(v8_qdq: QdqModel, yolov8n_onnx: Path) -> None:
    src = {p.key: p.value for p in onnx.load(str(yolov8n_onnx)).metadata_props}
    dst = {p.key: p.value for p in onnx.load(str(v8_qdq.path)).metadata_props}
    assert src.items() <= dst.items()
    assert OnnxModel.load(v8_qdq.path).info == v8_qdq.info


def _consumers(model: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n.op_type)
    return out


def _decode_nodes(model: Any) -> list[Any]:
    """Ultralytics' own names for the v8 decode path: everything in model.22 but the cv2/cv3 branches."""
    return [n for n in model.graph.node if n.name.startswith("/model.22/") and not n.name.startswith("/model.22/cv")]


def test_decode_path_stays_float(v8_qdq: QdqModel) -> None:
    model = onnx.load(str(v8_qdq.path))
    producers, consumers = _producers(model), _consumers(model)
    decode = _decode_nodes(model)
    assert len(decode) > 20  # reshapes, DFL softmax + conv, anchor arithmetic, class sigmoid, concats
    for node in decode:
        assert all("QuantizeLinear" not in consumers.get(o, []) for o in node.output), node.name
        if node.op_type != "Reshape" or node.input[0].startswith("/model.22/Concat"):
            assert all(producers.get(i) != "DequantizeLinear" for i in node.input), node.name
    dfl = next(n for n in decode if n.op_type == "MatMul")  # the exporter's fast DFL projection
    assert dfl.input[1] in {i.name for i in model.graph.initializer}  # float projection weights
    floats = {name for names in v8_qdq.float_nodes.values() for name in names}
    assert {n.name for n in decode if n.op_type != "Reshape"} <= floats


def test_every_conv_but_the_dfl_is_quantized(v8_qdq: QdqModel) -> None:
    model = onnx.load(str(v8_qdq.path))
    producers = _producers(model)
    decode = {n.name for n in _decode_nodes(model)}
    body = [n for n in model.graph.node if n.name not in decode]
    convs = [n for n in body if n.op_type == "Conv"]
    assert len(convs) == 63  # 64 convs in yolov8n, minus the DFL projection (a MatMul after export)
    for n in convs:
        assert producers[n.input[0]] == "DequantizeLinear" and producers[n.input[1]] == "DequantizeLinear", n.name
    for n in body:
        if n.op_type in ("Sigmoid", "Mul", "Add", "Concat", "MaxPool", "Resize"):
            assert producers[n.input[0]] == "DequantizeLinear", n.name
    assert len(v8_qdq.quantized_nodes["Conv"]) == 63 and "Conv" not in v8_qdq.float_nodes
    assert v8_qdq.float_nodes["MatMul"] == ["/model.22/dfl/conv/Conv/MatMul"]


def test_head_convs_and_excluded_nodes_can_stay_float(
    yolov8n_onnx: Path, calib: CalibrationSet, tmp_path: Path
) -> None:
    cfg = OrtQuantConfig(calibration_method="minmax", keep_float=FloatScope.head().with_nodes(r"^/model\.9/"))
    qdq = OrtStaticQuantizer(cfg).quantize(OnnxModel.load(yolov8n_onnx), calib, tmp_path)
    model = onnx.load(str(qdq.path))
    producers = _producers(model)
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    float_convs = [n for n, node in convs.items() if producers.get(node.input[1]) != "DequantizeLinear"]
    expected = {f"/model.22/cv{b}.{s}/cv{b}.{s}.2/Conv" for s in range(3) for b in (2, 3)}
    expected |= {"/model.9/cv1/conv/Conv", "/model.9/cv2/conv/Conv"}
    assert set(float_convs) == expected
    assert set(qdq.float_nodes["Conv"]) == expected
    assert "MaxPool" in qdq.float_nodes  # the SPPF's pools sit in model.9


def test_weights_int8_per_channel_activations_uint8(v8_qdq: QdqModel) -> None:
    model = onnx.load(str(v8_qdq.path))
    inits = {i.name: i for i in model.graph.initializer}
    weight_zps = [
        inits[n.input[2]]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and len(inits[n.input[0]].dims) == 4
    ]
    assert weight_zps and all(z.data_type == onnx.TensorProto.INT8 for z in weight_zps)
    assert all(len(z.dims) == 1 and z.dims[0] > 1 for z in weight_zps if z.dims)  # one scale per channel
    act_zps = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert act_zps and all(z.data_type == onnx.TensorProto.UINT8 for z in act_zps)


def test_ort_fuses_the_layout_into_integer_kernels(v8_qdq: QdqModel, tmp_path: Path) -> None:
    from yoloquant.backends.ort.engine import session_options

    opts = session_options(None)
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(v8_qdq.path), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]
    assert ops.count("QLinearConv") == 63
    assert ops.count("QLinearSigmoid") >= 50 and ops.count("QLinearMul") >= 50
    assert ops.count("DequantizeLinear") <= 8  # only where the float head starts


def test_int8_outputs_match_fp32_on_unseen_images(v8_qdq: QdqModel, yolov8n_onnx: Path, test_batch: np.ndarray) -> None:
    ref = _run(yolov8n_onnx, test_batch)  # [B, 84, 8400]: 4 box + 80 class scores per anchor
    out = _run(v8_qdq.path, test_batch, fused=False)
    assert _score_cosine(ref, out) > 0.97
    for r, q in zip(ref, out, strict=True):
        best = np.argsort(r[4:].max(0))[-5:]  # the five most confident anchors of FP32
        assert (r[4:, best].argmax(0) == q[4:, best].argmax(0)).mean() >= 0.8
        assert np.abs(r[:4, best] - q[:4, best]).max() < 16  # box centre / size, pixels


def _iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of xyxy ``boxes`` [N, 4] with one xyxy ``box``."""
    lo, hi = np.maximum(boxes[:, :2], box[:2]), np.minimum(boxes[:, 2:], box[2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) + np.prod(box[2:] - box[:2])
    return inter / (area - inter)


def _score_cosine(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = a[:, 4:].ravel(), b[:, 4:].ravel()
    return float(sa @ sb / (np.linalg.norm(sa) * np.linalg.norm(sb)))


def test_the_default_weights_do_not_saturate_this_cpus_kernels(
    yolov8n_onnx: Path, calib: CalibrationSet, test_batch: np.ndarray, tmp_path: Path
) -> None:
    """reduce_range=None picks 7-bit weights where ORT's u8 x s8 kernels saturate: fused = Q/DQ arithmetic."""
    qdq = OrtStaticQuantizer().quantize(OnnxModel.load(yolov8n_onnx), calib, tmp_path)
    assert qdq.config["reduce_range"] is saturates_u8s8()
    fused, exact = _run(qdq.path, test_batch), _run(qdq.path, test_batch, fused=False)
    assert _score_cosine(exact, fused) > 0.995


def test_onnxruntime_failures_become_quantization_errors(yolov8n_onnx: Path, tmp_path: Path) -> None:
    bad = CalibrationSet(images=np.zeros((2, 3, 320, 320), np.uint8), files=(), digest="wrong-size")
    with pytest.raises(QuantizationError, match="yolov8n") as info:
        OrtStaticQuantizer(OrtQuantConfig(preprocess=False)).quantize(OnnxModel.load(yolov8n_onnx), bad, tmp_path)
    assert info.value.__cause__ is not None
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_empty_calibration_set_is_rejected(yolov8n_onnx: Path, tmp_path: Path) -> None:
    empty = CalibrationSet(images=np.zeros((0, 3, 640, 640), np.uint8), files=(), digest="empty")
    with pytest.raises(QuantizationError, match="empty"):
        OrtStaticQuantizer().quantize(OnnxModel.load(yolov8n_onnx), empty, tmp_path)


# --- YOLO26n (end-to-end head, output [1, 300, 6]) ---------------------------------------------


def test_yolo26_end_to_end_head_quantizes_with_float_top_k(
    v26_onnx: Path, calib: CalibrationSet, test_batch: np.ndarray, tmp_path: Path
) -> None:
    qdq = OrtStaticQuantizer(OrtQuantConfig(reduce_range=False)).quantize(OnnxModel.load(v26_onnx), calib, tmp_path)
    floats = {op for op, names in qdq.float_nodes.items() if names}
    assert {"TopK", "GatherElements", "ReduceMax"} <= floats
    assert "TopK" not in qdq.quantized_nodes
    assert "Conv" not in qdq.float_nodes  # no DFL in YOLO26 (reg_max=1); output convs are INT8 by default
    assert len(qdq.quantized_nodes["Conv"]) == 102
    ref, out = _run(v26_onnx, test_batch[:2]), _run(qdq.path, test_batch[:2], fused=False)
    assert out.shape == ref.shape == (2, 300, 6)
    for r, q in zip(ref, out, strict=True):
        top = r[r[:, 4] > 0.5]
        assert len(top) > 0
        for det in top:  # every confident FP32 detection has an INT8 twin: same class, a box mAP50 matches
            same = q[(q[:, 5] == det[5]) & (q[:, 4] > 0.25)]
            assert len(same) and _iou(same[:, :4], det[:4]).max() >= 0.5, det
