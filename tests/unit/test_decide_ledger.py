"""The sweep's append-only ledger: a killed sweep resumes without redoing or losing finished variants."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from yoloquant import QuantPipeline
from yoloquant.bench.latency import LatencyResult
from yoloquant.decide.budget_search import tries as _tries
from yoloquant.decide.ledger import Ledger
from yoloquant.decide.sweep import Sweep, SweepResult, SweepVariant
from yoloquant.errors import ConfigError
from yoloquant.eval.bootstrap import Metric
from yoloquant.pipeline import QuantPipeline as _QP
from yoloquant.report.result import REPORT_SCHEMA_VERSION, PipelineResult, VariantResult


def box_metrics(map50_95: float, map50: float) -> dict[str, Metric]:
    """A detection variant's metrics, plain values."""
    return {"map50_95": Metric(value=map50_95), "map50": Metric(value=map50)}


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
        v = VariantResult(name=name, precision="int8", backend="ort-cpu", model_path=f"{folder}/m.onnx",
                          size_bytes=1, metrics=box_metrics(mAP, mAP + 0.1))  # fmt: skip
        return PipelineResult(variants=(v,), config={}, versions={}, inputs={}, out_dir=str(folder), created="now")


def _sweep() -> Sweep:
    base = QuantPipeline.from_onnx("m.onnx").calibrate("imgs", num_images=8).evaluate("coco.yaml", num_images=4)
    return Sweep(base).grid(calibration_method=["minmax", "entropy"], keep_float=["decode", "head"])


def test_grid_names_and_plans() -> None:
    sweep = _sweep()
    assert [v.name for v in sweep.variants] == [
        "int8-ort-minmax-keep-decode",
        "int8-ort-minmax-keep-head",
        "int8-ort-entropy-keep-decode",
        "int8-ort-entropy-keep-head",
    ]
    plan = sweep.plan(SweepVariant(calibration_method="minmax", calib_images=4, keep_float="head"))
    assert [v.name for v in plan.variants] == ["int8-ort-minmax-n4-keep-head"]
    assert plan.calibration is not None and plan.calibration.num_images == 4
    assert plan.bench is None
    config = plan.variants[0].quantizer.config  # type: ignore[union-attr]
    assert (config.calibration_method, config.keep_float.head_convs) == ("minmax", True)


def test_grid_needs_calibration_and_evaluation() -> None:
    with pytest.raises(ConfigError, match="evaluate"):
        Sweep(QuantPipeline.from_onnx("m.onnx")).grid(calibration_method=["minmax"])


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
    assert first.ran == ["fp32", "int8-ort-minmax-keep-decode", "int8-ort-minmax-keep-head"]
    second = FakeRunner()
    entries = sweep.run_variants(tmp_path, runner=second)
    assert second.ran == ["int8-ort-entropy-keep-decode", "int8-ort-entropy-keep-head"]
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    names = [json.loads(line)["name"] for line in lines]
    assert sorted(names) == sorted(["fp32", *(v.name for v in sweep.variants)])
    assert len(set(names)) == len(names) == len(entries) == 5
    deltas = [json.loads(line).get("delta_vs_fp32") for line in lines]
    assert deltas[0] is None and all(d["map50_95"]["value"] <= 0 for d in deltas[1:])  # the fake never beats FP32
    records = [json.loads(line)["variant"] for line in lines]  # what the sweep's report.json is made of
    assert [VariantResult.from_dict(r).name for r in records] == names
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
        other.grid(calibration_method=["minmax"]).run_variants(tmp_path, runner=FakeRunner())


def _ledger_entry(name: str, mAP: float) -> dict[str, Any]:
    v = VariantResult(name=name, precision="fp32" if name == "fp32" else "int8", backend="ort-cpu",
                      model_path=f"{name}.onnx", size_bytes=100, metrics=box_metrics(mAP, mAP + 0.2))  # fmt: skip
    calib = {} if name == "fp32" else {"calibration": {"images": 8, "digest": name}}
    return {"name": name, "map50_95": mAP, "model_path": v.model_path, "seconds": 2.0, "variant": v.to_dict(),
            "inputs": {"model": {"path": "m.onnx"}, **calib}, "warnings": [f"w-{name}", "shared"]}  # fmt: skip


def _timing(ms: float) -> dict[str, Any]:
    return LatencyResult(1, (ms,) * 5).to_dict()


def _swept() -> tuple[Sweep, SweepResult]:
    sweep = _sweep()
    a, b, c, d = (v.name for v in sweep.variants)
    maps = {"fp32": 0.50, a: 0.498, b: 0.49, c: 0.45, d: 0.40}
    ms = {"fp32": 30.0, a: 20.0, b: 25.0, c: 15.0, d: 16.0}
    entries = {n: _ledger_entry(n, m) for n, m in maps.items()}
    entries["int8-other-grid"] = _ledger_entry("int8-other-grid", 0.1)  # an earlier grid: not reported
    latency = {n: _timing(t) for n, t in ms.items()} | {"int8-other-grid": _timing(1.0)}
    res = sweep.result(
        entries, latency, recommend_max_drop=0.5, recommend_min_speedup=1.4, out_dir=Path("x"), seconds=7.0
    )
    return sweep, res


