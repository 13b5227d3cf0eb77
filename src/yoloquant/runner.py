"""Carry out a :class:`QuantPipeline` plan: the stages in order, then the report."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from yoloquant._rundir import RunFolder
from yoloquant.artifacts import CalibrationSet, OnnxModel, QdqModel, file_sha256
from yoloquant.backends import PROVIDERS, build_engine
from yoloquant.bench.latency import LatencyResult, benchmark_interleaved
from yoloquant.config import Backend
from yoloquant.errors import ConfigError, ExportError
from yoloquant.export import exporter_for
from yoloquant.export.check import check_model_file, check_onnx_model
from yoloquant.preflight import check_plan
from yoloquant.quantize.ort_static import OrtStaticQuantizer
from yoloquant.report.result import PipelineResult, TaskRecord, VariantResult
from yoloquant.versions import package_versions

if TYPE_CHECKING:
    from yoloquant.data.datasets import Dataset
    from yoloquant.eval.bootstrap import Metric
    from yoloquant.eval.coco import EvalResult
    from yoloquant.pipeline import CalibrationPlan, EvalPlan, QuantPipeline, VariantPlan
    from yoloquant.protocols import Engine, Quantizer

__all__ = ["run_pipeline"]

log = logging.getLogger(__name__)


_NO_IMAGES = CalibrationSet(images=np.zeros((0, 3, 0, 0), np.uint8), files=(), digest="none")


@dataclass(frozen=True)
class _Built:
    """A variant's model on disk and what made it."""

    plan: VariantPlan
    model: OnnxModel


def run_pipeline(plan: QuantPipeline, out_dir: Path) -> PipelineResult:
    """Check the plan and its inputs, then export, quantize, evaluate, benchmark and report.

    The run folder is locked for the run, its old report removed first and the new one written last
    (``yoloquant._rundir``); a failure or Ctrl-C removes the run's temp files and empty folders.
    """
    start = time.perf_counter()
    out_dir = out_dir.absolute()  # the report's paths are absolute: it loads from any working directory
    with RunFolder(out_dir) as folder:
        eval_data = _check(plan, out_dir)
        folder.lock()
        folder.needed = _space_needed(plan)
        result = _run(plan, out_dir, eval_data, start)
        result.save(out_dir)
    return result


def _space_needed(plan: QuantPipeline) -> int:
    """About how many bytes a run writes: the FP32 copy, each quantized model, one quantizer's scratch files."""
    size = plan.model.stat().st_size
    fp32 = 2 * size if plan.model.suffix == ".pt" else size  # Ultralytics checkpoints hold FP16 weights
    made = sum(1 for v in plan.variants if v.quantizer is not None)
    return int(fp32 * (2.6 + 0.5 * made)) + (fp32 if plan.model.suffix == ".pt" else 0)


def _run(plan: QuantPipeline, out_dir: Path, eval_data: Dataset | None, start: float) -> PipelineResult:
    warnings: list[str] = []
    fp32 = _export(plan, out_dir)
    needs_calib = any(v.needs_calibration for v in plan.variants) or plan.sensitivity is not None
    calib = _calibrate(plan.calibration, fp32, plan.progress) if needs_calib and plan.calibration else None
    if calib is not None and eval_data is not None:
        warnings += _overlap_warning(calib, eval_data)
    warnings += _budget_warnings(plan)
    built = _make_variants(tuple(_with_budget(v, plan) for v in plan.variants), fp32, calib, out_dir, plan.progress)
    sensitivity = _sensitivity(plan, fp32, calib, eval_data, out_dir)
    with ExitStack() as stack:
        engines: dict[str, Engine] = {}
        for b in built:
            threads = plan.bench.threads if plan.bench else None
            engines[b.plan.name] = stack.enter_context(build_engine(b.model, b.plan.backend, threads=threads))
        evals = {name: _evaluate(plan, e, eval_data, name) for name, e in engines.items()}
        latency = _benchmark(plan, engines, eval_data)
        variants = [_variant_result(b, engines[b.plan.name], evals, latency) for b in built]
    inputs = _inputs(plan, fp32, calib, eval_data)
    result = PipelineResult(
        variants=tuple(variants),
        config=plan.to_dict(),
        versions=package_versions(),
        inputs=inputs,
        out_dir=str(out_dir),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        seconds=time.perf_counter() - start,
        warnings=tuple(warnings),
        sensitivity=sensitivity,
        task=TaskRecord.of(fp32.info.task),
    )
    return result


