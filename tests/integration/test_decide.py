"""Sensitivity, accuracy budget and a resumable sweep on the real bundled YOLOv8n and COCO images (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yoloquant import PipelineResult, QuantPipeline
from yoloquant.artifacts import CalibrationSet, OnnxModel
from yoloquant.config import BenchConfig, CalibMethod
from yoloquant.data.calibration import ImageCalibrator
from yoloquant.data.datasets import Dataset, load_dataset
from yoloquant.decide.budget import BudgetedQuantizer
from yoloquant.decide.sensitivity import SensitivityConfig, analyze_sensitivity
from yoloquant.decide.sweep import Sweep
from yoloquant.quantize.graph import classify_qdq_nodes
from yoloquant.quantize.ort_static import OrtQuantConfig

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model(yolov8n_onnx: Path) -> OnnxModel:
    return OnnxModel.load(yolov8n_onnx)


@pytest.fixture(scope="module")
def calib(model: OnnxModel, coco64_images: Path, tmp_path_factory: pytest.TempPathFactory) -> CalibrationSet:
    cache = tmp_path_factory.mktemp("calib-cache")
    return ImageCalibrator(source=coco64_images, num_images=4, cache_dir=cache, progress=False).calibrate(model.info)


@pytest.fixture(scope="module")
def val(coco64_yaml: Path) -> Dataset:
    return load_dataset(coco64_yaml).select(8, 32)


@pytest.mark.slow  # 10-20 s; `make test-all` (the CLI sensitivity test writes the section too)
def test_sensitivity_ranks_groups_and_writes_its_files(
    model: OnnxModel, calib: CalibrationSet, val: Dataset, tmp_path: Path
) -> None:
    config = SensitivityConfig(granularity="block", proxy_images=2, top_k=1, max_groups=4)
    quant = OrtQuantConfig(calibration_method=CalibMethod.MINMAX)
    report = analyze_sensitivity(model, calib, tmp_path, config=config, quant=quant, eval_data=val)
    groups = report.groups
    assert [g.group.name for g in groups] == report.ranked_names()
    assert sorted(report.ranked_names()) == ["model.0", "model.1", "model.2", "model.3"]
    assert [g.rank for g in groups] == [1, 2, 3, 4]
    assert [g.score for g in groups] == sorted(g.score for g in groups)
    assert report.outputs == ("output0:boxes", "output0:scores")
    # quantizing one small group damages the output far less than quantizing the whole model
    assert min(report.int8_sqnr_db) < groups[-1].score
    assert groups[0].map50_95 is not None and groups[1].map50_95 is None
    assert report.fp32_map50_95 is not None and 0.2 < report.fp32_map50_95 < 0.8
    data = json.loads((tmp_path / "sensitivity.json").read_text())
    assert [g["group"]["name"] for g in data["groups"]] == report.ranked_names()
    assert "| 1 |" in (tmp_path / "sensitivity.md").read_text()
    assert (tmp_path / "sensitivity.png").read_bytes().startswith(PNG)
    # stability from per-image sums: unit weights reproduce each group's SQNR, resamples give the shares
    stab = data["stability"]
    assert stab["resamples"] == 200 and stab["images"] == 2 and stab["top_k"] == 1
    assert -1.0 <= stab["spearman_mean"] <= 1.0 and -1.0 <= stab["kendall_mean"] <= 1.0
    shares = [g["top_k_share"] for g in data["groups"]]
    assert sum(shares) == pytest.approx(1.0) and all(0.0 <= x <= 1.0 for x in shares)  # one group per resample
    assert (
        "Ranking stability over 200 bootstrap resamples of the 2 proxy images"
        in (tmp_path / "sensitivity.md").read_text()
    )


def test_only_the_chosen_group_is_quantized(model: OnnxModel, calib: CalibrationSet, tmp_path: Path) -> None:
    """The exclusion list really leaves every other quantizable node float (read back from the Q/DQ graph)."""
    from yoloquant.decide._ortcache import SharedCalibration
    from yoloquant.decide.groups import find_groups

    shared = SharedCalibration(model, calib, OrtQuantConfig(calibration_method=CalibMethod.MINMAX), tmp_path)
    group = find_groups(shared.proto, shared.quantizable, "conv")[1]
    assert group.ops == ("Conv", "Sigmoid", "Mul")
    others = [n for n in shared.quantizable if n not in group.nodes]
    built = shared.build(others, tmp_path / "one.onnx")
    quantized, _ = classify_qdq_nodes(onnx.load(str(built.path)))
    # ORT also gives the group's output a Q/DQ pair, so its direct consumers read dequantized inputs
    outputs = {o for n in shared.proto.graph.node if n.name in group.nodes for o in n.output}
    readers = {n.name for n in shared.proto.graph.node if set(n.input) & outputs} - set(group.nodes)
    assert {n for names in quantized.values() for n in names} <= set(group.nodes) | readers
    assert group.nodes[0] in quantized["Conv"]
    # the same model through the ordinary quantizer with the reported config: same Q/DQ placement
    from yoloquant.quantize.ort_static import OrtStaticQuantizer

    config = OrtQuantConfig.from_dict(built.config)
    again = OrtStaticQuantizer(config).quantize(model, calib, tmp_path / "again")
    assert again.quantized_nodes == built.quantized_nodes


def test_budgeted_quantizer_runs_in_a_pipeline(
    model: OnnxModel, coco64_images: Path, coco64_yaml: Path, tmp_path: Path
) -> None:
    q = BudgetedQuantizer(max_map_drop=100.0, eval_data=coco64_yaml, num_images=8, offset=32,
                          granularity="block", quant=OrtQuantConfig(calibration_method=CalibMethod.MINMAX))  # fmt: skip
    result = (
        QuantPipeline.from_onnx(model.path)
        .calibrate(coco64_images, num_images=4)
        .quantize("int8", quantizer=q, name="budget")
        .evaluate(coco64_yaml, num_images=8, offset=32)
        .with_progress(False)
        .run(tmp_path)
    )
    v = result.variant("budget")
    budget = json.loads((tmp_path / "budget" / "budget.json").read_text())
    assert budget["float_groups"] == [] and budget["within_budget"]  # a 100-point budget needs nothing float
    assert v.map50_95 == pytest.approx(budget["map50_95"], abs=1e-9)  # the pipeline measures the same model
    assert v.quantization is not None and v.quantization["quantizer"] == "ort-budget"


@pytest.mark.slow  # 10-20 s; `make test-all` (the reliability tests kill and resume sweeps too)
def test_killed_sweep_resumes_from_its_ledger(
    model: OnnxModel, coco64_images: Path, coco64_yaml: Path, tmp_path: Path
) -> None:
    base = (
        QuantPipeline.from_onnx(model.path)
        .calibrate(coco64_images, num_images=4)
        .evaluate(coco64_yaml, num_images=8, offset=32)
        .with_progress(False)
    )
    sweep = Sweep(base).grid(calibration_method=["minmax"], keep_float=["decode", "head"])
    ran: list[str] = []

    def runner(plan: QuantPipeline, folder: Path):  # type: ignore[no-untyped-def]
        ran.append(plan.variants[-1].name)
        return plan.run(folder)

    sweep.run_variants(tmp_path, runner=runner)
    ledger = tmp_path / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    assert len(lines) == 3
    # simulate kill -9 during the third write: two whole lines and half of the third survive
    ledger.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    ran.clear()
    result = sweep.run(tmp_path, runner=runner, bench=BenchConfig(iterations=5, warmup=1), recommend_max_drop=100.0)
    assert ran == [json.loads(lines[2])["name"]]  # only the lost variant ran again
    names = [json.loads(line)["name"] for line in ledger.read_text().splitlines()]
    assert sorted(names) == sorted(["fp32", *(v.name for v in sweep.variants)])
    assert {r.name for r in result.rows} == set(names)
    assert result.recommended in names and result.pareto
    fp32 = result.row("fp32")
    assert fp32.speedup == pytest.approx(1.0) and fp32.drop == pytest.approx(0.0)
    assert result.recommended_call is not None
    assert result.recommended_call.startswith("(\n    QuantPipeline.from_onnx(")
    assert (tmp_path / "pareto.png").read_bytes().startswith(PNG)
    # the sweep folder holds a pipeline report: FP32 first, each variant as its own run measured it
    report = PipelineResult.load(tmp_path)
    assert [v.name for v in report.variants] == ["fp32", *(v.name for v in sweep.variants)]
    assert report.sweep is not None and report.sweep["recommended"] == result.recommended
    for name in names:
        own = PipelineResult.load(tmp_path / name).variant(name)
        v = report.variant(name)
        assert (v.map50_95, v.model_path, v.quantization) == (own.map50_95, own.model_path, own.quantization)
        assert result.row(name).map50_95 == pytest.approx(own.map50_95)
        assert v.speedup_vs_fp32[1] == pytest.approx(report.baseline.latency[0].p50 / v.latency[0].p50)
    assert report.inputs["evaluation"]["images"] == 8
    assert report.inputs["calibration_by_variant"][sweep.variants[0].name]["images"] == 4


def test_dequantize_mode_makes_groups_truly_float(model: OnnxModel, calib: CalibrationSet, tmp_path: Path) -> None:
    """float_mode='dequantize': every group float gives back FP32's exact outputs; one group float unquantizes it."""
    import numpy as np

    from yoloquant.backends.ort import OrtEngineBuilder
    from yoloquant.decide._ortcache import SharedCalibration
    from yoloquant.decide.groups import find_groups

    shared = SharedCalibration(model, calib, OrtQuantConfig(calibration_method=CalibMethod.MINMAX), tmp_path)
    x = calib.images[:1].astype(np.float32) / 255.0
    all_float = shared.build(shared.quantizable, tmp_path / "all.onnx", float_mode="dequantize")
    with OrtEngineBuilder().build(model) as ref, OrtEngineBuilder().build(all_float) as test:
        np.testing.assert_allclose(test.infer(x)[0], ref.infer(x)[0], rtol=1e-5, atol=1e-3)
    assert all_float.quantized_nodes == {}
    group = find_groups(shared.proto, shared.quantizable, "conv")[2]
    one = shared.build(group.nodes, tmp_path / "one.onnx", float_mode="dequantize")
    quantized = {n for names in one.quantized_nodes.values() for n in names}
    assert not quantized & set(group.nodes)
    assert len(quantized) >= len(shared.quantizable) - len(group.nodes) - 2


