"""Grouping of quantizable nodes on a small hand-built YOLO-like graph."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from yoloquant.decide.groups import find_groups
from yoloquant.decide.sensitivity import SensitivityConfig
from yoloquant.errors import ConfigError

onnx = pytest.importorskip("onnx")


def _graph() -> Any:
    h, t = onnx.helper, onnx.TensorProto
    w = [h.make_tensor(f"w{i}", t.FLOAT, [2, 2, 1, 1], np.ones(4, np.float32)) for i in range(3)]
    nodes = [
        h.make_node("Conv", ["x", "w0"], ["c0"], name="/model.0/conv/Conv"),
        h.make_node("Sigmoid", ["c0"], ["s0"], name="/model.0/act/Sigmoid"),
        h.make_node("Mul", ["c0", "s0"], ["m0"], name="/model.0/act/Mul"),
        h.make_node("Conv", ["m0", "w1"], ["c1"], name="/model.1/cv1/conv/Conv"),
        h.make_node("Sigmoid", ["c1"], ["s1"], name="/model.1/cv1/act/Sigmoid"),
        h.make_node("Mul", ["c1", "s1"], ["m1"], name="/model.1/cv1/act/Mul"),
        h.make_node("Add", ["m0", "m1"], ["a1"], name="/model.1/Add"),
        h.make_node("Conv", ["a1", "w2"], ["y"], name="/model.2/cv2.0/Conv"),
    ]
    vi = [h.make_tensor_value_info(n, t.FLOAT, [1, 2, 4, 4]) for n in ("x", "y")]
    return h.make_model(h.make_graph(nodes, "g", [vi[0]], [vi[1]], initializer=w))


def test_conv_groups_take_the_silu_and_leave_other_ops_per_block() -> None:
    model = _graph()
    names = [n.name for n in model.graph.node]
    groups = find_groups(model, names, "conv")
    assert [(g.name, g.ops) for g in groups] == [
        ("/model.0", ("Conv", "Sigmoid", "Mul")),
        ("/model.1/cv1", ("Conv", "Sigmoid", "Mul")),
        ("model.1 (other ops)", ("Add",)),
        ("/model.2/cv2.0", ("Conv",)),
    ]
    assert sorted(n for g in groups for n in g.nodes) == sorted(names)  # a partition


def test_block_groups_split_the_head_per_branch() -> None:
    model = _graph()
    groups = find_groups(model, [n.name for n in model.graph.node], "block")
    assert [g.name for g in groups] == ["model.0", "model.1", "model.2/cv2.0"]
    assert len(groups[1].nodes) == 4


def test_only_quantizable_nodes_are_grouped() -> None:
    model = _graph()
    groups = find_groups(model, ["/model.0/conv/Conv", "/model.0/act/Mul"], "conv")
    # the Sigmoid is not quantizable, so the SiLU is not taken with the conv
    assert [(g.name, g.nodes) for g in groups] == [
        ("/model.0", ("/model.0/conv/Conv",)),
        ("model.0 (other ops)", ("/model.0/act/Mul",)),
    ]


def test_sensitivity_config_validates() -> None:
    with pytest.raises(ConfigError):
        SensitivityConfig(proxy_images=0)
    with pytest.raises(ConfigError, match="cross_check"):
        SensitivityConfig(rank_by="float", cross_check=False)
    assert SensitivityConfig(granularity="block").to_dict()["granularity"] == "block"


def test_float_mode_is_validated() -> None:
    from yoloquant.decide.budget import BudgetConfig, BudgetedQuantizer

    with pytest.raises(ConfigError, match="float_mode"):
        SensitivityConfig(float_mode="remove")
    with pytest.raises(ConfigError, match="float_mode"):
        BudgetConfig(eval_source="x.yaml", float_mode="remove")
    with pytest.raises(ConfigError, match="eval_data"):
        BudgetedQuantizer(max_map_drop=0.3)
    with pytest.raises(ConfigError, match="points"):
        BudgetedQuantizer(max_map_drop=-1, eval_data="x.yaml")
    q = BudgetedQuantizer(max_map_drop=0.3, eval_data="x.yaml")
    assert q == BudgetedQuantizer(max_map_drop=0.3, eval_data="x.yaml") and hash(q) == hash(
        BudgetedQuantizer(max_map_drop=0.3, eval_data="x.yaml")
    )
    assert q != BudgetedQuantizer(max_map_drop=0.5, eval_data="x.yaml")
    assert q.config.float_mode == "dequantize"