def _export(plan: QuantPipeline, out_dir: Path) -> OnnxModel:
    """Export (or copy) the FP32 model; an export with NaN / inf weights is removed, naming the initializer."""
    fp32 = exporter_for(plan.model, plan.export_config).export(plan.model, out_dir)
    if plan.model.suffix == ".pt":  # an .onnx input was checked before it was copied
        try:
            check_onnx_model(fp32.path)
        except ExportError:
            fp32.path.unlink(missing_ok=True)
            raise
    return fp32


def _check(plan: QuantPipeline, out_dir: Path) -> Dataset | None:
    """Fail fast, before any expensive work, on a plan or input that cannot work."""
    if not plan.model.is_file():
        msg = f"model file {plan.model} does not exist; pass the path of an Ultralytics .pt or an exported .onnx"
        raise ExportError(msg, artifact=plan.model)
    check_model_file(plan.model)
    quantized = [v for v in plan.variants if v.needs_calibration]
    if quantized and plan.calibration is None:
        msg = f"variants {[v.name for v in quantized]} need calibration data: add .calibrate(images_dir_or_yaml)"
        raise ConfigError(msg)
    if plan.sensitivity is not None and plan.calibration is None:
        msg = "the sensitivity analysis calibrates INT8 models: add .calibrate(images_dir_or_yaml) to the plan"
        raise ConfigError(msg)
    budgeted = [v.name for v in plan.variants if v.max_map_drop is not None]
    if budgeted and plan.evaluation is None:
        msg = f"variants {budgeted} have an accuracy budget (max_map_drop): add .evaluate(...) to the plan"
        raise ConfigError(msg)
    names = check_plan(plan).names  # the model file, the packages, the batch sizes
    if plan.calibration is not None and (quantized or plan.sensitivity is not None):
        from yoloquant.data.calibration import default_cache_dir
        from yoloquant.data.datasets import load_dataset

        default_cache_dir()  # YOLOQUANT_CACHE must name a folder

        c = plan.calibration
        load_dataset(c.source, split=c.split, labels=False).select(c.num_images, c.offset)
    eval_data = _eval_data(plan, names)
    _check_writable(out_dir)  # last: a plan that fails a check leaves no folder behind
    return eval_data


def _eval_data(plan: QuantPipeline, names: dict[int, str] | None) -> Dataset | None:
    """The evaluation images, their labels checked against the model's class names and holding boxes."""
    if plan.evaluation is None:
        return None
    e = plan.evaluation
    for v in plan.variants:
        if v.max_map_drop is not None and v.budget_data == "calibration":
            from yoloquant.decide.budget import load_labelled

            try:
                load_labelled(*_budget_source(v, plan, e), names=names)
            except ConfigError as exc:
                msg = (
                    f"variant {v.name!r} searches its accuracy budget on the calibration images (the default; the "
                    f"evaluation set then verifies it), so they need labels: {exc}"
                )
                raise ConfigError(msg) from exc
    from yoloquant.data.datasets import load_dataset

    return load_dataset(e.source, split=e.split, names=names).select(e.config.num_images, e.offset).require_boxes()


