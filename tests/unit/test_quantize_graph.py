"""Graph helpers of the quantizers: YOLO head / decode path found by structure, not by name."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yoloquant.quantize.float_scope import FloatScope
from yoloquant.quantize.graph import (
    classify_qdq_nodes,
    find_head,
    first_convs,
    group_by_op,
    match_nodes,
    prototype_branch,
    prototype_fusion,
)

onnx = pytest.importorskip("onnx")
helper, numpy_helper = onnx.helper, onnx.numpy_helper

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def _init(name: str, array: np.ndarray) -> Any:
    return numpy_helper.from_array(array, name)


def _tiny_dfl_detector(num_classes: int = 1) -> Any:
    """A two-branch DFL head under deliberately unhelpful node names (n0, n1, ...)."""
    f32 = np.float32
    inits = [
        _init("w_stem", np.ones((8, 3, 3, 3), f32)),
        _init("w_box", np.ones((64, 8, 1, 1), f32)),
        _init("b_box", np.zeros(64, f32)),
        _init("w_cls", np.ones((num_classes, 8, 1, 1), f32)),  # 1 output channel with a bias: not a DFL
        _init("b_cls", np.zeros(num_classes, f32)),
        _init("w_dfl", np.arange(16, dtype=f32).reshape(1, 16, 1, 1)),
        _init("s_box", np.array([1, 4, 16, -1], np.int64)),
        _init("s_box2", np.array([1, 4, -1], np.int64)),
        _init("s_cls", np.array([1, num_classes, -1], np.int64)),
        _init("stride", np.array(8.0, f32)),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "w_stem", ""], ["c0"], name="n0", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Sigmoid", ["c0"], ["s0"], name="n1"),
        helper.make_node("Mul", ["c0", "s0"], ["feat"], name="n2"),
        helper.make_node("Conv", ["feat", "w_box", "b_box"], ["box"], name="n3"),
        helper.make_node("Conv", ["feat", "w_cls", "b_cls"], ["cls"], name="n4"),
        helper.make_node("Reshape", ["box", "s_box"], ["box_r"], name="n5"),
        helper.make_node("Transpose", ["box_r"], ["box_t"], name="n6", perm=[0, 2, 1, 3]),
        helper.make_node("Softmax", ["box_t"], ["box_sm"], name="n7", axis=1),
        helper.make_node("Conv", ["box_sm", "w_dfl"], ["dist"], name="n8"),
        helper.make_node("Reshape", ["dist", "s_box2"], ["dist_r"], name="n9"),
        helper.make_node("Mul", ["dist_r", "stride"], ["xywh"], name="n10"),
        helper.make_node("Reshape", ["cls", "s_cls"], ["cls_r"], name="n11"),
        helper.make_node("Sigmoid", ["cls_r"], ["scores"], name="n12"),
        helper.make_node("Concat", ["xywh", "scores"], ["output0"], name="n13", axis=1),
    ]
    g = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("output0", onnx.TensorProto.FLOAT, [1, 4 + num_classes, 256])],
        inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_head_found_by_structure_with_dfl_walked_through() -> None:
    head = find_head(_tiny_dfl_detector())
    assert head.output_convs == ("n3", "n4")  # box and class convs, even with a 1-class head
    assert head.decode == ("n5", "n6", "n7", "n8", "n9", "n10", "n11", "n12", "n13")
    assert head.decode_ops[3] == "Conv"  # the DFL projection is decode, not a feature conv
    assert set(head.all) == {f"n{i}" for i in range(3, 14)}


def test_head_runs_the_same_on_onnxruntime() -> None:
    """The synthetic model is a valid detector graph (guards the fixture itself)."""
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(_tiny_dfl_detector().SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"images": np.random.default_rng(0).random((1, 3, 32, 32), np.float32)})
    assert out.shape == (1, 5, 256)


def test_first_conv_match_and_group() -> None:
    model = _tiny_dfl_detector()
    assert first_convs(model) == ("n0",)
    assert match_nodes(model, [r"^n1\d$"]) == ("n10", "n11", "n12", "n13")
    assert match_nodes(model, []) == ()
    assert group_by_op(model, ["n1", "n2", "n3", "n12"]) == {"Sigmoid": ["n1", "n12"], "Mul": ["n2"], "Conv": ["n3"]}


def _tiny_proto(*, fused: bool) -> Any:
    """A seg-like graph, nodes named p0, p1, ...: a detection output and a prototype branch (Proto26 if ``fused``).

    Proto26: a 1x1 refine conv on a half-resolution feature map, resized and added to the full-resolution one, a
    fuse conv + SiLU, then the upsampling and the prototype conv. Without ``fused`` (YOLOv8's Proto): conv + SiLU,
    upsampling, prototype conv.
    """
    f32 = np.float32
    inits = [
        _init(n, np.full(s, 0.1, f32))
        for n, s in {
            "w_a": (4, 3, 1, 1),
            "w_b": (4, 4, 1, 1),
            "w_det": (6, 4, 1, 1),
            "w_ref": (4, 4, 1, 1),
            "w_fuse": (4, 4, 3, 3),
            "w_up": (4, 4, 2, 2),
            "w_p": (2, 4, 1, 1),
        }.items()
    ]
    inits.append(_init("up2", np.array([1, 1, 2, 2], f32)))
    nodes = [
        helper.make_node("Conv", ["images", "w_a"], ["f8"], name="p0"),  # full resolution (8x8)
        helper.make_node("Conv", ["f8", "w_b"], ["f4"], name="p1", strides=[2, 2]),  # half resolution (4x4)
        helper.make_node("Conv", ["f4", "w_det"], ["output0"], name="p2"),
    ]
    if fused:
        nodes += [
            helper.make_node("Conv", ["f4", "w_ref"], ["r"], name="p3"),
            helper.make_node("Resize", ["r", "", "up2"], ["r8"], name="p4"),
            helper.make_node("Add", ["f8", "r8"], ["m"], name="p5"),
            helper.make_node("Conv", ["m", "w_fuse"], ["fu"], name="p6", pads=[1, 1, 1, 1]),
        ]
    else:
        nodes.append(helper.make_node("Conv", ["f8", "w_fuse"], ["fu"], name="p6", pads=[1, 1, 1, 1]))
    nodes += [
        helper.make_node("Sigmoid", ["fu"], ["fs"], name="p7"),
        helper.make_node("Mul", ["fu", "fs"], ["fa"], name="p8"),
        helper.make_node("ConvTranspose", ["fa", "w_up"], ["u"], name="p9", strides=[2, 2]),
        helper.make_node("Conv", ["u", "w_p"], ["output1"], name="p10"),
    ]
    g = helper.make_graph(
        nodes,
        "proto",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [
            helper.make_tensor_value_info("output0", onnx.TensorProto.FLOAT, [1, 6, 4, 4]),
            helper.make_tensor_value_info("output1", onnx.TensorProto.FLOAT, [1, 2, 16, 16]),
        ],
        inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_prototype_fusion_is_the_proto26_merge_and_fuse_block_not_the_upsampled_convs() -> None:
    model = _tiny_proto(fused=True)
    assert prototype_branch(model) == ("p3", "p4", "p5", "p6", "p7", "p8", "p9", "p10")
    assert prototype_fusion(model) == ("p3", "p4", "p5", "p6", "p7", "p8")  # not the upsampling p9 nor p10
    scope = FloatScope(proto_fusion=True)
    assert set(scope.node_names(model)) >= {"p3", "p6", "p8"} and not {"p9", "p10"} & set(scope.node_names(model))
    assert FloatScope(proto_fusion=True, proto_branch=True).node_names(model) == FloatScope(
        proto_branch=True
    ).node_names(model)


def test_prototype_fusion_is_empty_without_a_merge() -> None:
    model = _tiny_proto(fused=False)  # YOLOv8's Proto: nothing is fused
    assert prototype_branch(model) == ("p6", "p7", "p8", "p9", "p10")
    assert prototype_fusion(model) == ()
    assert prototype_fusion(_tiny_dfl_detector()) == ()  # one output: no branch at all


def test_classify_qdq_nodes_counts_dequantized_inputs() -> None:
    f32 = np.float32
    inits = [
        _init("x_scale", np.array(0.01, f32)),
        _init("x_zp", np.array(0, np.uint8)),
        _init("w_q", np.ones((4, 3, 1, 1), np.int8)),
        _init("w_scale", np.full(4, 0.1, f32)),
        _init("w_zp", np.zeros(4, np.int8)),
        _init("w_float", np.ones((4, 4, 1, 1), f32)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["images", "x_scale", "x_zp"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xdq"], name="dq"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="wdq", axis=0),
        helper.make_node("Conv", ["xdq", "w"], ["c"], name="int8_conv"),
        helper.make_node("Conv", ["c", "w_float"], ["d"], name="float_conv"),
        helper.make_node("Sigmoid", ["d"], ["out"], name="float_sigmoid"),
    ]
    g = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    quantized, floats = classify_qdq_nodes(helper.make_model(g))
    assert quantized == {"Conv": ["int8_conv"]}
    assert floats == {"Conv": ["float_conv"], "Sigmoid": ["float_sigmoid"]}


def test_classify_qdq_nodes_weight_only_and_qcdq_clips() -> None:
    """Brevitas layouts: W8A16 (weights through DQ, float activations) and QCDQ (Q -> Clip -> DQ)."""
    f32 = np.float32
    inits = [
        _init("x_scale", np.array(0.01, f32)),
        _init("x_zp", np.array(0, np.int8)),
        _init("lo", np.array(-127, np.int8)),
        _init("hi", np.array(127, np.int8)),
        _init("w_q", np.ones((4, 3, 1, 1), np.int8)),
        _init("w_scale", np.full(4, 0.1, f32)),
        _init("w_zp", np.zeros(4, np.int8)),
        _init("w_float", np.ones((4, 4, 1, 1), f32)),
        _init("six", np.array(6.0, f32)),
        _init("zero", np.array(0.0, f32)),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="wdq", axis=0),
        helper.make_node("Conv", ["images", "w"], ["c"], name="w8_conv"),  # float input, int8 weight
        helper.make_node("Conv", ["c", "w_float"], ["d"], name="float_conv"),
        helper.make_node("Clip", ["d", "zero", "six"], ["e"], name="relu6"),  # a float Clip, not part of a QCDQ
        helper.make_node("QuantizeLinear", ["e", "x_scale", "x_zp"], ["eq"], name="q"),
        helper.make_node("Clip", ["eq", "lo", "hi"], ["ec"], name="qcdq_clip"),
        helper.make_node("DequantizeLinear", ["ec", "x_scale", "x_zp"], ["out"], name="dq"),
    ]
    g = helper.make_graph(
        nodes,
        "qcdq",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    model = helper.make_model(g)
    assert classify_qdq_nodes(model, weight_only=True) == (
        {"Conv": ["w8_conv"]},
        {"Conv": ["float_conv"], "Clip": ["relu6"]},
    )
    # with int8 activations expected, a conv whose input is float is not an integer kernel
    assert classify_qdq_nodes(model) == ({}, {"Conv": ["w8_conv", "float_conv"], "Clip": ["relu6"]})


# --- real Ultralytics graphs: v8 (DFL), 11 (DFL, random weights from the yaml), 26 (end-to-end) -------


def _export(model: Any, out: Path) -> Any:
    with contextlib.chdir(out):  # a yaml-built model exports into the working directory
        path = model.export(format="onnx", imgsz=640, opset=17, simplify=True)
    return onnx.load(str(Path(out) / path))


@pytest.fixture(scope="module")
def ultralytics() -> Any:
    return pytest.importorskip("ultralytics")


def _check_dfl_head(model: Any, head_layer: int) -> None:
    head = find_head(model)
    prefix = f"/model.{head_layer}/"
    expected = tuple(f"{prefix}cv{b}.{s}/cv{b}.{s}.2/Conv" for s in range(3) for b in (2, 3))
    assert sorted(head.output_convs) == sorted(expected)
    # the DFL projection: a Conv in Ultralytics' export, a MatMul after yoloquant's fast_dfl rewrite
    assert any(n.startswith(f"{prefix}dfl/conv/Conv") for n in head.decode) and f"{prefix}dfl/Softmax" in head.decode
    assert all(n.startswith(prefix) for n in head.all)
    assert head.decode[-1] == next(n.name for n in model.graph.node if "output0" in n.output)
    assert first_convs(model) == ("/model.0/conv/Conv",)


def test_yolov8n_head(yolov8n_onnx: Path) -> None:
    _check_dfl_head(onnx.load(str(yolov8n_onnx)), head_layer=22)


def test_yolo11n_head_from_yaml(ultralytics: Any, tmp_path: Path) -> None:
    _check_dfl_head(_export(ultralytics.YOLO("yolo11n.yaml"), tmp_path), head_layer=23)


def test_yolo26n_end_to_end_head(ultralytics: Any, tmp_path: Path) -> None:
    shutil.copy(ASSETS / "weights" / "yolo26n.pt", tmp_path / "yolo26n.pt")
    model = _export(ultralytics.YOLO(str(tmp_path / "yolo26n.pt")), tmp_path)
    head = find_head(model)
    expected = tuple(f"/model.23/one2one_cv{b}.{s}/one2one_cv{b}.{s}.2/Conv" for s in range(3) for b in (2, 3))
    assert sorted(head.output_convs) == sorted(expected)
    assert {"TopK", "GatherElements", "Sigmoid", "Concat"} <= set(head.decode_ops)
    assert "Softmax" not in head.decode_ops  # reg_max=1: no DFL
    assert not any("one2many" in n or "/model.22/" in n for n in head.all)
