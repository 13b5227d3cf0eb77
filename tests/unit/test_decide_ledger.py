"""The sweep's append-only ledger: a killed sweep resumes without redoing or losing finished variants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yoloquant import QuantPipeline
from yoloquant.decide.budget import _tries
from yoloquant.decide.ledger import Ledger
from yoloquant.decide.sweep import Sweep, SweepVariant
from yoloquant.errors import ConfigError
from yoloquant.pipeline import QuantPipeline as _QP
from yoloquant.report.result import PipelineResult, VariantResult


class Killed(Exception):
    """Stands in for kill -9 in the middle of a variant."""


class FakeRunner:
    """Records each plan it runs; 'dies' on the call numbered ``die_at``."""

    def __init__(self, die_at: int | None = None) -> None:
        self.ran: list[str] = []
        self.die_at = die_at

    def __call__(self, plan: _QP, folder: Path) -> PipelineResult:
        name = plan.variants[-1].name
        if self.die_at is not None and len(self.ran) == self.die_at:
            raise Killed(name)
        self.ran.append(name)
        mAP = 0.5 - 0.01 * len(self.ran)
        v = VariantResult(name=name, precision="int8", backend="onnxruntime", model_path=f"{folder}/m.onnx",
                          size_bytes=1, map50_95=mAP, map50=mAP + 0.1)  # fmt: skip
        return PipelineResult(variants=(v,), config={}, versions={}, inputs={}, out_dir=str(folder), created="now")


def _sweep() -> Sweep:
    base = QuantPipeline.from_onnx("m.onnx").calibrate("imgs", num_images=8).evaluate("coco.yaml", num_images=4)
    return Sweep(base).grid(calibration=["minmax", "entropy"], keep=["none", "head"])


def test_grid_names_and_plans() -> None:
    sweep = _sweep()
    assert [v.name for v in sweep.variants] == [
        "int8-ort-minmax-keep-none",
        "int8-ort-minmax-keep-head",
        "int8-ort-entropy-keep-none",
        "int8-ort-entropy-keep-head",
    ]
    plan = sweep.plan(SweepVariant(calibration="minmax", num_images=4, keep="head"))
    assert [v.name for v in plan.variants] == ["int8-ort-minmax-n4-keep-head"]
    assert plan.calibration is not None and plan.calibration.num_images == 4
    assert plan.bench is None
    config = plan.variants[0].quantizer.config  # type: ignore[union-attr]
    assert (config.calibration, config.keep_head_convs_float) == ("minmax", True)


def test_grid_needs_calibration_and_evaluation() -> None:
    with pytest.raises(ConfigError, match="evaluate"):
        Sweep(QuantPipeline.from_onnx("m.onnx")).grid(calibration=["minmax"])


def test_python_call_reproduces_the_variant() -> None:
    sweep = _sweep()
    call = sweep.python_call(sweep.variants[1], "runs/x")
    code = call.replace(".run('runs/x')", "")
    rebuilt = eval(code, {"QuantPipeline": QuantPipeline})
    assert rebuilt.variants[-1].quantizer == sweep.plan(sweep.variants[1]).variants[-1].quantizer
    assert rebuilt.calibration == sweep.plan(sweep.variants[1]).calibration


def test_killed_sweep_resumes_without_redoing(tmp_path: Path) -> None:
    sweep = _sweep()
    first = FakeRunner(die_at=3)  # fp32 + 2 variants finish, the third dies
    with pytest.raises(Killed):
        sweep.run_variants(tmp_path, runner=first)
    assert first.ran == ["fp32", "int8-ort-minmax-keep-none", "int8-ort-minmax-keep-head"]
    second = FakeRunner()
    entries = sweep.run_variants(tmp_path, runner=second)
    assert second.ran == ["int8-ort-entropy-keep-none", "int8-ort-entropy-keep-head"]
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    names = [json.loads(line)["name"] for line in lines]
    assert sorted(names) == sorted(["fp32", *(v.name for v in sweep.variants)])
    assert len(set(names)) == len(names) == len(entries) == 5
    third = FakeRunner()
    sweep.run_variants(tmp_path, runner=third)  # a third start finds everything done
    assert third.ran == []


def test_torn_last_line_is_dropped_and_redone(tmp_path: Path) -> None:
    sweep = _sweep()
    with pytest.raises(Killed):
        sweep.run_variants(tmp_path, runner=FakeRunner(die_at=2))
    ledger = tmp_path / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    assert len(lines) == 2
    ledger.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # killed in the middle of a write
    assert list(Ledger(ledger).entries()) == ["fp32"]
    runner = FakeRunner()
    sweep.run_variants(tmp_path, runner=runner)
    assert runner.ran[0] == json.loads(lines[1])["name"]
    assert len(ledger.read_text().splitlines()) == 5
    assert all(json.loads(line) for line in ledger.read_text().splitlines())


def test_ledger_of_another_base_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Killed):
        _sweep().run_variants(tmp_path, runner=FakeRunner(die_at=1))
    other = Sweep(QuantPipeline.from_onnx("m.onnx").calibrate("other", num_images=8).evaluate("coco.yaml"))
    with pytest.raises(ConfigError, match="another base"):
        other.grid(calibration=["minmax"]).run_variants(tmp_path, runner=FakeRunner())


def test_result_pareto_and_recommendation_from_ledger() -> None:
    sweep = _sweep()
    entries = {
        "fp32": {"map50_95": 0.50, "model_path": "f", "python": "fp"},
        "a": {"map50_95": 0.498, "model_path": "a", "python": "pa"},
        "b": {"map50_95": 0.49, "model_path": "b", "python": "pb"},
        "c": {"map50_95": 0.45, "model_path": "c", "python": "pc"},
    }
    latency = {"fp32": {"p50": 30.0}, "a": {"p50": 20.0}, "b": {"p50": 25.0}, "c": {"p50": 15.0}}
    res = sweep.result(entries, latency, max_map_drop=0.5, min_speedup=1.4, out_dir=Path("x"))
    assert res.pareto == ("c", "a", "fp32")
    assert res.recommended == "a" and res.recommended_call == "pa"
    assert res.row("a").speedup == pytest.approx(1.5) and res.row("a").drop == pytest.approx(0.2)


@pytest.mark.parametrize("threshold", [0, 1, 2, 3, 5, 8, 13, 20])
def test_budget_search_finds_the_smallest_k_when_monotone(threshold: int) -> None:
    tried: list[int] = []

    def passes(k: int) -> bool:
        tried.append(k)
        return k >= threshold

    _tries(20, passes)
    ok = [k for k in tried if k >= threshold]
    assert min(ok) == max(threshold, 1)
    assert len(set(tried)) <= 2 * 5 + 1  # log-many evaluations, not 20