def test_result_pareto_recommendation_and_report_from_ledger() -> None:
    sweep, res = _swept()
    a, _, c, _ = (v.name for v in sweep.variants)
    assert res.pareto == (c, a, "fp32")  # fastest first; b (slower and worse than a) and d are dominated
    assert res.recommended == a  # c is faster but 5 points worse; a is 0.2 points worse at 1.5x
    assert res.row(a).speedup == pytest.approx(1.5) and res.row(a).drop == pytest.approx(0.2)
    assert res.recommended_call == sweep.python_call(sweep.variants[0], f"runs/{a}")
    report = res.report
    assert [v.name for v in report.variants] == ["fp32", *(v.name for v in sweep.variants)]
    assert report.variant(a).speedup_vs_fp32 == {1: pytest.approx(1.5)}
    assert report.variant(a).latency[0].p50 == pytest.approx(20.0)
    assert report.variant(a).map50_95 == pytest.approx(0.498) and report.variant(a).size_bytes == 100
    assert report.warnings == ("w-fp32", "shared", *(f"w-{v.name}" for v in sweep.variants))
    assert report.inputs["calibration_by_variant"][a] == {"images": 8, "digest": a}
    assert [v["name"] for v in report.config["variants"]] == ["fp32", *(v.name for v in sweep.variants)]
    assert report.seconds == 7.0
    section = report.sweep
    assert section is not None
    assert [g["name"] for g in section["grid"]] == [v.name for v in sweep.variants]
    assert section["constraints"] == {"recommend_max_drop": 0.5, "recommend_min_speedup": 1.4}
    assert section["ledger"] == str(Path("x") / "ledger.jsonl")
    assert section["variant_seconds"]["fp32"] == 2.0


