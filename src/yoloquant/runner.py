"""Carry out a :class:`QuantPipeline` plan: the stages in order, then the report."""

from __future__ import annotations

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
from yoloquant.backends import PROVIDERS, open_engines
from yoloquant.bench.latency import LatencyResult, benchmark_interleaved, real_input, speedups
from yoloquant.config import Backend
from yoloquant.decide.budget_plan import BudgetPlan, check_budgets, load_search_images
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
    from yoloquant.pipeline import CalibrationPlan, QuantPipeline, VariantPlan
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
        checked = _check(plan, out_dir)
        folder.lock()
        folder.needed = _space_needed(plan)
        result = _run(plan, out_dir, checked, start)
        result.save(out_dir)
    return result


def _space_needed(plan: QuantPipeline) -> int:
    """About how many bytes a run writes: the FP32 copy, each quantized model, one quantizer's scratch files."""
    size = plan.model.stat().st_size
    fp32 = 2 * size if plan.model.suffix == ".pt" else size  # Ultralytics checkpoints hold FP16 weights
    made = sum(1 for v in plan.variants if v.quantizer is not None)
    return int(fp32 * (2.6 + 0.5 * made)) + (fp32 if plan.model.suffix == ".pt" else 0)


def _run(plan: QuantPipeline, out_dir: Path, checked: _Checked, start: float) -> PipelineResult:
    eval_data, budget = checked.eval_data, checked.budget
    warnings: list[str] = []
    fp32 = _export(plan, out_dir)
    needs_calib = any(v.needs_calibration for v in plan.variants) or plan.sensitivity is not None
    calib = _calibrate(plan.calibration, fp32, plan.progress) if needs_calib and plan.calibration else None
    if calib is not None and eval_data is not None:
        warnings += _overlap_warning(calib, eval_data)
    warnings += budget.warnings()
    built = _make_variants(budget.variants(), fp32, calib, out_dir, plan.progress)
    sensitivity = _sensitivity(plan, fp32, calib, eval_data, out_dir)
    with ExitStack() as stack:
        threads = plan.bench.threads if plan.bench else None
        engines = open_engines(stack, {b.plan.name: (b.model, b.plan.backend) for b in built}, threads=threads)
        evals = {name: _evaluate(plan, e, eval_data, name) for name, e in engines.items()}
        latency = _benchmark(plan, engines, eval_data)
        variants = [_variant_result(b, engines[b.plan.name], evals, latency, budget) for b in built]
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


@dataclass(frozen=True)
class _Checked:
    """What the checks loaded, for the run to reuse: the evaluation set and the budgets' search images."""

    eval_data: Dataset | None
    budget: BudgetPlan


def _check(plan: QuantPipeline, out_dir: Path) -> _Checked:
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
    check_budgets(plan)
    names = check_plan(plan).names  # the model file, the packages, the batch sizes
    if plan.calibration is not None and (quantized or plan.sensitivity is not None):
        from yoloquant.data.calibration import default_cache_dir
        from yoloquant.data.datasets import load_dataset

        default_cache_dir()  # YOLOQUANT_CACHE must name a folder

        c = plan.calibration
        load_dataset(c.source, split=c.split, labels=False).select(c.num_images, c.offset)
    search = load_search_images(plan, names)  # before the evaluation set: its error names the calibration images
    eval_data = _eval_data(plan, names)
    _check_writable(out_dir)  # last: a plan that fails a check leaves no folder behind
    return _Checked(eval_data, BudgetPlan(plan, search, eval_data))


def _eval_data(plan: QuantPipeline, names: dict[int, str] | None) -> Dataset | None:
    """The evaluation images, their labels checked against the model's class names and holding boxes."""
    if plan.evaluation is None:
        return None
    e = plan.evaluation
    from yoloquant.data.datasets import load_dataset

    return load_dataset(e.source, split=e.split, names=names).select(e.config.num_images, e.offset).require_boxes()


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
        executor=plan.sensitivity_executor,
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
    image = real_input(data.images[0], first.info.imgsz[0]) if data is not None else None  # the first eval image
    return benchmark_interleaved(engines, plan.bench, inputs=image, progress=plan.progress)


def _variant_result(
    b: _Built,
    engine: Engine,
    evals: dict[str, EvalResult | None],
    latency: dict[str, list[LatencyResult]],
    budget: BudgetPlan,
) -> VariantResult:
    name = b.plan.name
    ev = evals.get(name)
    lat = latency.get(name, [])
    base = next(iter(latency.values()), [])
    speedup = speedups(lat, base) if base else {}
    baseline = next(iter(evals.values()), None)
    deltas = _deltas(ev, baseline)
    quantization, budget_warnings = budget.verify(b.plan, _quantization(b.model), ev, baseline, deltas)
    warnings = _provider_warnings(b, engine) + budget_warnings
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


def _provider_warnings(b: _Built, engine: Engine) -> list[str]:
    """What makes this variant's numbers mean less than they seem: a provider fallback, a layout mismatch."""
    warnings = []
    wanted = PROVIDERS[b.plan.backend]
    if engine.providers[:1] != [wanted]:
        warnings.append(f"asked for {wanted} but ONNX Runtime runs {engine.providers}: numbers are for the fallback")
    if isinstance(b.model, QdqModel) and b.model.backend == Backend.TENSORRT.value:
        warnings.append(
            f"the Q/DQ model was made for TensorRT and runs here on {wanted}: its accuracy is what TensorRT "
            "would compute, its latency is not (ONNX Runtime CPU runs this layout 2-5x slower than FP32)"
        )
    return warnings


def _quantization(model: OnnxModel) -> dict[str, Any] | None:
    if not isinstance(model, QdqModel):
        return None
    return {
        "quantizer": model.quantizer,
        "backend": model.backend,
        "format": model.format,
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