@pytest.mark.slow  # 10-20 s; `make test-all` (the held-out and pipeline budget tests search too)
def test_budget_search_returns_sensitive_groups_to_float(
    model: OnnxModel, calib: CalibrationSet, val: Dataset, tmp_path: Path
) -> None:
    from yoloquant.decide.budget import search_budget

    quant = OrtQuantConfig(calibration_method=CalibMethod.MINMAX)
    r = search_budget(model, calib, val, tmp_path, max_map_drop=0.0, granularity="block", quant=quant, proxy_images=2)
    assert r.within_budget and r.map50_95 >= r.fp32_map50_95 - 1e-12
    assert r.int8_map50_95 < r.fp32_map50_95  # full INT8 missed a zero budget, so groups went float
    ranking = json.loads((tmp_path / "sensitivity" / "sensitivity.json").read_text())
    names = [g["group"]["name"] for g in ranking["groups"]]
    assert list(r.float_groups) == names[: len(r.float_groups)]  # the most sensitive first
    k = len(r.float_groups)
    assert dict(r.steps)[k] == pytest.approx(r.map50_95)
    assert all(r.fp32_map50_95 - m > 1e-12 for j, m in r.steps if j < k)  # every smaller k tried failed
    assert Path(r.model_path).is_file() and json.loads((tmp_path / "budget.json").read_text())["within_budget"]


