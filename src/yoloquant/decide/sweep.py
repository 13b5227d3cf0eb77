"""Config sweeps: a grid of pipeline variants, resumable, timed together, with a Pareto report.

Each variant runs as its own one-variant pipeline in ``<out>/<name>/`` (FP32 once, as ``fp32``, and once
more on each other backend of the grid, as ``fp32-<backend>``), through an executor
(:mod:`yoloquant.decide.executor`: :class:`LocalExecutor` by default, in this process, in order). The
sweep is the driver: when a variant finishes, it writes one line to ``<out>/ledger.jsonl`` (flushed and
fsync'd), so a sweep killed at any point, even with ``kill -9``, resumes without redoing or losing a
finished variant. Latency is measured last, for every variant in one interleaved run, each on its own
backend (``yoloquant.backends``), so all ratios come from the same machine state. The sweep folder then
gets the pipeline's ``report.json`` / ``report.md`` (FP32 first, every variant with its interleaved
latency) with a ``sweep`` section: the grid, the Pareto front of latency vs mAP, a recommendation under
constraints and the Python and CLI calls that reproduce it; plus ``pareto.png``.
``PipelineResult.load(<out>)`` and ``yoloquant show <out>`` read it.

Backends: a variant is compared only with variants on its own backend. Its speedup, its mAP drop and its
paired delta are against FP32 on that backend (``fp32`` for ``ort-cpu``, ``fp32-openvino`` ...), and
each backend has its own Pareto front and recommendation (``by_backend`` in the section, when the grid has
more than one): a latency ratio across runtimes says which runtime to deploy on, not which quantization
to ship, and the paired latency and accuracy tests need a common reference. The top-level ``pareto`` /
``recommended`` are those of the first grid variant's backend (``ort-cpu`` by default).

Example:
    >>> base = (QuantPipeline.from_ultralytics("yolov8n.pt").calibrate("coco/images", num_images=64)
    ...         .evaluate("coco.yaml", num_images=64, offset=64))  # doctest: +SKIP
    >>> sweep = Sweep(base).grid(calibration_method=["minmax", "entropy"], calib_images=[32, 64],
    ...                          keep_float=["decode", "head"])
    >>> result = sweep.run("runs/sweep", recommend_max_drop=0.5, recommend_min_speedup=1.5)  # doctest: +SKIP
    >>> print(result.report.table(), result.recommended_call)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from yoloquant._rundir import RunFolder
from yoloquant.artifacts import file_sha256
from yoloquant.config import Backend, BenchConfig, parse_enum
from yoloquant.decide import sweep_calls
from yoloquant.decide.executor import (
    Executor,
    LocalExecutor,
    Runner,
    VariantJob,
    VariantRun,
    closing_map,
    run_job,
    run_plan,
)
from yoloquant.decide.ledger import Ledger
from yoloquant.decide.pareto import Candidate
from yoloquant.decide.sweep_latency import timing_record
from yoloquant.decide.sweep_progress import FailureLog, SweepProgress, export_once
from yoloquant.decide.sweep_result import (
    _DEFAULT,
    SweepResult,
    SweepRow,
    _check_base,
    _config_dict,
    _decide,
    _entry,
    _inputs,
    _paired,
    _row,
    _value,
    _variant,
    baseline_name,
)
from yoloquant.errors import ConfigError
from yoloquant.eval.bootstrap import Metric
from yoloquant.pipeline import BASELINE, CalibrationPlan, EvalPlan, QuantPipeline
from yoloquant.report.result import PipelineResult, TaskRecord
from yoloquant.versions import package_versions
from yoloquant.vocabulary import renamed_keywords

__all__ = ["Runner", "Sweep", "SweepResult", "SweepRow", "SweepVariant", "baseline_name"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SweepVariant:
    """One point of the grid; None means the base pipeline's choice.

    ``backend`` is where the variant is evaluated and timed (``QuantPipeline.quantize(backend=...)``); the
    default, ``ort-cpu``, adds nothing to the name or the recorded parameters.
    """

    quantizer: str = "ort"
    calibration_method: str | None = None
    calib_images: int | None = None
    keep_float: str | None = None
    backend: str = _DEFAULT

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", parse_enum(Backend, self.backend, option="backend").value)

    @property
    def name(self) -> str:
        parts = [self.quantizer, self.calibration_method, f"n{self.calib_images}" if self.calib_images else None]
        parts.append(f"keep-{self.keep_float}" if self.keep_float else None)
        parts.append(self.backend if self.backend != _DEFAULT else None)
        return "int8-" + "-".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.backend == _DEFAULT:
            del d["backend"]  # a one-backend sweep's ledger and grid read as before the axis existed
        return d


@dataclass(frozen=True)
class Sweep:
    """A base pipeline (model, calibration source, evaluation set) and the variants to try on it.

    Example:
        >>> from yoloquant import QuantPipeline
        >>> base = QuantPipeline.from_onnx("m.onnx").calibrate("imgs").evaluate("coco.yaml")
        >>> len(Sweep(base).grid(calibration_method=["minmax", "entropy"], keep_float=["decode", "head"]).variants)
        4
    """

    base: QuantPipeline
    variants: tuple[SweepVariant, ...] = ()
    progress: bool = True  # one bar over the variants and one over the latency rounds (the base's bars are its own)
    executor: Executor = field(default_factory=LocalExecutor)  # where the variants run; the sweep writes the ledger
    keep_going: bool = False  # a failed grid variant goes to failed.jsonl and the sweep goes on (a baseline stops it)

    @renamed_keywords(num_images="calib_images")
    def grid(
        self,
        *,
        quantizer: Iterable[str] = ("ort",),
        calibration_method: Iterable[str | None] = (None,),
        calib_images: Iterable[int | None] = (None,),
        keep_float: Iterable[str | None] = (None,),
        backend: Iterable[str] = (_DEFAULT,),
    ) -> Sweep:
        """Add every combination (a new Sweep; duplicates by name are dropped)."""
        axes = itertools.product(quantizer, calibration_method, calib_images, keep_float, backend)
        new = [
            SweepVariant(quantizer=q, calibration_method=c, calib_images=n, keep_float=k, backend=b)
            for q, c, n, k, b in axes
        ]
        unique = {v.name: v for v in (*self.variants, *new)}
        for v in unique.values():
            self.plan(v)  # validate now, not halfway through the sweep
        return dataclasses.replace(self, variants=tuple(unique.values()))

    def _parts(self) -> tuple[CalibrationPlan, EvalPlan]:
        cal, ev = self.base.calibration, self.base.evaluation
        if cal is None or ev is None:
            msg = "a sweep's base pipeline needs .calibrate(...) and .evaluate(...): variants are compared on mAP"
            raise ConfigError(msg)
        if self.base.sensitivity is not None:
            msg = "a sweep's base pipeline must not .analyze_sensitivity(...): run the analysis once, on its own"
            raise ConfigError(msg)
        return cal, ev

    def plan(self, variant: SweepVariant) -> QuantPipeline:
        """The one-variant pipeline of ``variant`` (no benchmark: timing happens once, at the end)."""
        cal, _ = self._parts()
        p = self.base.calibrate(
            cal.source, num_images=variant.calib_images or cal.num_images, offset=cal.offset, split=cal.split
        )
        p = dataclasses.replace(p, variants=(), bench=None)
        return p.quantize(
            "int8",
            backend=variant.backend,
            quantizer=variant.quantizer,
            calibration_method=variant.calibration_method,
            keep_float=variant.keep_float,
            name=variant.name,
        )

    def baseline_plan(self, backend: str = _DEFAULT) -> QuantPipeline:
        """The FP32 pipeline of ``backend``'s baseline (:func:`baseline_name`), without a benchmark."""
        self._parts()
        if backend == _DEFAULT:
            return dataclasses.replace(self.base, variants=(BASELINE,), bench=None)
        p = dataclasses.replace(self.base, variants=(), bench=None)
        return p.quantize("fp32", backend=backend, name=baseline_name(backend))

    def backends(self) -> tuple[str, ...]:
        """The backends with an FP32 baseline: ``ort-cpu`` (the report's baseline) first, then the grid's."""
        return tuple(dict.fromkeys([_DEFAULT, *(v.backend for v in self.variants)]))

    def python_call(
        self, variant: SweepVariant | None, out_dir: str = "runs/yoloquant", *, backend: str = _DEFAULT
    ) -> str:
        """The exact ``QuantPipeline`` call that makes and measures ``variant`` (None: FP32 only, on ``backend``)."""
        return sweep_calls.python_call(self.base, self._parts(), variant, out_dir, backend)

    def cli_call(
        self, variant: SweepVariant | None, out_dir: str = "runs/yoloquant", *, backend: str = _DEFAULT
    ) -> str | None:
        """The ``yoloquant run`` command that makes and measures ``variant``; None if options lack a flag."""
        return sweep_calls.cli_call(self.base, self._parts(), variant, out_dir, backend)

    def fingerprint(self) -> str:
        """Hash of the base plan minus its variants: a ledger from another base must not be resumed."""
        d = self.base.to_dict()
        d.pop("variants", None)
        d.pop("benchmark", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @renamed_keywords(max_map_drop="recommend_max_drop", min_speedup="recommend_min_speedup")
    def run(
        self,
        out_dir: str | Path,
        *,
        bench: BenchConfig | None = None,
        recommend_max_drop: float | None = None,
        recommend_min_speedup: float | None = None,
        runner: Runner | None = None,
    ) -> SweepResult:
        """Run every variant not yet in the ledger, time FP32 and the grid interleaved, write the report.

        Writes ``<out>/report.json`` (the pipeline's format with a ``sweep`` section), ``report.md`` and
        ``pareto.png``. Ledger entries outside the grid (an earlier, wider grid on the same base) stay in
        the ledger but not in the report.

        Args:
            out_dir: The sweep folder; rerun with the same folder to resume.
            bench: Latency settings of the final interleaved phase; default 30 iterations at batch 1.
            recommend_max_drop / recommend_min_speedup: Constraints of the recommendation (points and x vs
                FP32); not an accuracy budget (``quantize(max_map_drop=)``), a filter on the measured variants.
            runner: Runs one plan into a folder; default ``plan.run(folder)`` (:func:`~.executor.run_plan`).
                The executor runs it, so a remote executor needs a picklable one.
        """
        start = time.perf_counter()
        out = Path(out_dir).absolute()  # the report's paths are absolute: it loads from any working directory
        wanted = {*map(baseline_name, self.backends()), *(v.name for v in self.variants)}
        with RunFolder(out) as folder:  # locked; the old report goes first, the new one is written last
            folder.lock()
            # the ledger may also hold variants of an earlier, wider grid on the same base: not reported
            entries = {n: e for n, e in self.run_variants(out, runner=runner).items() if n in wanted}
            bench = bench or BenchConfig(iterations=30, warmup=5)
            latency = self.measure_latency(out, entries, bench)
            result = self.result(
                entries,
                latency,
                recommend_max_drop=recommend_max_drop,
                recommend_min_speedup=recommend_min_speedup,
                out_dir=out,
                bench=bench,
                seconds=time.perf_counter() - start,
                failed=FailureLog(out).missing(entries, wanted),
            )
            result.save(out)
        return result

    def run_variants(self, out: Path, *, runner: Runner | None = None) -> dict[str, dict[str, Any]]:
        """Phase 1: make and evaluate each variant not yet in the ledger, on the executor; returns every entry.

        The FP32 baselines run first, then the grid: each variant's ledger line holds its paired delta vs
        its backend's FP32 entry. A variant that fails (on every retry of the executor) is written to
        ``failed.jsonl`` with its error; it stops the sweep (its error is raised here) unless ``keep_going``
        and it is a grid variant. Every line written before stays, so a rerun resumes (and retries failures).
        """
        ledger = Ledger(out / "ledger.jsonl")
        ledger.repair()
        done = ledger.entries()
        fingerprint = self.fingerprint()
        _check_base(done, fingerprint, out)
        model = export_once(self.base.model, self.base.export_config, out)
        jobs = self._jobs(out, model)
        for job in jobs:
            if job.name in done:
                log.info("sweep: %s already in the ledger, skipped", job.name)
        todo = [j for j in jobs if j.name not in done]
        slots = int(getattr(self.executor, "parallelism", 1)) if todo else 1  # an optional Executor member
        bar = SweepProgress(total=len(jobs), done=len(jobs) - len(todo), parallelism=slots, enabled=self.progress)
        work = partial(run_job, runner or run_plan)
        try:
            for wave in ([j for j in todo if j.variant is None], [j for j in todo if j.variant is not None]):
                bar.wave(len(wave))
                for job, run in closing_map(self.executor, work, wave):
                    if isinstance(run, Exception):
                        FailureLog(out).record(job, run, fingerprint=fingerprint)
                        bar.finished(job.name, ok=False)
                        if not self.keep_going or job.variant is None:  # nothing is compared without a baseline
                            raise run
                        continue
                    done[job.name] = self._record(
                        ledger=ledger, job=job, run=run, fingerprint=fingerprint, model=model, done=done
                    )
                    bar.finished(job.name, ok=True)
        finally:
            bar.close()
        return done

    def _jobs(self, out: Path, model: Path) -> list[VariantJob]:
        """The baselines and the grid as jobs, each starting from ``model`` (the sweep's ONNX file)."""
        plans: list[tuple[str, QuantPipeline, SweepVariant | None]] = [
            (baseline_name(b), self.baseline_plan(b), None) for b in self.backends()
        ]
        plans += [(v.name, self.plan(v), v) for v in self.variants]
        return [
            VariantJob(name=n, plan=dataclasses.replace(p, model=model), folder=out / n, variant=v) for n, p, v in plans
        ]

    def _record(
        self,
        *,
        ledger: Ledger,
        job: VariantJob,
        run: VariantRun,
        fingerprint: str,
        model: Path,
        done: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        """Write ``job``'s ledger line (the driver does, never a worker) and return it."""
        entry = _entry(run.result, job.name, job.variant, run.seconds)
        if job.variant is None and self.base.model != model:  # the .pt the user gave, not its export
            entry["inputs"]["model"] = {"path": str(self.base.model), "sha256": file_sha256(self.base.model)}
        backend = job.plan.variants[-1].backend.value
        entry.update(base=fingerprint, python=self.python_call(job.variant, f"runs/{job.name}", backend=backend))
        ref = baseline_name(backend)
        if job.name != ref and ref in done:  # paired: same evaluation images and seed as the FP32 entry
            entry["delta_vs_fp32"] = {k: m.to_dict() for k, m in _paired(entry, done[ref]).items()}
        ledger.append(entry)
        return entry

    def measure_latency(
        self, out: Path, entries: dict[str, dict[str, Any]], bench: BenchConfig
    ) -> dict[str, dict[str, Any]]:
        """Phase 2: time every entry's model in one interleaved run, each on its own backend
        (:func:`yoloquant.decide.sweep_latency.measure_latency`, cached in ``latency.json``)."""
        from yoloquant.decide.sweep_latency import eval_input, measure_latency

        return measure_latency(
            out,
            entries,
            bench,
            inputs=partial(eval_input, self.base.evaluation),
            progress=self.progress,
            place=getattr(self.executor, "run_timing", None),  # optional Executor members (executor.py)
            resources=getattr(self.executor, "timing_resources", None),
        )

    def _candidate(
        self, name: str, entry: dict[str, Any], timing: dict[str, Any], variant: SweepVariant | None, metric: str
    ) -> Candidate:
        reps = (entry.get("replicates") or {}).get(metric)
        return Candidate(
            name=name,
            accuracy=_value(entry, metric),
            replicates=np.asarray(reps, np.float64) if reps else None,
            latency_ms=tuple(float(x) for x in timing.get("samples_ms") or [timing["p50"]]),
            simplicity=self.simplicity(variant, entry),
            baseline=variant is None,
        )

    def simplicity(self, variant: SweepVariant | None, entry: dict[str, Any]) -> tuple[float, ...]:
        """``(options changed from the quantizer's defaults, float nodes)``: lower is simpler.

        An option counts as changed when the variant's quantizer config differs from the one
        ``quantize("int8", quantizer=..., backend=...)`` makes without options (per config field), or when its
        calibration image count differs from the base pipeline's.
        """
        if variant is None:
            return (0.0, 0.0)
        cal, _ = self._parts()
        mine = self.plan(variant).variants[-1].quantizer
        default = self.plan(SweepVariant(quantizer=variant.quantizer, backend=variant.backend)).variants[-1].quantizer
        a, b = _config_dict(mine), _config_dict(default)
        changed = sum(a.get(k) != b.get(k) for k in set(a) | set(b))
        changed += variant.calib_images not in (None, cal.num_images)
        quant = (entry.get("variant") or {}).get("quantization") or {}
        floats = sum((quant.get("float_counts") or {}).values())
        return (float(changed), float(floats))

    @renamed_keywords(max_map_drop="recommend_max_drop", min_speedup="recommend_min_speedup")
    def result(
        self,
        entries: dict[str, dict[str, Any]],
        latency: dict[str, dict[str, Any]],
        *,
        recommend_max_drop: float | None,
        recommend_min_speedup: float | None,
        out_dir: Path,
        bench: BenchConfig | None = None,
        seconds: float = 0.0,
        failed: dict[str, dict[str, Any]] | None = None,
    ) -> SweepResult:
        """Phase 3: rows, Pareto fronts, recommendations and the report, from the ledger and the timings.

        Each variant is compared with FP32 on its own backend (module docstring); the section's top-level
        front and pick are those of the first grid variant's backend, ``by_backend`` holds each backend's.
        ``failed``: the variants whose last try failed (``failed.jsonl``), listed in the section.
        """
        grid = {v.name: v for v in self.variants if v.name in entries}
        backend_of = {baseline_name(b): b for b in dict.fromkeys([_DEFAULT, *(v.backend for v in grid.values())])}
        names = [*backend_of, *grid]
        backend_of |= {n: v.backend for n, v in grid.items()}
        ref = {n: baseline_name(backend_of[n]) for n in names}
        task = TaskRecord.from_dict(entries[names[0]].get("task") or {})  # ledgers written before it: detection
        metric = task.primary_metric
        deltas = {n: _paired(entries[n], entries[ref[n]]) for n in names if ref[n] != n}
        rows = {n: _row(n, entries, latency, ref[n], deltas.get(n, {}).get(metric), task=task) for n in names}
        cands = {n: self._candidate(n, entries[n], latency[n], grid.get(n), metric) for n in names}
        constraints = {"recommend_max_drop": recommend_max_drop, "recommend_min_speedup": recommend_min_speedup}
        decided = {
            b: {**_decide([n for n in names if backend_of[n] == b], rows, cands, constraints), "recommended_call": None}
            for b in dict.fromkeys(backend_of.values())
        }
        for b, d in decided.items():
            d["recommended_call"] = self._call(d["recommended"], grid, b)
        primary = next(iter(grid.values())).backend if grid else _DEFAULT
        section = {
            "grid": [{"name": v.name, **v.to_dict()} for v in self.variants],
            "ledger": str(out_dir / "ledger.jsonl"),
            "latency": str(out_dir / "latency.json"),
            "pareto_plot": str(out_dir / "pareto.png"),
            "constraints": constraints,
            **decided[primary],
            "variant_seconds": {r.name: r.seconds for r in rows.values()},
            "failed": {n: e["error"] for n, e in (failed or {}).items()},
            "timing": timing_record(out_dir),
            **({"by_backend": decided} if len(decided) > 1 else {}),
        }
        report = self._report(
            names=names,
            backend_of=backend_of,
            entries=entries,
            latency=latency,
            deltas=deltas,
            section=section,
            out_dir=out_dir,
            bench=bench,
            seconds=seconds,
            task=task,
        )
        return SweepResult(rows=tuple(rows.values()), report=report)

    def _call(self, pick: str | None, grid: dict[str, SweepVariant], backend: str) -> dict[str, str | None] | None:
        """The Python and CLI calls that reproduce ``pick`` (a grid variant or ``backend``'s FP32)."""
        if pick is None:
            return None
        chosen, folder = grid.get(pick), f"runs/{pick}"
        return {
            "python": self.python_call(chosen, folder, backend=backend),
            "cli": self.cli_call(chosen, folder, backend=backend),
        }

    def _report(
        self,
        *,
        names: list[str],
        backend_of: dict[str, str],
        entries: dict[str, dict[str, Any]],
        latency: dict[str, dict[str, Any]],
        deltas: dict[str, dict[str, Metric]],
        section: dict[str, Any],
        out_dir: Path,
        bench: BenchConfig | None,
        seconds: float,
        task: TaskRecord,
    ) -> PipelineResult:
        """The sweep folder's pipeline report: each variant as its own run measured it, timed interleaved."""
        grid = {v.name: v for v in self.variants}
        plans = tuple(
            self.plan(grid[n]).variants[-1] if n in grid else self.baseline_plan(backend_of[n]).variants[-1]
            for n in names
        )
        return PipelineResult(
            variants=tuple(
                dataclasses.replace(
                    _variant(entries[n], latency[n], latency[baseline_name(backend_of[n])]),
                    delta_vs_fp32=deltas.get(n, {}),
                )
                for n in names
            ),
            config=dataclasses.replace(self.base, variants=plans, bench=bench).to_dict(),
            versions=package_versions(),
            inputs=_inputs(entries, names),
            out_dir=str(out_dir),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            seconds=seconds,
            warnings=tuple(dict.fromkeys(w for n in names for w in entries[n].get("warnings", ()))),
            sweep=section,
            task=task,
        )
