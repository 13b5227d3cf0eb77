"""The accuracy budget search of the real bundled YOLOv8n with its candidates measured as Ray tasks (the session's
local instance, 2 CPUs) against the same search in one process: the same steps, chosen groups and model bytes; and
the pipeline handing its executor to the budget search and to the sensitivity analysis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from yoloquant import PipelineResult, QuantPipeline
from yoloquant.artifacts import CalibrationSet, OnnxModel, file_sha256
from yoloquant.config import CalibMethod
from yoloquant.data.calibration import ImageCalibrator
from yoloquant.data.datasets import Dataset, load_dataset
from yoloquant.decide._ortcache import SharedCalibration
from yoloquant.decide.budget import BudgetResult, search_budget
from yoloquant.decide.groups import Granularity, find_groups
from yoloquant.decide.ray_executor import RayExecutor
from yoloquant.decide.sensitivity import SensitivityReport
from yoloquant.quantize.ort_static import OrtQuantConfig

pytest.importorskip("onnxruntime")
pytest.importorskip("ray")

QUANT = OrtQuantConfig(calibration_method=CalibMethod.MINMAX)


@pytest.fixture(scope="module")
def model(yolov8n_onnx: Path) -> OnnxModel:
    return OnnxModel.load(yolov8n_onnx)


@pytest.fixture(scope="module")
def calib(model: OnnxModel, coco64_images: Path, tmp_path_factory: pytest.TempPathFactory) -> CalibrationSet:
    cache = tmp_path_factory.mktemp("calib-cache")
    return ImageCalibrator(source=coco64_images, num_images=2, cache_dir=cache, progress=False).calibrate(model.info)


@pytest.fixture(scope="module")
def val(coco64_yaml: Path) -> Dataset:
    return load_dataset(coco64_yaml).select(4, 32)


def _ranking(model: OnnxModel, calib: CalibrationSet, work: Path, n: int) -> SensitivityReport:
    """The last ``n`` blocks, head first, as a given ranking: the search then runs without the (slow) proxy."""
    shared = SharedCalibration(model, calib, QUANT, work)
    blocks = find_groups(shared.proto, shared.quantizable, Granularity.BLOCK)[-n:][::-1]
    return SensitivityReport.from_order(model, blocks, QUANT.to_dict())


def _same(result: BudgetResult, out: Path) -> dict[str, Any]:
    """A result without what differs between two runs of it: the time taken and its out dir."""
    data = result.to_dict()
    del data["seconds"]
    return dict(json.loads(json.dumps(data).replace(str(out), "<out>")))


def test_a_budget_searched_with_ray_tasks_chooses_the_groups_and_model_of_one_process(
    ray_cluster: str, model: OnnxModel, calib: CalibrationSet, val: Dataset, tmp_path: Path
) -> None:
    ranking = _ranking(model, calib, tmp_path / "rank", 8)
    options: dict[str, Any] = {"max_map_drop": 0.5, "quant": QUANT, "ranking": ranking}
    here = search_budget(model, calib, val, tmp_path / "here", **options)
    there = search_budget(model, calib, val, tmp_path / "ray", executor=RayExecutor(), **options)
    assert _same(there, tmp_path / "ray") == _same(here, tmp_path / "here")  # steps, deltas, groups, nodes, config
    # full INT8 missed the budget, so it searched: here (onnxruntime 1.32) k = 1, 2, 4 failed, 8 passed, then the
    # bisection tried 6 and 7 (both failed: mAP is not monotone in k), on Ray as 3 batches of 2 candidates
    assert [k for k, _ in here.steps][:2] == [0, 1] and len(here.steps) >= 3
    assert file_sha256(Path(there.model_path)) == file_sha256(Path(here.model_path))  # the same model bytes
    assert not list((tmp_path / "ray" / "work").glob("candidate-*"))  # the tasks' folders are removed


class _CountingRay:
    """A RayExecutor that counts the items handed to it."""

    def __init__(self) -> None:
        self.ray, self.items = RayExecutor(), 0
        self.parallelism = self.ray.parallelism

    def map(self, fn: Any, items: Any) -> Any:
        items = list(items)
        self.items += len(items)
        return self.ray.map(fn, items)


def test_the_pipeline_hands_its_executors_to_the_budget_search_and_the_sensitivity_analysis(
    ray_cluster: str, model: OnnxModel, coco64_images: Path, coco64_yaml: Path, tmp_path: Path
) -> None:
    """A budget that full INT8 meets (100 points) asks only k = 0: FP32 and full INT8 measured as two Ray tasks; the
    analysis of 2 groups: two Ray tasks."""
    from yoloquant.decide import budget_search

    batches: list[list[int]] = []
    run = budget_search.Candidates._run

    def recording(self: budget_search.Candidates, jobs: list[Any]) -> Any:
        batches.append([j.k for j in jobs])
        return run(self, jobs)

    counting = _CountingRay()
    plan = (
        QuantPipeline.from_onnx(model.path)
        .calibrate(coco64_images, num_images=2)
        .quantize("int8", calibration_method="minmax", max_map_drop=100.0, budget_data="evaluation",
                  executor=RayExecutor(), name="budget")
        .evaluate(coco64_yaml, num_images=2, offset=32)
        .analyze_sensitivity(max_groups=2, top_k=0, proxy_images=2, executor=counting)  # type: ignore[arg-type]
        .with_progress(False)
    )  # fmt: skip
    assert plan.describe().endswith("groups measured on _CountingRay")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(budget_search.Candidates, "_run", recording)
        result = plan.run(tmp_path)
    assert batches == [[None, 0]]
    found = json.loads((tmp_path / "budget" / "budget.json").read_text())
    assert found["float_groups"] == [] and found["within_budget"]
    assert PipelineResult.load(tmp_path).variant("budget").map50_95 == result.variant("budget").map50_95
    assert counting.items == 2  # one task per group
    assert result.sensitivity is not None and len(result.sensitivity["groups"]) == 2


@pytest.mark.slow  # ~20 s (two searches, each ranking every block): `make test-all`
def test_a_budget_ranked_and_searched_on_ray_is_the_one_process_budget(
    ray_cluster: str, model: OnnxModel, calib: CalibrationSet, val: Dataset, tmp_path: Path
) -> None:
    options: dict[str, Any] = {"max_map_drop": 0.0, "quant": QUANT, "granularity": "block", "proxy_images": 2}
    here = search_budget(model, calib, val, tmp_path / "here", **options)
    there = search_budget(model, calib, val, tmp_path / "ray", executor=RayExecutor(), **options)
    assert _same(there, tmp_path / "ray") == _same(here, tmp_path / "here")
    assert file_sha256(Path(there.model_path)) == file_sha256(Path(here.model_path))
    ranks = [json.loads((tmp_path / d / "sensitivity" / "sensitivity.json").read_text()) for d in ("here", "ray")]
    assert [g["group"]["name"] for g in ranks[0]["groups"]] == [g["group"]["name"] for g in ranks[1]["groups"]]