def test_budget_searched_on_calibration_images_is_checked_held_out(
    model: OnnxModel, coco64_images: Path, coco64_yaml: Path, tmp_path: Path
) -> None:
    import numpy as np

    from yoloquant.backends.ort import OrtEngineBuilder
    from yoloquant.eval.coco import evaluate

    result = (
        QuantPipeline.from_onnx(model.path)
        .calibrate(coco64_images, num_images=8)  # a folder with sibling labels/: searched there by default
        .quantize("int8", calibration_method="minmax", max_map_drop=100.0, name="held-out")
        .quantize("int8", calibration_method="minmax", max_map_drop=100.0, budget_data="evaluation", name="in-sample")
        .evaluate(coco64_yaml, num_images=8, offset=32)
        .with_progress(False)
        .run(tmp_path)
    )
    v = result.variant("held-out")
    held = v.quantization
    assert held is not None
    budget, found = held["config"]["budget"], held["config"]["result"]
    assert (budget["eval_source"], budget["num_images"], budget["offset"]) == (str(coco64_images), 8, 0)
    # the search measured FP32 on calibration images 0-7, not on the evaluation images 32-39
    evals = {}
    for name, path in (("fp32", model.path), ("held-out", Path(v.model_path))):
        with OrtEngineBuilder().build(OnnxModel.load(path)) as engine:
            on_calib = evaluate(engine, load_dataset(coco64_images).select(8, 0), progress=False)
            evals[name] = (on_calib, evaluate(engine, load_dataset(coco64_yaml).select(8, 32), progress=False))
    assert found["fp32_map50_95"] == pytest.approx(evals["fp32"][0].map50_95, abs=1e-9)
    assert result.baseline.map50_95 != pytest.approx(evals["fp32"][0].map50_95)
    searched = (evals["held-out"][0].map50_95 - evals["fp32"][0].map50_95) * 100
    assert found["search_delta"]["value"] == pytest.approx(searched, abs=1e-9)
    assert found["search_delta"]["ci95"][0] < searched < found["search_delta"]["ci95"][1]
    assert found["steps"][0]["delta"] == found["search_delta"]  # full INT8 met the 100-point budget: k = 0
    # the verification is the variant's paired delta on the evaluation images, recomputed independently here
    check = held["budget_verification"]
    (f_ev, i_ev) = evals["fp32"][1], evals["held-out"][1]
    verified = (i_ev.map50_95 - f_ev.map50_95) * 100
    samples = (i_ev.replicates["map50_95"] - f_ev.replicates["map50_95"]) * 100
    centred = samples - samples.mean() + verified
    assert check["held_out"] and check["eval_images"] == 8 and check["max_map_drop"] == 100.0
    assert check["searched_drop_points"] == pytest.approx(-searched, abs=1e-3)
    assert check["verified_drop_points"] == pytest.approx(-verified, abs=1e-4)
    low, high = np.percentile(-centred, [2.5, 97.5])
    assert check["verified_drop_ci95"] == pytest.approx([low, high], abs=1e-6)
    assert check["within_budget"] and check["p_within_budget"] == float(np.mean(-centred <= 100.0)) == 1.0
    md = (tmp_path / "report.md").read_text()
    assert f"- budget verified on the evaluation set (8 images, held out): drop {-verified:+.2f} [" in md
    assert "within budget, resolved; P(drop <= 100.0) = 1.00 over the paired bootstrap resamples" in md
    assert not [w for w in v.warnings if "held on the search images" in w]
    in_sample = result.variant("in-sample").quantization
    assert in_sample is not None and in_sample["config"]["result"]["fp32_map50_95"] == pytest.approx(
        result.baseline.map50_95, abs=1e-9
    )
    assert [w for w in result.warnings if "searched the accuracy budget" in w] == [
        "['in-sample'] searched the accuracy budget on the evaluation images, so their reported drop is the one the "
        "search selected for (optimistic); quantize(..., budget_data='calibration') searches on the labelled "
        "calibration images and leaves the evaluation set as a held-out check"
    ]
    assert "accuracy budget: drop <= 100.0 points, searched on" in (tmp_path / "report.md").read_text()


