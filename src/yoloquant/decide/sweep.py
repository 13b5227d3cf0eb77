"""Config sweeps: a grid of pipeline variants, resumable, timed together, with a Pareto report.

Each variant runs as its own one-variant pipeline in ``<out>/<name>/`` (FP32 once, as ``fp32``).
When it finishes, one line goes to ``<out>/ledger.jsonl`` (flushed and fsync'd), so a sweep killed
at any point, even with ``kill -9``, resumes without redoing or losing a finished variant. Latency is
measured last, for every variant in one interleaved run, so all ratios come from the same machine
state. The sweep folder then gets the pipeline's ``report.json`` / ``report.md`` (FP32 first, every
variant with its interleaved latency) with a ``sweep`` section: the grid, the Pareto front of latency
vs mAP, a recommendation under constraints and the Python and CLI calls that reproduce it; plus
``pareto.png``. ``PipelineResult.load(<out>)`` and ``yoloquant show <out>`` read it.

Example:
    >>> base = (QuantPipeline.from_ultralytics("yolov8n.pt").calibrate("coco/images", num_images=64)
    ...         .evaluate("coco.yaml", num_images=64, offset=64))  # doctest: +SKIP
    >>> sweep = Sweep(base).grid(calibration=["minmax", "entropy"], num_images=[32, 64], keep=["none", "head"])
    >>> result = sweep.run("runs/sweep", max_map_drop=0.5, min_speedup=1.5)  # doctest: +SKIP
    >>> print(result.report.table(), result.recommended_call)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from yoloquant._io import atomic_write_text
from yoloquant._optional import require
from yoloquant._rundir import RunFolder
from yoloquant.artifacts import file_sha256
from yoloquant.config import BenchConfig, EvalConfig, ExportConfig
from yoloquant.decide.ledger import Ledger
from yoloquant.decide.pareto import Candidate, Point, pareto_front, recommend_within_noise, resolved_steps
from yoloquant.decide.sweep_result import (
    _RULE,
    FP32,
    SweepResult,
    SweepRow,
    _config_dict,
    _entry,
    _inputs,
    _noise_section,
    _paired,
    _variant,
    metric_value,
)
from yoloquant.errors import ConfigError
from yoloquant.pipeline import BASELINE, CalibrationPlan, EvalPlan, QuantPipeline
from yoloquant.report.result import PipelineResult, TaskRecord
from yoloquant.versions import package_versions

__all__ = ["Runner", "Sweep", "SweepResult", "SweepRow", "SweepVariant"]

log = logging.getLogger(__name__)

Runner = Callable[[QuantPipeline, Path], PipelineResult]


@dataclass(frozen=True, kw_only=True)
class SweepVariant:
    """One point of the grid; None means the base pipeline's choice."""

    quantizer: str = "ort"
    calibration: str | None = None
    num_images: int | None = None
    keep: str | None = None

    @property
    def name(self) -> str:
        parts = [self.quantizer, self.calibration, f"n{self.num_images}" if self.num_images else None]
        parts.append(f"keep-{self.keep}" if self.keep else None)
        return "int8-" + "-".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _r(value: Any) -> str:
    return repr(str(value)) if isinstance(value, Path) else repr(value)


