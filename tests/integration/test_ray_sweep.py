"""A sweep of the real bundled YOLOv8n on a local Ray instance (the session's, 2 CPUs) against the same sweep on
the local executor: the same ledger, the same models, the same Pareto front, timing on the labelled node."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from doubles.sweep_work import HoldThenRun, lines
from yoloquant import PipelineResult, QuantPipeline
from yoloquant.artifacts import file_sha256
from yoloquant.config import BenchConfig
from yoloquant.decide.ray_executor import RayExecutor
from yoloquant.decide.sweep import Sweep

pytest.importorskip("onnxruntime")
pytest.importorskip("ray")

BENCH = BenchConfig(iterations=5, warmup=1)


def _base(onnx: Path, images: Path, yaml: Path) -> QuantPipeline:
    return (
        QuantPipeline.from_onnx(onnx)
        .calibrate(images, num_images=4)
        .evaluate(yaml, num_images=4, offset=32)
        .with_progress(False)
    )


def _same(entry: dict[str, Any], out: Path) -> dict[str, Any]:
    """A ledger entry without what differs between two runs of it: times taken, the clock, and its out dir."""
    text = json.dumps(_untimed(entry), sort_keys=True)
    return dict(json.loads(text.replace(str(out), "<out>")))


def _untimed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not k.endswith("seconds") and k != "finished"}
    return [_untimed(v) for v in value] if isinstance(value, list) else value


def _ledger(out: Path) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in map(json.loads, lines(out / "ledger.jsonl"))}


@pytest.fixture(scope="module")
def local_sweep(
    yolov8n_onnx: Path, coco64_images: Path, coco64_yaml: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Sweep, Path]:
    sweep = Sweep(_base(yolov8n_onnx, coco64_images, coco64_yaml), progress=False).grid(calibration_method=["minmax"])
    out = tmp_path_factory.mktemp("local")
    sweep.run_variants(out)
    return sweep, out


def test_a_ray_sweep_gives_the_local_ledger_models_and_front_and_records_where_it_timed(
    ray_cluster: str, local_sweep: tuple[Sweep, Path], tmp_path: Path
) -> None:
    local, local_out = local_sweep
    sweep = Sweep(local.base, local.variants, progress=False, executor=RayExecutor(timing_resources={"timing-node": 1}))
    result = sweep.run(tmp_path, bench=BENCH)
    a, b = _ledger(local_out), _ledger(tmp_path)
    assert list(b) == ["fp32", local.variants[0].name]  # each once, the baseline first
    assert {n: _same(e, local_out) for n, e in a.items()} == {n: _same(e, tmp_path) for n, e in b.items()}
    for name in a:  # the same model bytes came out of the workers
        assert file_sha256(Path(a[name]["model_path"])) == file_sha256(Path(b[name]["model_path"]))
    latency = json.loads((tmp_path / "latency.json").read_text())["latency"]
    here = local.result(a, latency, recommend_max_drop=None, recommend_min_speedup=None, out_dir=local_out)
    assert here.pareto == result.pareto and here.recommended == result.recommended  # same timings, same front
    timing = PipelineResult.load(tmp_path).sweep["timing"]  # type: ignore[index]
    (node,) = timing["nodes"].values()  # one node timed every variant
    assert set(timing["timed_on"]) == set(b) and timing["resources"] == {"timing-node": 1}
    assert node["ray_node_id"] and node["cores"] and node["cpu"]
    assert f"Timed on (Ray resource {{'timing-node': 1}}): {node['node']}" in (tmp_path / "report.md").read_text()


def test_a_worker_killed_in_a_real_variant_is_redone_once(
    ray_cluster: str, local_sweep: tuple[Sweep, Path], tmp_path: Path
) -> None:
    local, local_out = local_sweep
    held = local.variants[0].name
    log, out = tmp_path / "runs.log", tmp_path / "out"

    def kill_the_worker() -> None:  # kill -9 once the variant's run has written into its folder
        pid_file = Path(f"{log}.pid-{held}")
        deadline = time.monotonic() + 60
        while not lines(pid_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        Path(f"{log}.release").touch()
        while not any((out / held).glob("*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # calibrating
        os.kill(int(lines(pid_file)[0]), signal.SIGKILL)

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    sweep = Sweep(local.base, local.variants, progress=False, executor=RayExecutor())
    sweep.run_variants(out, runner=HoldThenRun(log, held))
    killer.join()
    a, b = _ledger(local_out), _ledger(out)
    assert list(b) == list(a)  # each once
    assert _same(b[held], out) == _same(a[held], local_out)  # the retry measured what the local run did
    tries = [ln.split()[1] for ln in lines(Path(f"{log}.started")) if ln.startswith(held + " ")]
    assert len(tries) == 2 and tries[0] != tries[1]  # killed mid-variant, redone by another worker process


@pytest.mark.slow  # ~9 s (two analyses): `make test-all`; the default run stays within its budget
def test_sensitivity_groups_measured_as_ray_tasks_rank_as_here(
    ray_cluster: str, yolov8n_onnx: Path, coco64_images: Path, tmp_path: Path
) -> None:
    from yoloquant.artifacts import OnnxModel
    from yoloquant.data.calibration import ImageCalibrator
    from yoloquant.decide.sensitivity import SensitivityConfig, analyze_sensitivity

    model = OnnxModel.load(yolov8n_onnx)
    calibrator = ImageCalibrator(source=coco64_images, num_images=2, cache_dir=tmp_path / "cache", progress=False)
    calib = calibrator.calibrate(model.info)
    config = SensitivityConfig(max_groups=3, proxy_images=2, stability_resamples=0, cross_check=False)
    here = analyze_sensitivity(model, calib, tmp_path / "here", config=config, save=False)
    there = analyze_sensitivity(model, calib, tmp_path / "ray", config=config, save=False, executor=RayExecutor())
    assert [g.to_dict() for g in there.groups] == [g.to_dict() for g in here.groups]  # same groups, SQNR, ranks
    assert len(here.groups) == 3 and not list((tmp_path / "ray" / "work").glob("group-*"))  # task folders removed
