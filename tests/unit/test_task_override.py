"""Running a model as another task (``task="detect"`` for a seg / pose model): config, decode and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from yoloquant import QuantPipeline
from yoloquant.artifacts import ModelInfo
from yoloquant.cli import _parser as build_parser
from yoloquant.config import ExportConfig
from yoloquant.errors import ConfigError, ExportError, InferenceError
from yoloquant.postprocess.decode import decode_boxes
from yoloquant.tasks import exported_task


def test_an_unknown_task_is_refused_when_the_plan_is_made() -> None:
    with pytest.raises(ConfigError, match=r"task must be one of detect, segment, pose.*got 'segmentation'"):
        QuantPipeline.from_ultralytics("m.pt", task="segmentation")


def test_the_override_is_kept_in_the_plan() -> None:
    assert QuantPipeline.from_onnx("m.onnx", task="detect").export_config == ExportConfig(task="detect")
    assert QuantPipeline.from_ultralytics("m.pt").export_config.task is None


def test_a_model_runs_as_its_own_task_or_as_a_detector_only() -> None:
    assert exported_task("segment", Path("s.pt")).name == "segment"
    assert exported_task("segment", Path("s.pt"), "segment").name == "segment"
    assert exported_task("segment", Path("s.pt"), "detect").name == "detect"
    with pytest.raises(ExportError, match=r"s\.pt is a detect model: it runs as task 'detect' only, not 'segment'"):
        exported_task("detect", Path("s.pt"), "segment")


def _dfl_with_extras(extra: int) -> np.ndarray:
    """One anchor of a 2-class DFL head followed by ``extra`` channels (keypoints / mask coefficients)."""
    pred = np.zeros((1, 4 + 2 + extra, 1), np.float32)
    pred[0, :4, 0] = [5, 5, 4, 4]
    pred[0, 5, 0] = 0.9  # class 1
    pred[0, 6:, 0] = 0.95  # would be a class above conf if read as one
    return pred


def test_a_pose_head_run_as_a_detector_ignores_its_keypoint_channels() -> None:
    info = ModelInfo(names={0: "a", 1: "b"}, task="detect", source_task="pose")
    (dets,) = decode_boxes([_dfl_with_extras(51)], info, conf=0.25, iou=0.7, max_det=300, multi_label=True)
    assert dets.classes.tolist() == [1] and dets.boxes.tolist() == [[3.0, 3.0, 7.0, 7.0]]


def test_a_detector_with_more_class_channels_than_names_is_still_an_error() -> None:
    info = ModelInfo(names={0: "a", 1: "b"}, task="detect", source_task="detect")
    with pytest.raises(InferenceError, match="3 class channels but the model names 2 classes"):
        decode_boxes([_dfl_with_extras(1)], info, conf=0.25, iou=0.7, max_det=300, multi_label=True)


def test_the_cli_takes_a_task() -> None:
    args = build_parser().parse_args(
        ["run", "--model", "m.pt", "--calib", "c", "--eval", "e.yaml", "--out", "o", "--task", "detect"]
    )
    assert args.task == "detect"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--model", "m.pt", "--eval", "e", "--out", "o", "--task", "seg"])


def test_model_info_survives_an_engine_sidecar_and_older_sidecars_keep_their_task() -> None:
    from yoloquant.config import HeadType

    info = ModelInfo(
        names={0: "person", 1: "bicycle"}, imgsz=(320, 640), task="detect", source_task="segment", head=HeadType.END2END
    )
    assert ModelInfo.from_dict(json_round_trip(info.to_dict())) == info
    old = {"names": {"0": "person"}, "imgsz": [640, 640], "task": "segment", "head": "end2end", "precision": "fp8"}
    assert ModelInfo.from_dict(old).source_task == "segment"


def json_round_trip(data: dict[str, object]) -> dict[str, object]:
    import json

    return dict(json.loads(json.dumps(data)))
