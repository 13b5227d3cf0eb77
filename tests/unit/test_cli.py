from __future__ import annotations

from pathlib import Path

import pytest

from yoloquant.cli import main


def test_unknown_precision_is_a_clear_error(capsys: pytest.CaptureFixture[str], yolov8n_pt: Path) -> None:
    rc = main(["run", "--model", str(yolov8n_pt), "--precision", "fp32,int3", "--out", "x"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown precision 'int3'; choose one of: fp32, fp16, int8, fp8" in err


def test_missing_model_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = main(
        ["run", "--model", str(tmp_path / "m.pt"), "--precision", "fp32", "--no-bench", "--out", str(tmp_path / "o")]
    )
    assert rc == 2
    assert "m.pt does not exist" in capsys.readouterr().err


def test_bad_batch_sizes(capsys: pytest.CaptureFixture[str], yolov8n_pt: Path) -> None:
    rc = main(["run", "--model", str(yolov8n_pt), "--batch-sizes", "1,x", "--out", "x"])
    assert rc == 2
    assert "--batch-sizes takes comma-separated integers" in capsys.readouterr().err


def _sweep_args(*extra: str) -> list[str]:
    return ["sweep", "--model", "m.onnx", "--calib", "imgs", "--eval", "coco.yaml", "--out", "o", *extra]


def test_sweep_executor_flags_make_the_executor() -> None:
    from yoloquant.cli import _executor, _parser
    from yoloquant.decide.executor import LocalExecutor
    from yoloquant.decide.ray_executor import RayExecutor

    assert isinstance(_executor(_parser().parse_args(_sweep_args())), LocalExecutor)
    flags = ["--executor", "ray", "--ray-address", "auto", "--max-retries", "4", "--timing-resources", "gpu-h100,GPU=1"]
    assert _executor(_parser().parse_args(_sweep_args(*flags))) == RayExecutor(
        address="auto", max_retries=4, timing_resources={"gpu-h100": 1.0, "GPU": 1.0}
    )
    assert _executor(_parser().parse_args(_sweep_args("--executor", "ray", "--ray-cpus", "2"))).num_cpus == 2


def test_ray_flags_without_the_ray_executor_are_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_sweep_args("--ray-address", "auto", "--keep-going")) == 2
    assert "--ray-address configure the Ray executor; add --executor ray" in capsys.readouterr().err
    assert main(_sweep_args("--executor", "ray", "--timing-resources", "gpu=x")) == 2
    assert "--timing-resources takes NAME[=AMOUNT], got 'gpu=x'" in capsys.readouterr().err


def test_sensitivity_and_budget_take_the_executor_flags() -> None:
    from yoloquant.cli import _parser, build_pipeline, build_sensitivity
    from yoloquant.decide.ray_executor import RayExecutor

    inputs = ["--model", "m.onnx", "--calib", "imgs", "--eval", "coco.yaml", "--out", "o"]
    ray = ["--executor", "ray", "--ray-address", "auto", "--max-retries", "1"]
    wanted = RayExecutor(address="auto", max_retries=1)
    sens = build_sensitivity(_parser().parse_args(["sensitivity", *inputs, *ray]))
    assert sens.sensitivity_executor == wanted
    assert build_sensitivity(_parser().parse_args(["sensitivity", *inputs])).sensitivity_executor is None
    run = build_pipeline(_parser().parse_args(["run", *inputs, "--max-map-drop", "0.3", *ray, "--executor", "ray"]))
    (budget,) = [v for v in run.variants if v.max_map_drop is not None]
    assert budget.executor == wanted and budget.name == "int8-budget0.3"
    assert "budget searched on RayExecutor(address='auto', max_retries=1)" in run.describe()
    assert build_pipeline(_parser().parse_args(["run", *inputs, "--max-map-drop", "0.3"])).variants[1].executor is None


def test_executor_flags_that_cannot_apply_are_clear_errors(capsys: pytest.CaptureFixture[str]) -> None:
    inputs = ["--model", "m.onnx", "--calib", "imgs", "--eval", "coco.yaml", "--out", "o"]
    assert main(["run", *inputs, "--executor", "ray"]) == 2  # nothing of a plain run is spread over workers
    assert "--executor ray spreads the accuracy budget's search: give --max-map-drop too" in capsys.readouterr().err
    assert main(["sensitivity", *inputs, "--ray-cpus", "2"]) == 2
    assert "--ray-cpus configure the Ray executor; add --executor ray" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the latency phase is the sweep's: no --timing-resources elsewhere
        main(["sensitivity", *inputs, "--executor", "ray", "--timing-resources", "gpu"])
