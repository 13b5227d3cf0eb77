"""FloatScope, what stays float: the node sets, checked against Ultralytics' own layer names."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yoloquant.errors import ConfigError
from yoloquant.quantize.float_scope import PRESETS, FloatScope

onnx = pytest.importorskip("onnx")
helper, numpy_helper = onnx.helper, onnx.numpy_helper

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def _tiny_detector() -> Any:
    """Stem conv -> feature conv -> box / class convs -> DFL decode, under meaningless names."""
    f32 = np.float32
    inits = [
        numpy_helper.from_array(a, n)
        for n, a in {
            "w_stem": np.ones((8, 3, 3, 3), f32),
            "w_mid": np.ones((8, 8, 1, 1), f32),
            "w_box": np.ones((64, 8, 1, 1), f32),
            "w_cls": np.ones((2, 8, 1, 1), f32),
            "w_dfl": np.arange(16, dtype=f32).reshape(1, 16, 1, 1),
            "s_box": np.array([1, 4, 16, -1], np.int64),
            "s_box2": np.array([1, 4, -1], np.int64),
            "s_cls": np.array([1, 2, -1], np.int64),
        }.items()
    ]
    nodes = [
        helper.make_node("Conv", ["images", "w_stem"], ["c0"], name="a", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Conv", ["c0", "w_mid"], ["feat"], name="b"),
        helper.make_node("Conv", ["feat", "w_box"], ["box"], name="c"),
        helper.make_node("Conv", ["feat", "w_cls"], ["cls"], name="d"),
        helper.make_node("Reshape", ["box", "s_box"], ["box_r"], name="e"),
        helper.make_node("Transpose", ["box_r"], ["box_t"], name="f", perm=[0, 2, 1, 3]),
        helper.make_node("Softmax", ["box_t"], ["box_sm"], name="g", axis=1),
        helper.make_node("Conv", ["box_sm", "w_dfl"], ["dist"], name="h"),
        helper.make_node("Reshape", ["dist", "s_box2"], ["xywh"], name="i"),
        helper.make_node("Reshape", ["cls", "s_cls"], ["cls_r"], name="j"),
        helper.make_node("Sigmoid", ["cls_r"], ["scores"], name="k"),
        helper.make_node("Concat", ["xywh", "scores"], ["output0"], name="l", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("output0", onnx.TensorProto.FLOAT, [1, 6, 256])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def resolve_keep(model: Any, preset: str) -> tuple[str, ...]:
    return FloatScope.parse(preset).node_names(model)


def test_presets_on_a_hand_built_detector() -> None:
    model = _tiny_detector()
    assert resolve_keep(model, "nothing") == ()
    assert resolve_keep(model, "decode") == ("e", "f", "g", "h", "i", "j", "k", "l")  # after the output convs
    assert resolve_keep(model, "head") == ("c", "d", "e", "f", "g", "h", "i", "j", "k", "l")  # graph order
    assert resolve_keep(model, "head+first") == ("a", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l")
    assert "b" not in resolve_keep(model, "head+first")  # a body conv is always quantized


def test_nodes_and_op_types_add_to_a_preset() -> None:
    model = _tiny_detector()
    assert FloatScope.nothing().with_nodes("^b$").node_names(model) == ("b",)
    assert FloatScope(decode_path=False, op_types=("Softmax",)).node_names(model) == ("g",)
    assert FloatScope(decode_path=False, first_conv=True).node_names(model) == ("a",)


def test_unknown_and_ambiguous_presets_name_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"nothing, decode, head, head\+first"):
        FloatScope.parse("tail")
    with pytest.raises(ConfigError, match=r"keep_float='decode'.*keep_float='nothing'"):
        FloatScope.parse("none")  # it meant one thing in ONNX Runtime and another in ModelOpt
    with pytest.raises(ConfigError, match="not a valid regex"):
        FloatScope(nodes=("model.(",))
    with pytest.raises(ConfigError, match="tuple of strings"):
        FloatScope(nodes="^/model.0/")  # type: ignore[arg-type]  # a bare string, not a tuple


def test_presets_have_one_spelling_and_round_trip() -> None:
    assert list(PRESETS) == ["nothing", "decode", "head", "head+first", "head+fusion"]
    methods = [FloatScope.nothing(), FloatScope.decode(), FloatScope.head(), FloatScope.head_and_first(),
               FloatScope.head_and_fusion()]  # fmt: skip
    assert methods == list(PRESETS.values()) and [m.preset for m in methods] == list(PRESETS)
    custom = FloatScope.head().with_nodes("^/model.9/")
    assert custom.preset is None and custom.describe() == "decode_path+head_convs+proto_branch, nodes ['^/model.9/']"
    assert FloatScope.parse(custom.to_dict()) == custom


def test_proto_fusion_round_trips_and_brevitas_refuses_it() -> None:
    from yoloquant.quantize.brevitas.config import BrevitasConfig

    scope = FloatScope(head_convs=True, proto_fusion=True)
    assert scope.preset == "head+fusion" and scope.describe() == "head+fusion"
    assert FloatScope.parse(scope.to_dict()) == scope
    with pytest.raises(ConfigError, match="not proto_fusion"):
        BrevitasConfig(keep_float=scope)  # Brevitas keeps whole modules float, not a part of Proto26
    BrevitasConfig(keep_float=FloatScope(head_convs=True, proto_branch=True, proto_fusion=True))  # the whole branch


# --- real Ultralytics exports: the sets must be exactly Ultralytics' head layer -------------------


@pytest.fixture(scope="module")
def ultralytics() -> Any:
    return pytest.importorskip("ultralytics")


def _export(model: Any, out: Path) -> Any:
    with contextlib.chdir(out):  # a yaml-built model exports into the working directory
        path = model.export(format="onnx", imgsz=640, opset=17, simplify=True)
    return onnx.load(str(Path(out) / path))


def _check_dfl_presets(model: Any, layer: int) -> None:
    prefix = f"/model.{layer}/"
    head = set(resolve_keep(model, "head"))
    # Ultralytics' Detect layer minus its conv stacks (cv2.i.0-1, cv3.i.0-1): output convs + decode
    stacks = (f"{prefix}cv2.", f"{prefix}cv3.")
    detect = {n.name for n in model.graph.node if n.name.startswith(prefix)}
    assert head == {n for n in detect if not n.startswith(stacks) or n.endswith(".2/Conv")}
    expected_convs = {f"{prefix}cv{b}.{s}/cv{b}.{s}.2/Conv" for s in range(3) for b in (2, 3)}
    assert expected_convs | {f"{prefix}dfl/Softmax"} <= head
    # the DFL projection: a Conv in Ultralytics' export, a MatMul after yoloquant's fast_dfl rewrite
    assert any(n.startswith(f"{prefix}dfl/conv/Conv") for n in head)
    assert set(resolve_keep(model, "head+first")) == head | {"/model.0/conv/Conv"}


def test_yolov8n_presets(yolov8n_onnx: Path) -> None:
    _check_dfl_presets(onnx.load(str(yolov8n_onnx)), layer=22)


def test_yolo11n_presets_from_yaml(ultralytics: Any, tmp_path: Path) -> None:
    _check_dfl_presets(_export(ultralytics.YOLO("yolo11n.yaml"), tmp_path), layer=23)


def test_yolo26n_presets_keep_the_end_to_end_head(ultralytics: Any, tmp_path: Path) -> None:
    shutil.copy(ASSETS / "weights" / "yolo26n.pt", tmp_path / "yolo26n.pt")
    model = _export(ultralytics.YOLO(str(tmp_path / "yolo26n.pt")), tmp_path)
    head = resolve_keep(model, "head")
    ops = {n.name: n.op_type for n in model.graph.node}
    convs = {n for n in head if ops[n] == "Conv"}
    assert convs == {f"/model.23/one2one_cv{b}.{s}/one2one_cv{b}.{s}.2/Conv" for s in range(3) for b in (2, 3)}
    assert {"TopK", "GatherElements", "Sigmoid"} <= {ops[n] for n in head}
    assert not any("one2many" in n for n in head)
    assert resolve_keep(model, "head+first") == ("/model.0/conv/Conv", *head)
