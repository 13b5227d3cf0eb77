"""Decide options in the fluent plan: the sensitivity stage and where an accuracy budget is searched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from yoloquant import ConfigError, QuantPipeline
from yoloquant.decide.sweep import Sweep


def test_sensitivity_stage_is_part_of_the_plan(yolov8n_pt: Path) -> None:
    base = QuantPipeline.from_ultralytics(yolov8n_pt).calibrate("imgs").quantize("int8").evaluate("e.yaml")
    plan = base.analyze_sensitivity(granularity="block", top_k=3, max_groups=5)
    assert base.sensitivity is None  # immutable builder
    assert plan.sensitivity is not None
    assert (plan.sensitivity.granularity, plan.sensitivity.top_k, plan.sensitivity.max_groups) == ("block", 3, 5)
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["sensitivity"]["granularity"] == "block" and data["sensitivity"]["top_k"] == 3
    assert "sensitivity" not in base.to_dict()  # plans without it keep their exact dict (sweep fingerprints)
    assert "sensitivity: block groups ranked by quantized SQNR on 8 calibration images, mAP of the top 3" in (
        plan.describe()
    )
    with pytest.raises(ConfigError, match="unknown granularity 'layer'; choose one of: conv, block"):
        base.analyze_sensitivity(granularity="layer")
    with pytest.raises(ConfigError, match="rank_by"):
        base.analyze_sensitivity(rank_by="loss")


def test_sensitivity_without_calibration_fails_before_any_work(yolov8n_pt: Path, tmp_path: Path) -> None:
    plan = QuantPipeline.from_ultralytics(yolov8n_pt).evaluate("e.yaml").analyze_sensitivity()
    with pytest.raises(ConfigError, match=r"sensitivity analysis calibrates INT8 models: add \.calibrate"):
        plan.run(tmp_path / "out")
    assert not list(tmp_path.rglob("*.onnx"))


def test_budget_options_are_validated_and_recorded(yolov8n_pt: Path) -> None:
    base = QuantPipeline.from_ultralytics(yolov8n_pt).calibrate("imgs")
    plan = base.quantize("int8", max_map_drop=0.3, granularity="conv", budget_data="calibration").quantize("int8")
    variants = plan.to_dict()["variants"]
    assert variants[1]["budget"] == {"max_map_drop": 0.3, "granularity": "conv", "data": "calibration"}
    assert "budget" not in variants[2]  # a plain INT8 variant has no budget record
    assert plan.variants[1].budget_data == "calibration"
    # searched on the calibration images and verified on the evaluation set unless asked otherwise
    assert base.quantize("int8", max_map_drop=0.3).variants[-1].budget_data == "calibration"
    from yoloquant.cli import _parser

    assert _parser().parse_args(["run", "--model", "m.onnx", "--out", "o"]).budget_data == "calibration"
    with pytest.raises(ConfigError, match=r"budget_data is 'evaluation' or 'calibration'.*got 'train'"):
        base.quantize("int8", max_map_drop=0.3, budget_data="train")
    with pytest.raises(ConfigError, match="unknown budget granularity 'layer'"):
        base.quantize("int8", max_map_drop=0.3, granularity="layer")


def test_budget_on_unlabelled_calibration_images_fails_before_export(
    yolov8n_pt: Path, coco64_images: Path, coco64_yaml: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for image in sorted(coco64_images.iterdir())[:2]:
        shutil.copy(image, folder)
    plan = (
        QuantPipeline.from_ultralytics(yolov8n_pt)
        .calibrate(folder, num_images=2)
        .quantize("int8", max_map_drop=0.3)  # searched on the calibration images by default
        .evaluate(coco64_yaml, num_images=4)
    )
    expected = r"on the calibration images \(the default.*unlabelled, which has no labels in images 0..1; pass an image"
    with pytest.raises(ConfigError, match=expected + r" folder.*budget_data='evaluation'"):
        plan.run(tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.onnx"))  # checked before the export


def test_sweep_refuses_a_base_that_analyzes_sensitivity(yolov8n_pt: Path) -> None:
    base = QuantPipeline.from_ultralytics(yolov8n_pt).calibrate("imgs").evaluate("e.yaml").analyze_sensitivity()
    with pytest.raises(ConfigError, match=r"must not \.analyze_sensitivity"):
        Sweep(base).grid(calibration_method=["minmax"])


def test_sweep_latency_cache_is_keyed_by_the_benchmark_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rerun with other --iterations / warmup / threads / batch sizes times again; the same settings reuse it."""
    import contextlib
    from dataclasses import dataclass
    from typing import Any

    from yoloquant.artifacts import OnnxModel
    from yoloquant.config import BenchConfig

    calls: list[BenchConfig] = []

    @dataclass
    class Timing:
        iterations: int

        def to_dict(self) -> dict[str, Any]:
            return {"p50": 1.0, "iterations": self.iterations}

    def fake_benchmark(engines: dict[str, Any], config: BenchConfig, **_: Any) -> dict[str, list[Timing]]:
        calls.append(config)
        return {n: [Timing(config.iterations)] for n in engines}

    def fake_engine(model: Any, backend: Any, *, threads: int | None = None) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext(model)

    monkeypatch.setattr("yoloquant.bench.latency.benchmark_interleaved", fake_benchmark)
    monkeypatch.setattr("yoloquant.backends.build_engine", fake_engine)  # the sweep builds through the registry
    monkeypatch.setattr(OnnxModel, "load", staticmethod(lambda path: path))
    monkeypatch.setattr("yoloquant.decide.sweep_latency.eval_input", lambda ev, engines: None)
    sweep = Sweep(QuantPipeline.from_onnx("m.onnx"), progress=False)
    entries = {"fp32": {"model_path": str(tmp_path / "a.onnx")}, "int8": {"model_path": str(tmp_path / "b.onnx")}}

    first = sweep.measure_latency(tmp_path, entries, BenchConfig(iterations=20))
    assert sweep.measure_latency(tmp_path, entries, BenchConfig(iterations=20)) == first
    assert len(calls) == 1
    assert sweep.measure_latency(tmp_path, entries, BenchConfig(iterations=50))["int8"]["iterations"] == 50
    for other in (BenchConfig(iterations=50, warmup=3), BenchConfig(iterations=50, threads=1)):
        sweep.measure_latency(tmp_path, entries, other)
    assert len(calls) == 4