def _with_budget(v: VariantPlan, plan: QuantPipeline) -> VariantPlan:
    """Swap a budgeted variant's quantizer for the budget search (on the evaluation or calibration images)."""
    if v.max_map_drop is None or plan.evaluation is None:
        return v
    from yoloquant.decide.budget import BudgetedQuantizer

    e = plan.evaluation
    source, split, num_images, offset = _budget_source(v, plan, e)
    quantizer = BudgetedQuantizer(
        max_map_drop=v.max_map_drop,
        eval_data=source,
        num_images=num_images,
        offset=offset,
        split=split,
        granularity=v.granularity,
        quant=v.quantizer.config if isinstance(v.quantizer, OrtStaticQuantizer) else None,
        eval_config=dataclasses.replace(e.config, num_images=None),  # the count is the search set's
    )
    return dataclasses.replace(v, quantizer=quantizer)


def _budget_source(v: VariantPlan, plan: QuantPipeline, e: EvalPlan) -> tuple[Path, str, int | None, int]:
    """The labelled images a budget is searched on: ``(source, split, num_images, offset)``."""
    c = plan.calibration
    if v.budget_data == "calibration" and c is not None:
        return c.source, c.split, c.num_images, c.offset
    return e.source, e.split, e.config.num_images, e.offset


def _budget_warnings(plan: QuantPipeline) -> list[str]:
    in_sample = [v.name for v in plan.variants if v.max_map_drop is not None and v.budget_data == "evaluation"]
    if not in_sample:
        return []
    return [
        f"{in_sample} searched the accuracy budget on the evaluation images, so their reported drop is the one "
        "the search selected for (optimistic); quantize(..., budget_data='calibration') searches on the "
        "labelled calibration images and leaves the evaluation set as a held-out check"
    ]


def _sensitivity(
    plan: QuantPipeline, fp32: OnnxModel, calib: CalibrationSet | None, data: Dataset | None, out_dir: Path
) -> dict[str, Any] | None:
    """The ``sensitivity`` section, for the layout of the plan's first ``ort-static`` variant."""
    if plan.sensitivity is None or calib is None:
        return None
    from yoloquant.decide.sensitivity import sensitivity_section

    quant = next((v.quantizer.config for v in plan.variants if isinstance(v.quantizer, OrtStaticQuantizer)), None)
    return sensitivity_section(
        fp32,
        calib,
        out_dir / "sensitivity",
        config=plan.sensitivity,
        quant=quant,
        eval_data=data,
        eval_config=plan.evaluation.config if plan.evaluation else None,
        progress=plan.progress,
    )


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        msg = f"output directory {out_dir} is not writable ({exc.strerror}); choose another --out / run() folder"
        raise ConfigError(msg) from exc


def _calibrate(c: CalibrationPlan, model: OnnxModel, progress: bool) -> CalibrationSet:
    from yoloquant.data.calibration import ImageCalibrator

    calibrator = ImageCalibrator(
        source=c.source, num_images=c.num_images, offset=c.offset, split=c.split, progress=progress
    )
    return calibrator.calibrate(model.info)


def _make_variants(
    plans: tuple[VariantPlan, ...],
    fp32: OnnxModel,
    calib: CalibrationSet | None,
    out_dir: Path,
    progress: bool = True,
) -> list[_Built]:
    """Quantize each variant into its own folder; variants with equal quantizers share one model file."""
    made: list[tuple[Quantizer, OnnxModel]] = []
    built = []
    for v in plans:
        model = fp32
        if v.quantizer is not None:  # _check guarantees calib for the variants that need it
            # a quantizer that needs no calibration (fp16) gets no images; a quiet run turns its progress off
            data = calib if calib is not None and v.quantizer.needs_calibration else _NO_IMAGES
            quantizer = v.quantizer if progress else v.quantizer.with_progress(False)
            shared = next((m for q, m in made if q == v.quantizer), None)
            model = shared or quantizer.quantize(fp32, data, out_dir / v.name)
            made.append((v.quantizer, model))
        built.append(_Built(v, model))
    return built


