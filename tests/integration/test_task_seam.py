"""A second task flows through the real seams, end to end, on the bundled YOLO26n and images.

The task is a test double, registered here only: ``detect-large`` decodes like detection, keeps the
boxes of at least 96 x 96 input pixels and reports ``large_map50_95`` / ``large_map50``. The ONNX says so
in its ``yoloquant.task`` metadata, as an export would write it; export, decode, evaluation, the report
and the Pareto front must all follow the task's spec rather than detection's fixed names.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from yoloquant import QuantPipeline
from yoloquant.artifacts import META_PREFIX, ModelInfo, OnnxModel
from yoloquant.backends.ort import OrtEngineBuilder
from yoloquant.config import EvalConfig, HeadType
from yoloquant.data.datasets import load_dataset
from yoloquant.data.images import read_image
from yoloquant.data.letterbox import normalize_pixels, preprocess
from yoloquant.decide.pareto import Point, pareto_front
from yoloquant.detections import Detections
from yoloquant.errors import ExportError
from yoloquant.eval.coco import evaluate
from yoloquant.export import OnnxFileExporter, UltralyticsExporter
from yoloquant.postprocess.decode import decode, decode_boxes
from yoloquant.report.result import PipelineResult
from yoloquant.tasks import Scoring, TaskSpec, register_task, unregister_task
from yoloquant.testing import CallbackEngine

pytest.importorskip("ultralytics")
pytest.importorskip("onnxruntime")
pytest.importorskip("pycocotools")

ASSETS = Path(__file__).resolve().parents[2] / "assets"
LARGE = 96.0 * 96.0  # input pixels: COCO's "large" area
EVAL = EvalConfig(num_images=12)


def _large(boxes: np.ndarray) -> np.ndarray:
    return np.asarray((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) >= LARGE)


def decode_large_boxes(
    outputs: Sequence[np.ndarray], info: ModelInfo, *, conf: float, iou: float, max_det: int, multi_label: bool
) -> list[Detections]:
    """The test double's decoder: detection's, then only the large boxes."""
    dets = decode_boxes(outputs, info, conf=conf, iou=iou, max_det=max_det, multi_label=multi_label)
    return [d.select(_large(d.boxes)) for d in dets]


DETECT_LARGE = TaskSpec(
    name="detect-large",
    ultralytics_tasks=("detect-large",),
    decode=decode_large_boxes,
    scoring=(Scoring("bbox", prefix="large_"),),
    primary_metric="large_map50_95",
    description="test double",
)


@pytest.fixture
def detect_large() -> Iterator[TaskSpec]:
    register_task(DETECT_LARGE)
    yield DETECT_LARGE
    unregister_task(DETECT_LARGE.name)


@pytest.fixture(scope="module")
def large_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled YOLO26n (end-to-end head: no NMS), its metadata naming the double's task."""
    import onnx

    exported = UltralyticsExporter().export(ASSETS / "weights" / "yolo26n.pt", tmp_path_factory.mktemp("e2e")).path
    model = onnx.load(str(exported))
    [entry] = [p for p in model.metadata_props if p.key == f"{META_PREFIX}task"]
    assert entry.value == "detect"  # what the exporter wrote for a detector
    entry.value = DETECT_LARGE.name
    path = exported.with_name("yolo26n-large.onnx")
    onnx.save(model, str(path))
    return path


def test_export_reads_the_task_and_refuses_one_not_registered(large_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"is a 'detect-large' model: task 'detect-large' is unknown; supported"):
        OnnxFileExporter().export(large_onnx, tmp_path / "a")
    register_task(DETECT_LARGE)
    try:
        model = OnnxFileExporter().export(large_onnx, tmp_path / "b")
    finally:
        unregister_task(DETECT_LARGE.name)
    assert model.info.task == "detect-large" and model.info.head is HeadType.END2END


def test_decode_and_evaluate_follow_the_task(detect_large: TaskSpec, large_onnx: Path) -> None:
    data = load_dataset(ASSETS / "coco64.yaml")
    with OrtEngineBuilder().build(OnnxModel.load(large_onnx)) as engine:
        assert engine.info.task == "detect-large"
        image, _ = preprocess(read_image(data.images[0]), 640)
        outputs = engine.infer(normalize_pixels(image[None]))
        ours = evaluate(engine, data, EVAL, progress=False)

        # the independent path: detection's own decoder and metrics on outputs whose small rows score 0
        # (an end-to-end head keeps rows above conf in model order, so this is the same set of detections)
        def small_rows_dropped(batch: np.ndarray) -> list[np.ndarray]:
            pred = engine.infer(batch)[0].copy()
            pred[..., 4] *= _large(pred.reshape(-1, 6)[:, :4]).reshape(pred.shape[:2])
            return [pred]

        detect_info = dataclasses.replace(engine.info, task="detect")
        with CallbackEngine(small_rows_dropped, detect_info) as reference_engine:
            reference = evaluate(reference_engine, data, EVAL, progress=False)
    dets = decode(outputs, engine.info, conf=0.001)
    assert all(_large(d.boxes).all() for d in dets)
    assert len(dets[0]) < len(decode(outputs, detect_info, conf=0.001)[0])  # some boxes were small
    assert list(ours.metrics) == ["large_map50_95", "large_map50"] and ours.primary_metric == "large_map50_95"
    assert ours.task == "detect-large" and "map50_95" not in ours.metrics
    assert ours.metrics["large_map50_95"] == reference.metrics["map50_95"]  # value and interval, exactly
    assert ours.metrics["large_map50"] == reference.metrics["map50"]
    assert 0.0 < ours.primary < 1.0


def test_the_report_and_the_pareto_front_are_keyed_by_the_task_metrics(
    detect_large: TaskSpec, large_onnx: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = (
        QuantPipeline.from_onnx(large_onnx)
        .quantize("fp16")
        .evaluate(ASSETS / "coco64.yaml", num_images=EVAL.num_images)
        .benchmark(iterations=5, warmup=1)
        .with_progress(False)
        .run(out)
    )
    fp32, fp16 = result.variant("fp32"), result.variant("fp16")
    assert result.task.primary_metric == "large_map50_95" and result.task.metrics == DETECT_LARGE.metric_names
    assert set(fp32.metrics) == {"large_map50_95", "large_map50"} and fp32.map50_95 is None
    assert set(fp16.delta_vs_fp32) == {"large_map50_95", "large_map50"}  # paired deltas by the task's names
    header = result.table().splitlines()[0]
    assert "large mAP50-95" in header and "large mAP50" in header
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data["task"]["name"] == "detect-large" and data["variants"][0]["metrics"]["large_map50"]["value"] > 0
    metric = result.task.primary_metric
    points = {v.name: Point(v.name, v.latency[0].p50, v.value(metric) or 0.0) for v in result.variants}
    front = pareto_front(list(points.values()))
    best = max(points.values(), key=lambda p: (p.accuracy, -p.latency_ms))
    fastest = min(points.values(), key=lambda p: (p.latency_ms, -p.accuracy))
    assert best in front and fastest in front  # ranked by large_map50_95: no point beats these on both axes
    unregister_task(DETECT_LARGE.name)  # a report loads without its task registered
    again = PipelineResult.load(out)
    assert again.task == result.task and again.baseline.value(metric) == fp32.value(metric)
    shutil.rmtree(out)