def test_budget_plan_hands_the_loaded_search_images_and_the_backend_to_the_quantizer() -> None:
    """The runner's data, loaded once at the checks, is what the budget search evaluates on: no second load."""
    from yoloquant.config import Backend, EvalConfig
    from yoloquant.data.datasets import Dataset
    from yoloquant.decide.budget import BudgetedQuantizer
    from yoloquant.decide.budget_plan import BudgetPlan
    from yoloquant.decide.evaluator import ModelEvaluator

    plan = (
        QuantPipeline.from_onnx("m.onnx")
        .calibrate("imgs", num_images=4)
        .quantize("int8", max_map_drop=0.3, name="held")
        .quantize("int8", max_map_drop=0.3, budget_data="evaluation", name="in-sample", backend="openvino")
        .quantize("int8", name="plain")
        .quantize("int8", max_map_drop=0.3, name="held-twin")  # the same budget: shares held's model
        .quantize("int8", max_map_drop=0.3, backend="openvino", name="held-openvino")  # searched on openvino
        .evaluate("e.yaml", num_images=8, offset=32, conf=0.01)
    )
    search, eval_data = Dataset(images=(Path("a.jpg"),)), Dataset(images=(Path("b.jpg"),))
    variants = {v.name: v for v in BudgetPlan(plan, {(Path("imgs"), "train", 4, 0): search}, eval_data).variants()}
    held, in_sample = variants["held"].quantizer, variants["in-sample"].quantizer
    assert isinstance(held, BudgetedQuantizer) and isinstance(in_sample, BudgetedQuantizer)
    assert held.evaluate == ModelEvaluator(search, EvalConfig(conf=0.01), Backend.ORT_CPU)
    assert held.evaluate.data is search  # type: ignore[union-attr]
    assert in_sample.evaluate == ModelEvaluator(eval_data, EvalConfig(conf=0.01), Backend.OPENVINO)
    assert (held.config.eval_source, held.config.num_images, in_sample.config.offset) == ("imgs", 4, 32)
    assert variants["plain"] is plan.variants[3]  # an unbudgeted variant is left alone
    assert variants["held-twin"].quantizer == held and variants["held-openvino"].quantizer != held
    assert variants["held-openvino"].quantizer.evaluate.backend is Backend.OPENVINO  # type: ignore[union-attr]


def test_search_images_are_loaded_once_per_source(monkeypatch: pytest.MonkeyPatch) -> None:
    from yoloquant.data.datasets import Dataset
    from yoloquant.decide.budget_plan import load_search_images

    calls: list[tuple[object, ...]] = []

    def counting_load(*source: object, names: object = None) -> Dataset:
        calls.append(source)
        return Dataset(images=(Path("a.jpg"),))

    monkeypatch.setattr("yoloquant.decide.budget.load_labelled", counting_load)
    plan = (
        QuantPipeline.from_onnx("m.onnx")
        .calibrate("imgs", num_images=4)
        .quantize("int8", max_map_drop=0.3, name="a")
        .quantize("int8", max_map_drop=0.5, granularity="conv", name="b")  # the same calibration images
        .quantize("int8", max_map_drop=0.3, budget_data="evaluation", name="c")  # the evaluation set: not here
        .evaluate("e.yaml")
    )
    loaded = load_search_images(plan, names={0: "person"})
    assert calls == [(Path("imgs"), "train", 4, 0)] and list(loaded) == calls