def _evaluate(plan: QuantPipeline, engine: Engine, data: Dataset | None, name: str) -> EvalResult | None:
    from yoloquant.eval.coco import evaluate

    if data is None or plan.evaluation is None:
        return None
    return evaluate(engine, data, plan.evaluation.config, progress=plan.progress, desc=f"eval {name}")


def _benchmark(plan: QuantPipeline, engines: dict[str, Engine], data: Dataset | None) -> dict[str, list[LatencyResult]]:
    if plan.bench is None:
        return {}
    first = next(iter(engines.values()))
    image = _real_input(data, first.info.imgsz[0]) if data is not None else None
    return benchmark_interleaved(engines, plan.bench, inputs=image, progress=plan.progress)


def _real_input(data: Dataset, imgsz: int) -> np.ndarray:
    """The first evaluation image, preprocessed: realistic activations for timing."""
    from yoloquant.data.images import read_image
    from yoloquant.data.letterbox import normalize_pixels, preprocess

    chw, _ = preprocess(read_image(data.images[0]), imgsz)
    return normalize_pixels(chw[None])


def _variant_result(
    b: _Built, engine: Engine, evals: dict[str, EvalResult | None], latency: dict[str, list[LatencyResult]]
) -> VariantResult:
    name = b.plan.name
    ev = evals.get(name)
    lat = latency.get(name, [])
    base = next(iter(latency.values()), [])
    speedup = {r.batch: br.p50 / r.p50 for r, br in zip(lat, base, strict=True)} if base else {}
    baseline = next(iter(evals.values()), None)
    deltas = _deltas(ev, baseline)
    warnings = _provider_warnings(b, engine) + _interval_warnings(b.plan, deltas)
    quantization = _with_verification(b.plan, _quantization(b.model), ev, baseline, deltas)
    warnings += _verification_warnings(b.plan, quantization)
    return VariantResult(
        name=name,
        precision=b.plan.precision.value,
        backend=b.plan.backend.value,
        model_path=str(b.model.path.absolute()),
        size_bytes=b.model.size_bytes,
        providers=tuple(engine.providers),
        latency=tuple(lat),
        speedup_vs_fp32=speedup,
        quantization=quantization,
        eval_seconds=ev.seconds if ev else None,
        warnings=tuple(warnings),
        metrics=dict(ev.metrics) if ev else {},
        delta_vs_fp32=deltas,
        replicates=dict(ev.replicates) if ev else {},
    )


def _deltas(ev: EvalResult | None, baseline: EvalResult | None) -> dict[str, Metric]:
    """Each metric's paired difference from the baseline variant, in mAP points (none for the baseline)."""
    from yoloquant.eval.coco import delta

    if ev is None or baseline is None or ev is baseline:
        return {}
    return {k: delta(ev, baseline, k) for k in ev.metrics}


def _with_verification(
    plan: VariantPlan,
    quantization: dict[str, Any] | None,
    ev: EvalResult | None,
    baseline: EvalResult | None,
    deltas: dict[str, Metric],
) -> dict[str, Any] | None:
    """A budgeted variant's quantization record plus ``budget_verification``: the drop on the evaluation set."""
    found = ((quantization or {}).get("config") or {}).get("result")
    d = deltas.get("map50_95")
    if quantization is None or plan.max_map_drop is None or not found or d is None or ev is None or baseline is None:
        return quantization
    from yoloquant.decide.verification import budget_verification

    a, b = ev.replicates.get("map50_95"), baseline.replicates.get("map50_95")
    samples = (a - b) * 100 if a is not None and b is not None else None
    check = budget_verification(found, d, samples, held_out=plan.budget_data == "calibration", images=ev.num_images)
    return {**quantization, "budget_verification": check}