@dataclass(frozen=True)
class Sweep:
    """A base pipeline (model, calibration source, evaluation set) and the variants to try on it.

    Example:
        >>> from yoloquant import QuantPipeline
        >>> base = QuantPipeline.from_onnx("m.onnx").calibrate("imgs").evaluate("coco.yaml")
        >>> len(Sweep(base).grid(calibration=["minmax", "entropy"], keep=["none", "head"]).variants)
        4
    """

    base: QuantPipeline
    variants: tuple[SweepVariant, ...] = ()
    progress: bool = True  # one bar over the variants and one over the latency rounds (the base's bars are its own)

    def grid(
        self,
        *,
        quantizer: Iterable[str] = ("ort",),
        calibration: Iterable[str | None] = (None,),
        num_images: Iterable[int | None] = (None,),
        keep: Iterable[str | None] = (None,),
    ) -> Sweep:
        """Add every combination (a new Sweep; duplicates by name are dropped)."""
        new = [
            SweepVariant(quantizer=q, calibration=c, num_images=n, keep=k)
            for q, c, n, k in itertools.product(quantizer, calibration, num_images, keep)
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
            cal.source, num_images=variant.num_images or cal.num_images, offset=cal.offset, split=cal.split
        )
        p = dataclasses.replace(p, variants=(), bench=None)
        return p.quantize(
            "int8", quantizer=variant.quantizer, calibration=variant.calibration, keep=variant.keep, name=variant.name
        )

    def baseline_plan(self) -> QuantPipeline:
        self._parts()
        return dataclasses.replace(self.base, variants=(BASELINE,), bench=None)

    def python_call(self, variant: SweepVariant | None, out_dir: str = "runs/yoloquant") -> str:
        """The exact ``QuantPipeline`` call that makes and measures ``variant`` (None: FP32 only)."""
        b, (cal, ev) = self.base, self._parts()
        e = b.export_config
        if b.model.suffix == ".pt":
            start = (
                f"QuantPipeline.from_ultralytics({_r(b.model)}, imgsz={e.imgsz}, opset={e.opset}, dynamic={e.dynamic})"
            )
        else:
            start = f"QuantPipeline.from_onnx({_r(b.model)})"
        lines = [start]
        if variant is not None:
            n = variant.num_images or cal.num_images
            lines.append(f".calibrate({_r(cal.source)}, num_images={n}, offset={cal.offset}, split={cal.split!r})")
            args = [f"quantizer={variant.quantizer!r}"]
            args += [f"calibration={variant.calibration!r}"] if variant.calibration else []
            args += [f"keep={variant.keep!r}"] if variant.keep else []
            lines.append(f".quantize('int8', {', '.join(args)})")
        c = ev.config
        lines.append(
            f".evaluate({_r(ev.source)}, split={ev.split!r}, num_images={c.num_images}, offset={ev.offset}, "
            f"conf={c.conf}, iou={c.iou}, max_det={c.max_det})"
        )
        lines += [".benchmark(batch_sizes=(1,))", f".run({out_dir!r})"]
        return "(\n    " + "\n    ".join(lines) + "\n)"

    def cli_call(self, variant: SweepVariant | None, out_dir: str = "runs/yoloquant") -> str | None:
        """The ``yoloquant run`` command that makes and measures ``variant``; None if options lack a flag."""
        b, (cal, ev) = self.base, self._parts()
        e = b.export_config
        if (
            e != ExportConfig(imgsz=e.imgsz)
            or cal.split != "train"
            or ev.config != EvalConfig(num_images=ev.config.num_images)
        ):
            return None  # export / calibration-split / eval settings that `yoloquant run` has no option for
        args = ["yoloquant", "run", "--model", str(b.model), "--imgsz", str(e.imgsz)]
        args += ["--eval", str(ev.source), "--eval-offset", str(ev.offset), "--split", ev.split]
        args += ["--eval-images", str(ev.config.num_images)] if ev.config.num_images else []
        if variant is None:
            args += ["--precisions", "fp32"]
        else:
            n = variant.num_images or cal.num_images
            args += ["--calib", str(cal.source), "--calib-images", str(n), "--calib-offset", str(cal.offset)]
            args += ["--precisions", "fp32,int8", "--quantizer", variant.quantizer]
            args += ["--calibration", variant.calibration] if variant.calibration else []
            args += ["--keep", variant.keep] if variant.keep else []
        return shlex.join([*args, "--out", out_dir])

    def fingerprint(self) -> str:
        """Hash of the base plan minus its variants: a ledger from another base must not be resumed."""
        d = self.base.to_dict()
        d.pop("variants", None)
        d.pop("benchmark", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def run(
        self,
        out_dir: str | Path,
        *,
        bench: BenchConfig | None = None,
        max_map_drop: float | None = None,
        min_speedup: float | None = None,
        runner: Runner | None = None,
    ) -> SweepResult:
        """Run every variant not yet in the ledger, time FP32 and the grid interleaved, write the report.

        Writes ``<out>/report.json`` (the pipeline's format with a ``sweep`` section), ``report.md`` and
        ``pareto.png``. Ledger entries outside the grid (an earlier, wider grid on the same base) stay in
        the ledger but not in the report.

        Args:
            out_dir: The sweep folder; rerun with the same folder to resume.
            bench: Latency settings of the final interleaved phase; default 30 iterations at batch 1.
            max_map_drop / min_speedup: Constraints of the recommendation (points vs FP32, x vs FP32).
            runner: Runs one plan into a folder; default ``plan.run(folder)``.
        """
        start = time.perf_counter()
        out = Path(out_dir).absolute()  # the report's paths are absolute: it loads from any working directory
        wanted = {FP32, *(v.name for v in self.variants)}
        with RunFolder(out) as folder:  # locked; the old report goes first, the new one is written last
            folder.lock()
            # the ledger may also hold variants of an earlier, wider grid on the same base: not reported
            entries = {n: e for n, e in self.run_variants(out, runner=runner).items() if n in wanted}
            bench = bench or BenchConfig(iterations=30, warmup=5)
            latency = self.measure_latency(out, entries, bench)
            result = self.result(
                entries,
                latency,
                max_map_drop=max_map_drop,
                min_speedup=min_speedup,
                out_dir=out,
                bench=bench,
                seconds=time.perf_counter() - start,
            )
            result.save(out)
        return result

    def run_variants(self, out: Path, *, runner: Runner | None = None) -> dict[str, dict[str, Any]]:
        """Phase 1: make and evaluate each variant not yet in the ledger; returns every ledger entry."""
        run_one: Runner = runner or (lambda plan, folder: plan.run(folder))
        ledger = Ledger(out / "ledger.jsonl")
        ledger.repair()
        done = ledger.entries()
        fingerprint = self.fingerprint()
        stale = [n for n, e in done.items() if e.get("base") != fingerprint]
        if stale:
            msg = f"{out} holds a sweep of another base pipeline ({stale[:3]}...); use a new output folder"
            raise ConfigError(msg)
        base = self._exported(out)
        todo: list[tuple[str, QuantPipeline, SweepVariant | None]] = [(FP32, self.baseline_plan(), None)]
        todo += [(v.name, self.plan(v), v) for v in self.variants]
        tqdm = require("tqdm").tqdm
        bar = tqdm(todo, desc="sweep", unit="variant", disable=not self.progress)
        for name, plan, variant in bar:
            bar.set_postfix_str(name)
            if name in done:
                log.info("sweep: %s already in the ledger, skipped", name)
                continue
            t0 = time.perf_counter()
            result = run_one(dataclasses.replace(plan, model=base), out / name)
            entry = _entry(result, name, variant, time.perf_counter() - t0)
            if variant is None and self.base.model != base:  # the .pt the user gave, not its export
                entry["inputs"]["model"] = {"path": str(self.base.model), "sha256": file_sha256(self.base.model)}
            entry.update(base=fingerprint, python=self.python_call(variant, f"runs/{name}"))
            if name != FP32 and FP32 in done:  # paired: same evaluation images and seed as the FP32 entry
                entry["delta_vs_fp32"] = {k: m.to_dict() for k, m in _paired(entry, done[FP32]).items()}
            ledger.append(entry)
            done[name] = entry
        return done

    def _exported(self, out: Path) -> Path:
        """Export a ``.pt`` once for the whole sweep; variants start from the ONNX file."""
        if self.base.model.suffix != ".pt":
            return self.base.model
        from yoloquant.export import exporter_for

        stem = self.base.model.stem
        onnx = out / "export" / f"{stem}-fp32.onnx"
        if not onnx.is_file():
            exporter_for(self.base.model, self.base.export_config).export(self.base.model, out / "export")
        return onnx

    def measure_latency(
        self, out: Path, entries: dict[str, dict[str, Any]], bench: BenchConfig
    ) -> dict[str, dict[str, Any]]:
        """Phase 2: time every entry's model in one interleaved run.

        Cached in ``latency.json`` under the timed models and the benchmark settings: a rerun with other
        iterations, warmup, threads or batch sizes times again.
        """
        path = out / "latency.json"
        key = {"bench": bench.to_dict(), "models": {n: str(e["model_path"]) for n, e in sorted(entries.items())}}
        if path.is_file():
            cached: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            if cached.get("key") == json.loads(json.dumps(key)):
                return dict(cached["latency"])
        from contextlib import ExitStack

        from yoloquant.artifacts import OnnxModel
        from yoloquant.backends.ort import OrtEngineBuilder
        from yoloquant.bench.latency import benchmark_interleaved

        builder = OrtEngineBuilder(threads=bench.threads)
        with ExitStack() as stack:
            engines = {
                n: stack.enter_context(builder.build(OnnxModel.load(e["model_path"]))) for n, e in entries.items()
            }
            timed = benchmark_interleaved(engines, bench, inputs=self._input(engines), progress=self.progress)
        latency = {n: r[0].to_dict() for n, r in timed.items()}
        atomic_write_text(path, json.dumps({"key": key, "latency": latency}, indent=1) + "\n")
        return latency

    def _input(self, engines: dict[str, Any]) -> Any:
        from yoloquant.data.datasets import load_dataset
        from yoloquant.data.images import read_image
        from yoloquant.data.letterbox import normalize_pixels, preprocess

        _, ev = self._parts()
        image = load_dataset(ev.source, split=ev.split, labels=False).select(1, ev.offset).images[0]
        chw, _ = preprocess(read_image(image), next(iter(engines.values())).info.imgsz[0])
        return normalize_pixels(chw[None])

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
        ``quantize("int8", quantizer=...)`` makes without options (per config field), or when its
        calibration image count differs from the base pipeline's.
        """
        if variant is None:
            return (0.0, 0.0)
        cal, _ = self._parts()
        mine = self.plan(variant).variants[-1].quantizer
        default = self.plan(SweepVariant(quantizer=variant.quantizer)).variants[-1].quantizer
        a, b = _config_dict(mine), _config_dict(default)
        changed = sum(a.get(k) != b.get(k) for k in set(a) | set(b))
        changed += variant.num_images not in (None, cal.num_images)
        quant = (entry.get("variant") or {}).get("quantization") or {}
        floats = sum((quant.get("float_counts") or {}).values())
        return (float(changed), float(floats))

    def result(
        self,
        entries: dict[str, dict[str, Any]],
        latency: dict[str, dict[str, Any]],
        *,
        max_map_drop: float | None,
        min_speedup: float | None,
        out_dir: Path,
        bench: BenchConfig | None = None,
        seconds: float = 0.0,
    ) -> SweepResult:
        """Phase 3: rows, Pareto front, recommendation and the report, from the ledger and the timings."""
        grid = {v.name: v for v in self.variants if v.name in entries}
        names = [FP32, *grid]
        fp32, base_ms = entries[FP32], float(latency[FP32]["p50"])
        task = TaskRecord.from_dict(fp32.get("task") or {})  # ledgers written before it: detection
        metric = task.primary_metric
        deltas = {n: _paired(entries[n], fp32) for n in names[1:]}
        rows = tuple(
            SweepRow(
                name=n,
                params=entries[n].get("params") or {},
                metrics={k: v for k in task.metrics if (v := metric_value(entries[n], k)) is not None},
                metric=metric,
                latency_ms=float(latency[n]["p50"]),
                speedup=base_ms / float(latency[n]["p50"]),
                drop=(_value(fp32, metric) - _value(entries[n], metric)) * 100,
                model_path=str(entries[n]["model_path"]),
                seconds=float(entries[n].get("seconds", 0.0)),
                delta_vs_fp32=deltas.get(n, {}).get(metric),
            )
            for n in names
        )
        points = [Point(r.name, r.latency_ms, r.accuracy) for r in rows]
        cands = {n: self._candidate(n, entries[n], latency[n], grid.get(n), metric) for n in names}
        by_name = {r.name: r for r in rows}

        def qualifies(c: Candidate) -> bool:
            r = by_name[c.name]  # constraints on the point values (see docs/decide.md)
            return (max_map_drop is None or r.drop <= max_map_drop + 1e-9) and (
                min_speedup is None or r.speedup >= min_speedup - 1e-9
            )

        rec = recommend_within_noise(list(cands.values()), qualifies)
        pick = by_name[rec.pick] if rec.pick else None
        front = pareto_front(points)
        call = None
        if pick is not None:
            chosen = grid.get(pick.name)
            call = {
                "python": self.python_call(chosen, f"runs/{pick.name}"),
                "cli": self.cli_call(chosen, f"runs/{pick.name}"),
            }
        section = {
            "grid": [{"name": v.name, **v.to_dict()} for v in self.variants],
            "ledger": str(out_dir / "ledger.jsonl"),
            "latency": str(out_dir / "latency.json"),
            "pareto_plot": str(out_dir / "pareto.png"),
            "constraints": {"max_map_drop": max_map_drop, "min_speedup": min_speedup},
            "pareto": [p.name for p in front],
            "pareto_resolved": dict(
                zip([p.name for p in front], resolved_steps([cands[p.name] for p in front]), strict=True)
            ),
            "recommended": pick.name if pick else None,
            "rule": _RULE,
            **_noise_section(rec, cands),
            "recommended_call": call,
            "variant_seconds": {r.name: r.seconds for r in rows},
        }
        plans = (BASELINE, *(self.plan(v).variants[-1] for v in grid.values()))
        report = PipelineResult(
            variants=tuple(
                dataclasses.replace(_variant(entries[n], latency[n], latency[FP32]), delta_vs_fp32=deltas.get(n, {}))
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
        return SweepResult(rows=rows, report=report)


def _value(entry: dict[str, Any], metric: str) -> float:
    """A ledger entry's value of the ranking metric (every finished entry was evaluated)."""
    value = metric_value(entry, metric)
    if value is None:
        msg = f"ledger entry {entry.get('name')!r} has no {metric!r}; run the sweep into a new output folder"
        raise ConfigError(msg)
    return value