def test_sweep_report_loads_and_shows_like_a_pipeline_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from yoloquant.cli import main

    sweep, res = _swept()
    path = res.save(tmp_path)
    assert path == tmp_path / "report.json"
    data = json.loads(path.read_text())
    assert data["schema_version"] == REPORT_SCHEMA_VERSION and data["variants"][0]["name"] == "fp32"
    loaded = PipelineResult.load(tmp_path)
    assert loaded.sweep == data["sweep"] and loaded.to_dict() == data
    assert (tmp_path / "pareto.png").read_bytes().startswith(b"\x89PNG")
    md = (tmp_path / "report.md").read_text()
    assert "## Sweep" in md and res.recommended_call is not None and res.recommended_call in md
    assert main(["show", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    a = sweep.variants[0].name
    assert f"sweep: recommended with max drop 0.5 points, min speedup 1.4x: {a}" in out
    row = next(line for line in out.splitlines() if line.startswith(a))  # the pipeline's table
    assert "-0.20" in row and "20.00" in row and "1.50x" in row


def test_recommended_cli_builds_the_same_variant() -> None:
    from yoloquant.cli import _parser, build_pipeline

    sweep = _sweep()
    variant = sweep.variants[1]
    cli = sweep.cli_call(variant, "runs/x")
    assert cli is not None and cli.startswith("yoloquant run --model m.onnx")
    rebuilt = build_pipeline(_parser().parse_args(shlex.split(cli)[1:]))
    plan = sweep.plan(variant)
    assert rebuilt.variants[-1].quantizer == plan.variants[-1].quantizer
    assert rebuilt.calibration == plan.calibration and rebuilt.evaluation == plan.evaluation
    assert sweep.cli_call(None, "runs/x") == (
        "yoloquant run --model m.onnx --imgsz 640 --eval coco.yaml --eval-offset 0 --split val --eval-images 4 "
        "--precision fp32 --out runs/x"
    )
    strict = Sweep(sweep.base.evaluate("coco.yaml", conf=0.25)).grid(calibration_method=["minmax"])
    assert strict.cli_call(strict.variants[0]) is None  # `yoloquant run` has no --conf


def test_a_ledger_of_an_older_version_is_refused_with_the_fix() -> None:
    sweep = _sweep()
    entries = {"fp32": {"name": "fp32", "map50_95": 0.5, "model_path": "f"}}
    with pytest.raises(ConfigError, match=r"older yoloquant.*run the sweep into a new output folder"):
        sweep.result(entries, {"fp32": _timing(10.0)}, recommend_max_drop=None, recommend_min_speedup=None,
                     out_dir=Path("x"))  # fmt: skip


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


class RecordingExecutorDouble:
    """Test double of an Executor: runs each job here, in reverse order (as a pool may finish them), and records
    which jobs it was handed and whether it touched the ledger."""

    def __init__(self, ledger: Path) -> None:
        self.ledger = ledger
        self.jobs: list[str] = []
        self.ledger_lines_seen: list[int] = []

    def map(self, fn: Any, items: Any) -> Any:
        batch = list(items)
        for item in reversed(batch):
            self.jobs.append(item.name)
            lines = self.ledger.read_text().splitlines() if self.ledger.is_file() else []
            self.ledger_lines_seen.append(len(lines))
            yield item, fn(item)


def test_variants_run_once_each_through_the_executor_and_the_driver_writes_the_ledger(tmp_path: Path) -> None:
    import pickle

    from yoloquant.decide.executor import VariantJob

    double = RecordingExecutorDouble(tmp_path / "ledger.jsonl")
    sweep = Sweep(_sweep().base, _sweep().variants, executor=double)
    runner = FakeRunner()
    entries = sweep.run_variants(tmp_path, runner=runner)
    grid = [v.name for v in sweep.variants]
    assert double.jobs == ["fp32", *reversed(grid)]  # FP32 in its own first wave, then the grid; each once
    assert sorted(runner.ran) == sorted(double.jobs) and len(runner.ran) == 5
    # the driver appends a line as each job comes back: the executor saw 0 lines, then 1 (fp32), then 1, 2, 3
    assert double.ledger_lines_seen == [0, 1, 2, 3, 4]
    lines = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert [e["name"] for e in lines] == ["fp32", *reversed(grid)] and set(entries) == {"fp32", *grid}
    assert all("delta_vs_fp32" in e for e in lines[1:])  # every variant paired with the FP32 entry
    assert Sweep(sweep.base, sweep.variants, executor=double).run_variants(tmp_path, runner=runner) == entries
    assert len(double.jobs) == 5  # a resumed sweep hands the executor nothing
    job = VariantJob(name="x", plan=sweep.plan(sweep.variants[0]), folder=tmp_path, variant=sweep.variants[0])
    assert pickle.loads(pickle.dumps(job)) == job  # a remote executor can ship it


def test_a_failed_variant_from_the_executor_stops_the_sweep_with_its_error(tmp_path: Path) -> None:
    from yoloquant.decide.executor import LocalExecutor

    outcomes = list(LocalExecutor().map(lambda x: 1 // x, [1, 0, 2]))
    assert outcomes[0] == (1, 1) and isinstance(outcomes[1][1], ZeroDivisionError) and outcomes[2] == (2, 0)
    with pytest.raises(Killed):
        _sweep().run_variants(tmp_path, runner=FakeRunner(die_at=2))
    assert len((tmp_path / "ledger.jsonl").read_text().splitlines()) == 2  # nothing after the failure


def test_a_backend_axis_keeps_default_names_and_compares_each_backend_with_its_own_fp32() -> None:
    sweep = _sweep()
    two = Sweep(sweep.base).grid(calibration_method=["minmax"], keep_float=["decode"], backend=["ort-cpu", "openvino"])
    ort, ov = two.variants
    assert (ort.name, ov.name) == ("int8-ort-minmax-keep-decode", "int8-ort-minmax-keep-decode-openvino")
    assert "backend" not in ort.to_dict() and ov.to_dict()["backend"] == "openvino"
    assert two.backends() == ("ort-cpu", "openvino") and sweep.backends() == ("ort-cpu",)
    assert two.plan(ov).variants[-1].backend == "openvino"
    assert [v.name for v in two.baseline_plan("openvino").variants] == ["fp32-openvino"]
    maps = {"fp32": 0.50, "fp32-openvino": 0.49, ort.name: 0.48, ov.name: 0.485}
    ms = {"fp32": 30.0, "fp32-openvino": 20.0, ort.name: 15.0, ov.name: 16.0}
    entries = {n: _ledger_entry(n, m) for n, m in maps.items()}
    for n in ("fp32-openvino", ov.name):
        entries[n]["variant"]["backend"] = "openvino"
    timings = {n: _timing(t) for n, t in ms.items()}
    res = two.result(entries, timings, recommend_max_drop=None, recommend_min_speedup=None, out_dir=Path("x"))
    assert res.row(ov.name).speedup == pytest.approx(20 / 16) and res.row(ov.name).drop == pytest.approx(0.5)
    assert res.row(ort.name).speedup == pytest.approx(2.0) and res.row(ort.name).drop == pytest.approx(2.0)
    section = res.report.sweep
    assert section is not None and set(section["by_backend"]) == {"ort-cpu", "openvino"}
    assert section["pareto"] == section["by_backend"]["ort-cpu"]["pareto"]  # the first grid variant's backend
    assert set(section["by_backend"]["openvino"]["pareto"]) <= {"fp32-openvino", ov.name}
    assert res.report.variant(ov.name).speedup_vs_fp32 == {1: pytest.approx(20 / 16)}
    assert "backend='openvino'" in two.python_call(ov) and "--backend openvino" in (two.cli_call(ov) or "")
    md = res.report.to_markdown()
    assert "Per backend (speedup, delta and the marks vs FP32 on the same backend" in md
    assert f"openvino: front {', '.join(section['by_backend']['openvino']['pareto'])}, recommended " in md
    ov_row = next(line for line in md.split("## Sweep")[1].splitlines() if line.startswith(f"| {ov.name} |"))
    assert "| 1.250x | *" in ov_row  # marked on its own backend's front