def test_cli_sensitivity_writes_a_report_with_the_section(
    yolov8n_onnx: Path, coco64_images: Path, coco64_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from yoloquant.cli import main

    argv = [
        "sensitivity", "--model", str(yolov8n_onnx), "--calib", str(coco64_images), "--calib-images", "4",
        "--eval", str(coco64_yaml), "--eval-images", "6", "--eval-offset", "40", "--granularity", "block",
        "--top-k", "1", "--max-groups", "3", "--proxy-images", "2", "--calibration-method", "minmax", "--quiet",
        "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert [v["name"] for v in data["variants"]] == ["fp32", "int8"]
    sens = data["sensitivity"]
    names = [g["group"]["name"] for g in sens["groups"]]
    assert sorted(names) == ["model.0", "model.1", "model.2"]  # the first 3 blocks in graph order
    assert [g["score_sqnr_db"] for g in sens["groups"]] == sorted(g["score_sqnr_db"] for g in sens["groups"])
    assert sens["groups"][0]["map50_95"] is not None and sens["groups"][1]["map50_95"] is None  # top-1 only
    assert sens["quant_config"]["calibration_method"] == "minmax" and sens["config"]["granularity"] == "block"
    # the analysis evaluates FP32 on the same images as the pipeline: the same mAP, measured twice
    assert sens["fp32_map50_95"] == pytest.approx(data["variants"][0]["map50_95"], abs=1e-9)
    assert sens["eval_images"] == data["inputs"]["evaluation"]["images"] == 6
    files = {Path(f).suffix: Path(f) for f in sens["files"]}
    md, png = files[".md"], files[".png"]
    assert png.read_bytes().startswith(PNG) and "| 1 |" in md.read_text()
    assert PipelineResult.load(tmp_path).sensitivity == sens
    capsys.readouterr()
    assert main(["show", str(tmp_path)]) == 0
    assert f"most sensitive {names[0]}" in capsys.readouterr().out


def test_budgeted_quantizer_measures_candidates_with_the_supplied_evaluate(
    model: OnnxModel, calib: CalibrationSet, val: Dataset, tmp_path: Path
) -> None:
    """The search evaluates through the callable it is given and loads nothing itself (eval_data does not exist)."""
    from yoloquant.decide.evaluator import ModelEvaluator

    inner = ModelEvaluator(val)
    seen: list[Path] = []

    def counting(candidate: OnnxModel):  # type: ignore[no-untyped-def]
        seen.append(candidate.path)
        return inner(candidate)

    q = BudgetedQuantizer(max_map_drop=100.0, eval_data=tmp_path / "missing.yaml", granularity="block",
                          quant=OrtQuantConfig(calibration_method=CalibMethod.MINMAX), evaluate=counting)  # fmt: skip
    made = q.quantize(model, calib, tmp_path / "budget")
    assert seen == [model.path, tmp_path / "budget" / "work" / "float-0.onnx"]  # FP32, then full INT8 (k = 0)
    assert q.result is not None and q.result.fp32_map50_95 == inner(model).map50_95
    assert made.config["result"]["float_groups"] == []


def test_sweep_over_two_backends_compares_each_with_its_own_fp32(
    model: OnnxModel, coco64_images: Path, coco64_yaml: Path, tmp_path: Path
) -> None:
    pytest.importorskip("openvino")
    base = (
        QuantPipeline.from_onnx(model.path)
        .calibrate(coco64_images, num_images=4)
        .evaluate(coco64_yaml, num_images=4, offset=32)
        .with_progress(False)
    )
    sweep = Sweep(base, progress=False).grid(
        calibration_method=["minmax"], keep_float=["decode"], backend=["ort-cpu", "openvino"]
    )
    result = sweep.run(tmp_path, bench=BenchConfig(iterations=5, warmup=1))
    ort, ov = (v.name for v in sweep.variants)
    ledger = {e["name"]: e for e in map(json.loads, (tmp_path / "ledger.jsonl").read_text().splitlines())}
    assert list(ledger) == ["fp32", "fp32-openvino", ort, ov]  # the baselines first, then the grid
    report = PipelineResult.load(tmp_path)
    assert report.variant("fp32-openvino").providers[0] == "OpenVINO:CPU"
    assert report.variant(ov).providers[0] == "OpenVINO:CPU" and report.variant(ort).backend == "ort-cpu"
    lat = {v.name: v.latency[0].p50 for v in report.variants}
    assert result.row(ov).speedup == pytest.approx(lat["fp32-openvino"] / lat[ov])
    assert result.row(ort).speedup == pytest.approx(lat["fp32"] / lat[ort])
    own = (ledger[ov]["map50_95"] - ledger["fp32-openvino"]["map50_95"]) * 100
    assert ledger[ov]["delta_vs_fp32"]["map50_95"]["value"] == pytest.approx(own)
    section = report.sweep
    assert section is not None and set(section["by_backend"]) == {"ort-cpu", "openvino"}
    assert set(section["by_backend"]["openvino"]["pareto"]) <= {"fp32-openvino", ov}
    assert set(section["pareto"]) <= {"fp32", ort}
