"""YOLO26n-seg through the quantizers: what stays float (the prototype branch), and running it as a detector.

Uses ``../shared/data`` (YOLO26n-seg, coco-val-seg); the export is shared by the module.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from yoloquant.artifacts import OnnxModel
from yoloquant.backends.ort.engine import OrtEngineBuilder
from yoloquant.config import EvalConfig, ExportConfig
from yoloquant.data.calibration import ImageCalibrator
from yoloquant.data.datasets import load_dataset
from yoloquant.errors import ExportError
from yoloquant.eval.coco import evaluate
from yoloquant.export import OnnxFileExporter, UltralyticsExporter
from yoloquant.quantize import graph
from yoloquant.quantize.float_scope import FloatScope

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
SEG_PT = SHARED / "weights" / "yolo26n-seg_coco_from_int8ir" / "yolo26n-seg.pt"
SEG_DATA = SHARED / "coco-val-seg"

pytestmark = pytest.mark.skipif(not SEG_PT.exists() or not SEG_DATA.exists(), reason="needs ../shared/data (seg)")
onnx = pytest.importorskip("onnx")
pytest.importorskip("ultralytics")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def seg_onnx(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    # 320 keeps the module cheap; the graph's structure does not depend on the size
    return UltralyticsExporter(ExportConfig(imgsz=320)).export(SEG_PT, tmp_path_factory.mktemp("seg"))


def _ancestors(model: object, output: str) -> set[str]:
    producers = {o: n for n in model.graph.node for o in n.output}  # type: ignore[attr-defined]
    seen: set[str] = set()
    stack = [producers[output]]
    while stack:
        node = stack.pop()
        if node.name not in seen:
            seen.add(node.name)
            stack += [producers[i] for i in node.input if i in producers]
    return seen


def test_the_prototype_branch_is_ultralytics_proto_module_and_nothing_the_boxes_need(seg_onnx: OnnxModel) -> None:
    model = onnx.load(str(seg_onnx.path))
    branch = graph.prototype_branch(model)
    proto_module = [n.name for n in model.graph.node if "/proto/" in n.name]  # Ultralytics' own module name
    assert list(branch) == proto_module
    assert "ConvTranspose" in {n.op_type for n in model.graph.node if n.name in branch}  # the upsampling
    assert not set(branch) & _ancestors(model, model.graph.output[0].name)
    assert FloatScope(proto_branch=True).node_names(model) == tuple(
        n.name for n in model.graph.node if n.name in set(branch) | set(graph.find_head(model).decode)
    )


def test_the_prototype_fusion_is_proto26s_refine_and_fuse_layers(seg_onnx: OnnxModel) -> None:
    model = onnx.load(str(seg_onnx.path))
    fusion = graph.prototype_fusion(model)
    # Ultralytics' own names for Proto26's multi-scale fusion: feat_refine.{0,1}, their resize and add, feat_fuse
    named = [
        n.name for n in model.graph.node if re.match(r"/model\.\d+/proto/(feat_refine|feat_fuse|Resize|Add)", n.name)
    ]
    assert list(fusion) == named and len(fusion) == 13
    assert set(fusion) < set(graph.prototype_branch(model))
    ops = {n.op_type for n in model.graph.node if n.name in fusion}
    assert "ConvTranspose" not in ops and {"Conv", "Resize", "Add"} <= ops  # the upsampling stays quantized


def test_fp16_keeps_only_the_prototype_fusion_float_with_head_and_fusion(seg_onnx: OnnxModel, tmp_path: Path) -> None:
    from yoloquant.quantize.fp16 import Fp16Config, Fp16Converter

    fp16 = Fp16Converter(Fp16Config(keep_float="head+fusion")).convert(seg_onnx, tmp_path)
    source = onnx.load(str(seg_onnx.path))
    fusion, branch = set(graph.prototype_fusion(source)), set(graph.prototype_branch(source))
    half_convs, float_convs = set(fp16.quantized_nodes.get("Conv", [])), set(fp16.float_nodes.get("Conv", []))
    assert {n for n in fusion if n.endswith("Conv")} <= float_convs
    rest = {n for n in branch - fusion if n.endswith("Conv")} - set(graph.find_head(source).output_convs)
    assert rest and rest <= half_convs  # the 160x160 prototype convs run in FP16


def test_head_convs_cover_the_mask_coefficient_convs(seg_onnx: OnnxModel) -> None:
    head = graph.find_head(onnx.load(str(seg_onnx.path)))
    coefficient_convs = [c for c in head.output_convs if "cv4" in c]  # Ultralytics' Segment.cv4: mask coefficients
    assert len(coefficient_convs) == 3  # one per scale


def test_ort_int8_keeps_the_prototype_branch_float_when_asked(seg_onnx: OnnxModel, tmp_path: Path) -> None:
    from yoloquant.quantize.ort_static import OrtQuantConfig, OrtStaticQuantizer

    calib = ImageCalibrator(source=SEG_DATA / "images", num_images=4).calibrate(seg_onnx.info)
    scope = FloatScope(head_convs=True, proto_branch=True)
    qdq = OrtStaticQuantizer(OrtQuantConfig(keep_float=scope, calibration_method="minmax")).quantize(
        seg_onnx, calib, tmp_path
    )
    quantized, floats = graph.classify_qdq_nodes(onnx.load(str(qdq.path)))
    proto_convs = [n for n in graph.prototype_branch(onnx.load(str(seg_onnx.path))) if n.endswith("Conv")]
    assert set(proto_convs) <= set(floats.get("Conv", []))
    assert not set(proto_convs) & set(quantized.get("Conv", []))
    assert len(quantized.get("Conv", [])) > 50  # the backbone and neck are quantized


def test_a_seg_model_runs_as_a_detector_with_the_same_boxes(seg_onnx: OnnxModel, tmp_path: Path) -> None:
    as_detect = OnnxFileExporter(task="detect").export(seg_onnx.path, tmp_path)
    assert (as_detect.info.task, as_detect.info.source_task) == ("detect", "segment")
    data = load_dataset(SEG_DATA / "data.yaml")
    config = EvalConfig(num_images=6, resamples=0)
    with OrtEngineBuilder().build(seg_onnx) as seg, OrtEngineBuilder().build(as_detect) as det:
        seg_result = evaluate(seg, data, config, progress=False)
        det_result = evaluate(det, data, config, progress=False)
    assert set(det_result.metrics) == {"map50_95", "map50"}
    assert det_result.map50_95 == seg_result.map50_95 > 0.1


def test_a_seg_model_cannot_run_as_pose(seg_onnx: OnnxModel, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"runs as task 'segment' or 'detect' \(its boxes only\), not 'pose'"):
        OnnxFileExporter(task="pose").export(seg_onnx.path, tmp_path)


def test_tensorrt_builds_the_seg_model_against_the_test_double(seg_onnx: OnnxModel, tmp_path: Path) -> None:
    """FakeTensorRT (a test double that "executes" with ONNX Runtime): the plumbing of a two-output seg engine.

    Real TensorRT has never run here; this checks the build, the sidecar's model info and the buffers.
    """
    import numpy as np

    from doubles import fake_gpu
    from yoloquant.backends.trt import TrtEngineBuilder
    from yoloquant.data.images import read_image
    from yoloquant.data.letterbox import preprocess
    from yoloquant.postprocess.decode import decode

    files = sorted((SEG_DATA / "images").rglob("*.jpg"))[:2]
    images = [preprocess(read_image(f), 320)[0][None].astype(np.float32) / 255.0 for f in files]  # static batch 1
    with fake_gpu(), TrtEngineBuilder(out_dir=tmp_path).build(seg_onnx) as engine:
        assert engine.file.path.name == "yolo26n-seg-fp32.engine"
        assert engine.info == seg_onnx.info and engine.info.task == "segment"
        got = [decode(engine.infer(x), engine.info, conf=0.25)[0] for x in images]
    with OrtEngineBuilder().build(seg_onnx) as ref:
        want = [decode(ref.infer(x), seg_onnx.info, conf=0.25)[0] for x in images]
    for g, w in zip(got, want, strict=True):
        assert len(w) > 0 and g.masks is not None and w.masks is not None
        assert g.classes.tolist() == w.classes.tolist() and np.array_equal(g.masks, w.masks)


@pytest.mark.slow  # ~30 s: Brevitas quantizes and exports the PyTorch model
def test_brevitas_exports_both_seg_outputs_and_keeps_the_prototype_branch_float(
    seg_onnx: OnnxModel, tmp_path: Path
) -> None:
    pytest.importorskip("brevitas")
    from yoloquant.quantize.brevitas import BrevitasConfig, BrevitasQuantizer

    seg = OnnxModel(path=seg_onnx.path, info=seg_onnx.info, checkpoint=SEG_PT)
    calib = ImageCalibrator(source=SEG_DATA / "images", num_images=2).calibrate(seg.info)
    config = BrevitasConfig.w8a8(keep_float=FloatScope(head_convs=True, proto_branch=True))
    qcdq = BrevitasQuantizer(config).quantize(seg, calib, tmp_path)
    model = onnx.load(str(qcdq.path))
    assert [o.name for o in model.graph.output] == ["output0", "output1"]  # detections + prototypes
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    quantized = {name for name, n in convs.items() if producers.get(n.input[1]) == "DequantizeLinear"}
    proto = {name for name in convs if "/proto/" in name}
    assert proto and not proto & quantized
    assert len(quantized) > 50  # the backbone and neck are quantized
    with OrtEngineBuilder().build(qcdq) as engine:
        assert engine.info.task == "segment"


def test_openvino_runs_the_seg_export_with_the_masks_onnxruntime_computes(seg_onnx: OnnxModel) -> None:
    """The export's three head Slices are one Split: OpenVINO's conversion fails on the Slices (optimize.py)."""
    pytest.importorskip("openvino")
    import numpy as np

    from yoloquant.backends.openvino import OpenVinoEngineBuilder
    from yoloquant.data.images import read_image
    from yoloquant.data.letterbox import preprocess
    from yoloquant.postprocess.decode import decode

    model = onnx.load(str(seg_onnx.path))
    assert "Split" in {n.op_type for n in model.graph.node if n.name.startswith("/model.23/")}
    x = preprocess(read_image(sorted((SEG_DATA / "images").rglob("*.jpg"))[0]), 320)[0][None]
    x = x.astype(np.float32) / 255.0
    with OpenVinoEngineBuilder().build(seg_onnx) as ov_engine, OrtEngineBuilder().build(seg_onnx) as ref:
        got, want = (decode(e.infer(x), seg_onnx.info, conf=0.25)[0] for e in (ov_engine, ref))
    assert len(want) > 0 and got.classes.tolist() == want.classes.tolist()
    assert float(np.abs(got.boxes - want.boxes).max()) < 0.5
    assert got.masks is not None and want.masks is not None
    assert float((got.masks != want.masks).mean()) < 0.01
