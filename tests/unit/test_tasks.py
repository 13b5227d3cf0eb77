"""The task seam: the registry, Detections' masks and keypoints, labels' polygons and keypoints, metric names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yoloquant import QuantPipeline
from yoloquant.bench.latency import LatencyResult
from yoloquant.data.labels import read_yolo_labels
from yoloquant.data.letterbox import LetterboxMeta, scale_boxes, scale_detections, scale_keypoints
from yoloquant.decide.sweep import Sweep
from yoloquant.detections import Detections
from yoloquant.errors import ConfigError, DataError, ExportError
from yoloquant.eval.bootstrap import Metric
from yoloquant.postprocess.decode import decode_boxes
from yoloquant.postprocess.masks import decode_segments
from yoloquant.postprocess.pose import decode_pose
from yoloquant.report.result import PipelineResult, TaskRecord, VariantResult
from yoloquant.tasks import Scoring, Task, TaskSpec, exported_task, task_for_ultralytics, task_spec

# -- the registry -------------------------------------------------------------------------------------


def test_detect_is_the_shipped_task() -> None:
    spec = task_spec(Task.DETECT)
    assert spec.metric_names == ("map50_95", "map50") and spec.primary_metric == "map50_95"
    assert [s.iou_type for s in spec.scoring] == ["bbox"]
    assert task_for_ultralytics("detect") is spec and spec.decode is decode_boxes


def test_segment_is_shipped_with_box_and_mask_metrics() -> None:
    spec = task_spec(Task.SEGMENT)
    assert spec.metric_names == ("map50_95", "map50", "mask_map50_95", "mask_map50")
    assert spec.primary_metric == "mask_map50_95"
    assert [s.iou_type for s in spec.scoring] == ["bbox", "segm"]
    assert task_for_ultralytics("segment") is spec and spec.decode is decode_segments


def test_pose_is_shipped_with_box_and_keypoint_metrics() -> None:
    spec = task_spec(Task.POSE)
    assert spec.metric_names == ("map50_95", "map50", "pose_map50_95", "pose_map50")
    assert spec.primary_metric == "pose_map50_95"
    assert [s.iou_type for s in spec.scoring] == ["bbox", "keypoints"]
    assert task_for_ultralytics("pose") is spec and spec.decode is decode_pose
    assert exported_task("pose", Path("m.pt")) is spec
    assert exported_task("pose", Path("m.pt"), override="detect").name == "detect"


def test_planned_tasks_are_refused_until_they_land(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("yoloquant.tasks._PLANNED", frozenset({"obb"}))
    with pytest.raises(ConfigError, match=r"task 'obb' is not supported yet; supported tasks: detect"):
        task_spec("obb")
    with pytest.raises(ExportError, match=r"m.pt is a 'obb' model: .*not supported yet.*detect \(detection\)"):
        exported_task("obb", Path("m.pt"))


def test_an_unknown_task_names_the_supported_ones() -> None:
    with pytest.raises(ConfigError, match="task 'obb' is unknown; supported tasks: detect"):
        task_for_ultralytics("obb")


def test_a_primary_metric_must_be_one_of_the_task_metrics() -> None:
    with pytest.raises(ConfigError, match="primary metric 'map50_95' is not one of"):
        TaskSpec(name="x", ultralytics_tasks=(), decode=decode_boxes, scoring=(Scoring("bbox", "x_"),),
                 primary_metric="map50_95")  # fmt: skip


# -- Detections carry masks and keypoints through filtering and scaling -------------------------------


def _dets(n: int = 3) -> Detections:
    boxes = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    masks = np.zeros((n, 8, 8), bool)
    for i in range(n):
        masks[i, i, i] = True  # mask i marks pixel (i, i): alignment is visible after indexing
    kpts = np.arange(n * 2 * 3, dtype=np.float32).reshape(n, 2, 3)
    return Detections(boxes, np.linspace(0.9, 0.1, n).astype(np.float32), np.arange(n), masks=masks, keypoints=kpts)


def test_select_indexes_every_per_detection_array_alike() -> None:
    d = _dets()
    picked = d.select(np.array([2, 0]))
    assert picked.classes.tolist() == [2, 0] and picked.boxes[0].tolist() == [8, 9, 10, 11]
    assert picked.masks is not None and picked.masks[0, 2, 2] and picked.masks[1, 0, 0]
    assert picked.keypoints is not None and picked.keypoints[:, 0, 0].tolist() == [12.0, 0.0]
    kept = d.select(d.scores > 0.4)
    assert len(kept) == 2 and kept.masks is not None and kept.masks.shape == (2, 8, 8)
    assert Detections.empty().select(slice(0, 5)).masks is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("keypoints", np.zeros((2, 17, 3), np.float32)), ("masks", np.zeros((4, 8, 8), bool))],
)
def test_extras_must_have_one_entry_per_detection(field: str, value: np.ndarray) -> None:
    d = _dets()
    with pytest.raises(ConfigError, match=f"Detections.{field} has shape"):
        Detections(d.boxes, d.scores, d.classes, **{field: value})


def test_keypoints_scale_like_boxes_and_keep_their_visibility() -> None:
    meta = LetterboxMeta(shape=(480, 640), gain=(0.5, 0.5), pad=(0, 40))
    kpts = np.array([[[100.0, 140.0, 0.7], [-5.0, 400.0, 0.0]]], np.float32)
    got = scale_keypoints(kpts, meta)
    # hand-computed: ((x - 0) / 0.5, (y - 40) / 0.5), clipped to 640 x 480
    assert got.tolist() == [[[200.0, 200.0, pytest.approx(0.7)], [0.0, 480.0, 0.0]]]
    d = _dets()
    d = Detections(d.boxes, d.scores, d.classes, keypoints=np.repeat(kpts, 3, axis=0))
    scaled = scale_detections(d, meta)
    assert np.array_equal(scaled.boxes, scale_boxes(d.boxes, meta)) and scaled.masks is None
    assert scaled.keypoints is not None and np.array_equal(scaled.keypoints[1], got[0])


def test_masks_scale_to_the_original_image() -> None:
    meta = LetterboxMeta(shape=(4, 8), gain=(1.0, 1.0), pad=(0, 2))  # an 8x8 input with 2 padding rows on top
    masks = np.zeros((1, 8, 8), bool)
    masks[0, 2:4, :4] = True  # the image's top-left 2x4 quarter
    d = Detections(np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.zeros(1, np.int64), masks=masks)
    got = scale_detections(d, meta).masks
    assert got is not None and got.shape == (1, 4, 8) and got.dtype == np.bool_
    assert got[0, :2, :4].all() and got[0].sum() == 8


# -- labels keep polygons and keypoints ----------------------------------------------------------------


def test_polygon_labels_keep_their_polygon_and_give_the_same_box(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("3 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n1 0.5 0.5 0.2 0.4\n", encoding="utf-8")
    gt = read_yolo_labels(path, (100, 200))
    # np.unique sorts rows by class: the box line (class 1) first, as before polygons were kept
    assert gt.classes.tolist() == [1, 3]
    np.testing.assert_allclose(gt.boxes, [[80, 30, 120, 70], [20, 20, 100, 60]], rtol=1e-6)
    assert gt.polygons is not None
    np.testing.assert_allclose(gt.polygons[1], [[20, 20], [100, 20], [100, 60], [20, 60]], rtol=1e-6)
    np.testing.assert_allclose(
        gt.polygons[0], [[80, 30], [120, 30], [120, 70], [80, 70]], rtol=1e-6
    )  # the box's corners
    path.write_text("1 0.5 0.5 0.2 0.4\n", encoding="utf-8")
    assert read_yolo_labels(path, (100, 200)).polygons is None  # boxes only


def test_pose_labels_keep_their_keypoints(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("0 0.5 0.5 0.2 0.4 0.5 0.25 2 0.0 0.0 0\n0 0.5 0.5 0.2 0.4 0.5 0.25 2 0.0 0.0 0\n", "utf-8")
    gt = read_yolo_labels(path, (100, 200), 1, kpt_shape=(2, 3))
    assert len(gt) == 1  # duplicates dropped
    np.testing.assert_allclose(gt.boxes, [[80, 30, 120, 70]], rtol=1e-6)
    assert gt.keypoints is not None and gt.keypoints.tolist() == [[[100.0, 25.0, 2.0], [0.0, 0.0, 0.0]]]
    (tmp_path / "xy.txt").write_text("0 0.5 0.5 0.2 0.4 0.5 0.25 0.1 0.1 0.0 0.0\n", "utf-8")
    xy_only = read_yolo_labels(tmp_path / "xy.txt", (100, 200), kpt_shape=(3, 2))
    assert xy_only.keypoints is not None and xy_only.keypoints[0, :, 2].tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(DataError, match=r"p.txt:1: a pose label with kpt_shape \[17, 3\] has 56 values, got 11"):
        read_yolo_labels(path, (100, 200), kpt_shape=(17, 3))
    empty = read_yolo_labels(tmp_path / "missing.txt", (100, 200), kpt_shape=(17, 3))
    assert empty.keypoints is not None and empty.keypoints.shape == (0, 17, 3)


# -- metrics keyed by name: a second task's names through the sweep and the report ---------------------

FAKE_METRICS = ("large_map50_95", "large_map50")
FAKE_TASK = TaskRecord(name="detect-large", metrics=FAKE_METRICS, primary_metric="large_map50_95")


def _entry(name: str, value: float, other: float) -> dict[str, Any]:
    metrics = {"large_map50_95": Metric(value=value), "large_map50": Metric(value=other)}
    v = VariantResult(name=name, precision="int8", backend="ort-cpu", model_path=f"{name}.onnx", size_bytes=1,
                      metrics=metrics)  # fmt: skip
    return {"name": name, "metrics": {k: m.value for k, m in metrics.items()}, "model_path": v.model_path,
            "variant": v.to_dict(), "inputs": {}, "task": FAKE_TASK.to_dict()}  # fmt: skip


def test_a_sweep_ranks_by_the_task_primary_metric() -> None:
    base = QuantPipeline.from_onnx("m.onnx").calibrate("imgs", num_images=8).evaluate("coco.yaml", num_images=4)
    sweep = Sweep(base).grid(calibration_method=["minmax", "entropy"])
    a, b = (v.name for v in sweep.variants)
    # a is better by the other metric but worse by the primary one: the sweep must rank by the primary
    entries = {"fp32": _entry("fp32", 0.50, 0.60), a: _entry(a, 0.40, 0.70), b: _entry(b, 0.49, 0.50)}
    latency = {n: LatencyResult(1, (ms,) * 5).to_dict() for n, ms in {"fp32": 20.0, a: 9.0, b: 10.0}.items()}
    res = sweep.result(entries, latency, recommend_max_drop=2.0, recommend_min_speedup=None, out_dir=Path("x"))
    assert res.row(b).metric == "large_map50_95" and res.row(b).accuracy == 0.49 and res.row(b).map50_95 is None
    assert res.row(a).drop == pytest.approx(10.0) and res.recommended == b
    assert res.pareto == (a, b, "fp32")  # a is fastest, so on the front despite its lower primary metric
    assert res.report.task == FAKE_TASK
    assert res.report.variant(b).delta_vs_fp32["large_map50_95"].value == pytest.approx(-1.0)
    md = res.report.to_markdown()
    assert "| variant | backend | large mAP50-95 | delta | large mAP50 | delta |" in md
    assert "| variant | large mAP50-95 | delta [95% CI] |" in md.split("## Sweep")[1]


def test_report_json_records_the_task_and_an_old_report_loads_as_detection(tmp_path: Path) -> None:
    v = VariantResult(name="fp32", precision="fp32", backend="ort-cpu", model_path="m.onnx", size_bytes=1,
                      metrics={"large_map50_95": Metric(value=0.4), "large_map50": Metric(value=0.6)})  # fmt: skip
    result = PipelineResult(variants=(v,), config={}, versions={}, inputs={}, out_dir=str(tmp_path), created="now",
                            task=FAKE_TASK)  # fmt: skip
    data = result.to_dict()
    assert data["task"] == {"name": "detect-large", "metrics": list(FAKE_METRICS), "primary_metric": "large_map50_95"}
    assert data["variants"][0]["map50_95"] is None  # the detection keys stay, empty for another task
    (tmp_path / "report.json").write_text(json.dumps(data), encoding="utf-8")
    again = PipelineResult.load(tmp_path, verify=False)
    assert again.task == FAKE_TASK and again.baseline.value("large_map50") == 0.6
    del data["task"]
    (tmp_path / "report.json").write_text(json.dumps(data), encoding="utf-8")
    assert PipelineResult.load(tmp_path, verify=False).task == TaskRecord()  # written before the task section
    assert TaskRecord() == TaskRecord.of("detect")


def test_gpu_decode_refuses_a_task_that_decodes_differently() -> None:
    torch = pytest.importorskip("torch")
    from yoloquant.artifacts import ModelInfo
    from yoloquant.postprocess.gpu import decode_outputs_torch, decode_torch
    from yoloquant.tasks import register_task, unregister_task

    def boxes_twice(outputs: Any, info: ModelInfo, **kw: Any) -> list[Detections]:  # a test double's decoder
        return decode_boxes(outputs, info, **kw) * 2

    register_task(TaskSpec(name="twice", ultralytics_tasks=(), decode=boxes_twice, scoring=(Scoring("bbox"),),
                           primary_metric="map50_95"))  # fmt: skip
    try:
        with pytest.raises(ConfigError, match="GPU decode is the detect task's; decode a 'twice' model"):
            decode_torch(torch.zeros((1, 6, 8)), ModelInfo(names={0: "a", 1: "b"}, task="twice"))
        with pytest.raises(ConfigError, match="task 'twice' has no torch decoder"):
            decode_outputs_torch([torch.zeros((1, 6, 8))], ModelInfo(names={0: "a", 1: "b"}, task="twice"))
    finally:
        unregister_task("twice")
    assert decode_torch(torch.zeros((1, 6, 8)), ModelInfo(names={0: "a", 1: "b"}))[0].boxes.shape == (0, 4)