def _verification_warnings(plan: VariantPlan, quantization: dict[str, Any] | None) -> list[str]:
    check = (quantization or {}).get("budget_verification")
    if not check or check["within_budget"] or not check["held_out"]:
        return []
    if check["searched_drop_points"] is None or check["searched_drop_points"] > check["max_map_drop"]:
        return []  # the search itself missed the budget; its line in the report says so
    p = check["p_within_budget"]
    return [
        f"the accuracy budget of {check['max_map_drop']} points held on the search images (drop "
        f"{check['searched_drop_points']:+.2f}) but not on the {check['eval_images']} evaluation images: drop "
        f"{check['verified_drop_points']:+.2f}"
        + (f", P(drop <= budget) = {p:.2f}" if p is not None else "")
        + "; search on more labelled images, or allow a larger budget"
    ]


def _interval_warnings(plan: VariantPlan, deltas: dict[str, Metric]) -> list[str]:
    """A budget the evaluation images cannot resolve: the delta's interval is wider than the budget."""
    d = deltas.get("map50_95")
    if plan.max_map_drop is None or d is None or d.half_width is None or d.half_width <= plan.max_map_drop:
        return []
    return [
        f"the mAP50-95 delta is {d.format()} points: its 95% interval (+-{d.half_width:.2f}) is wider than the "
        f"budget of {plan.max_map_drop} points, so these evaluation images cannot tell whether the budget holds; "
        "evaluate on more images (the interval shrinks as 1/sqrt(images))"
    ]


def _provider_warnings(b: _Built, engine: Engine) -> list[str]:
    """What makes this variant's numbers mean less than they seem: a provider fallback, a layout mismatch."""
    warnings = []
    wanted = PROVIDERS[b.plan.backend]
    if engine.providers[:1] != [wanted]:
        warnings.append(f"asked for {wanted} but ONNX Runtime runs {engine.providers}: numbers are for the fallback")
    if isinstance(b.model, QdqModel) and b.model.layout == Backend.TENSORRT.value:
        warnings.append(
            f"the Q/DQ layout was made for TensorRT and runs here on {wanted}: its accuracy is what TensorRT "
            "would compute, its latency is not (ONNX Runtime CPU runs this layout 2-5x slower than FP32)"
        )
    return warnings


def _quantization(model: OnnxModel) -> dict[str, Any] | None:
    if not isinstance(model, QdqModel):
        return None
    return {
        "quantizer": model.quantizer,
        "layout": model.layout,
        "config": model.config,
        "seconds": round(model.seconds, 2),
        "quantized_counts": {op: len(n) for op, n in model.quantized_nodes.items()},
        "float_counts": {op: len(n) for op, n in model.float_nodes.items()},
        "quantized_nodes": model.quantized_nodes,
        "float_nodes": model.float_nodes,
        "source_sha256": model.source.sha256(),
    }


def _overlap_warning(calib: CalibrationSet, data: Dataset) -> list[str]:
    shared = {p.resolve() for p in calib.files} & {p.resolve() for p in data.images}
    if not shared:
        return []
    return [
        f"{len(shared)} images are used for both calibration and evaluation, which flatters the quantized "
        "variants; use disjoint sets (e.g. calibrate offset=0, evaluate offset=num_images)"
    ]


def _inputs(plan: QuantPipeline, fp32: OnnxModel, calib: CalibrationSet | None, data: Dataset | None) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "model": {"path": str(plan.model.absolute()), "sha256": file_sha256(plan.model)},
        "onnx_fp32": {"path": str(fp32.path.absolute()), "sha256": fp32.sha256()},
    }
    if calib is not None:
        inputs["calibration"] = {
            "images": len(calib),
            "first": calib.files[0].name,
            "last": calib.files[-1].name,
            "digest": calib.digest,
        }
    if data is not None:
        digest = hashlib.sha256()
        for path in data.images:
            digest.update(file_sha256(path).encode())
        inputs["evaluation"] = {
            "source": data.source,
            "images": len(data.images),
            "first": data.images[0].name,
            "last": data.images[-1].name,
            "sha256_of_image_hashes": digest.hexdigest(),
        }
    return inputs
