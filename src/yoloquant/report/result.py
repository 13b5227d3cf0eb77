"""``VariantResult`` and ``PipelineResult``: the numbers of a run, as data.

``report.json`` is a stable contract read by other tools (see docs/report-format.md): a list
``variants`` with ``name``, ``precision``, ``backend``, ``map50_95``, ``map50``, ``latency_ms``
(``batch``, ``p50``, ``p90``, ``p99``), ``speedup_vs_fp32``, ``size_bytes``, ``model_path``; plus
``config``, ``versions`` and ``inputs`` (hashes). A sweep folder's report adds a ``sweep`` section, a
run that analyzed INT8 sensitivity a ``sensitivity`` section; ``task`` names the task, its metric names
and its primary metric. Older reports without these sections still load (without ``task``: detection).
``files`` records the sha256 and size of every file the report describes; ``load()`` refuses a report
whose files changed or went missing since it was written.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yoloquant._io import atomic_write_text
from yoloquant.bench.latency import LatencyResult
from yoloquant.errors import ConfigError
from yoloquant.eval.bootstrap import Metric
from yoloquant.report.files import file_records, resolve_path, verify_files
from yoloquant.report.render import render_html, render_markdown, render_table

if TYPE_CHECKING:
    import numpy as np

    from yoloquant.protocols import Engine

__all__ = ["REPORT_SCHEMA_VERSION", "PipelineResult", "TaskRecord", "VariantResult"]

REPORT_SCHEMA_VERSION = 2  # 2: per-variant metrics / delta_vs_fp32 with 95% intervals; 1 still loads


@dataclass(frozen=True, kw_only=True, eq=False)
class VariantResult:
    """One model variant of a run (FP32 baseline, INT8, ...) and what was measured on it.

    ``metrics`` maps a metric name (the task's: ``"map50_95"``, ``"map50"`` for detection) to its value and
    95% bootstrap interval over the evaluation images; ``delta_vs_fp32`` maps the same names to the paired
    difference from the baseline, in mAP points. ``map50_95`` / ``map50`` read the plain values.
    """

    name: str
    precision: str
    backend: str
    model_path: str
    size_bytes: int
    providers: tuple[str, ...] = ()
    latency: tuple[LatencyResult, ...] = ()
    speedup_vs_fp32: dict[int, float] = field(default_factory=dict)
    quantization: dict[str, Any] | None = None
    eval_seconds: float | None = None
    warnings: tuple[str, ...] = ()
    metrics: dict[str, Metric] = field(default_factory=dict)
    delta_vs_fp32: dict[str, Metric] = field(default_factory=dict)
    # the evaluation's bootstrap replicates (in memory only, not in report.json): what a sweep pairs variants by
    replicates: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def value(self, metric: str) -> float | None:
        """The plain value of ``metric``, or None where it was not measured."""
        m = self.metrics.get(metric)
        return None if m is None else m.value

    @property
    def map50_95(self) -> float | None:
        return self.value("map50_95")

    @property
    def map50(self) -> float | None:
        return self.value("map50")

    def to_dict(self) -> dict[str, Any]:
        first = self.latency[0] if self.latency else None
        return {
            "name": self.name,
            "precision": self.precision,
            "backend": self.backend,
            "providers": list(self.providers),
            "map50_95": self.map50_95,
            "map50": self.map50,
            "metrics": {k: m.to_dict() for k, m in self.metrics.items()},
            "delta_vs_fp32": {k: m.to_dict() for k, m in self.delta_vs_fp32.items()},
            "latency_ms": first.to_dict() if first else None,
            "speedup_vs_fp32": self.speedup_vs_fp32.get(first.batch) if first else None,
            "latency_by_batch": [
                {**r.to_dict(), "speedup_vs_fp32": self.speedup_vs_fp32.get(r.batch)} for r in self.latency
            ],
            "size_bytes": self.size_bytes,
            "model_path": self.model_path,
            "quantization": self.quantization,
            "eval_seconds": self.eval_seconds,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantResult:
        by_batch = data.get("latency_by_batch") or []
        return cls(
            name=data["name"],
            precision=data["precision"],
            backend=data["backend"],
            model_path=data["model_path"],
            size_bytes=int(data["size_bytes"]),
            providers=tuple(data.get("providers", ())),
            latency=tuple(LatencyResult.from_dict(r) for r in by_batch),
            speedup_vs_fp32={
                int(r["batch"]): float(r["speedup_vs_fp32"]) for r in by_batch if r.get("speedup_vs_fp32")
            },
            quantization=data.get("quantization"),
            eval_seconds=data.get("eval_seconds"),
            warnings=tuple(data.get("warnings", ())),
            metrics=_metrics(data),
            delta_vs_fp32={k: Metric.from_dict(m) for k, m in (data.get("delta_vs_fp32") or {}).items()},
        )


def _metrics(data: dict[str, Any]) -> dict[str, Metric]:
    """A variant's metrics; a schema-1 report has plain values, which load without intervals."""
    if data.get("metrics"):
        return {k: Metric.from_dict(m) for k, m in data["metrics"].items()}
    return {k: Metric(value=float(data[k])) for k in ("map50_95", "map50") if data.get(k) is not None}


@dataclass(frozen=True, kw_only=True)
class TaskRecord:
    """The task a report measured, self-described so a report loads without that task registered.

    Attributes:
        name: The task (see :mod:`yoloquant.tasks`).
        metrics: Its metric names, in table order.
        primary_metric: The one budgets and Pareto fronts rank by.
    """

    name: str = "detect"
    metrics: tuple[str, ...] = ("map50_95", "map50")
    primary_metric: str = "map50_95"

    @classmethod
    def of(cls, task: str) -> TaskRecord:
        """The record of the registered task ``task``."""
        from yoloquant.tasks import task_spec

        spec = task_spec(task)
        return cls(name=spec.name, metrics=spec.metric_names, primary_metric=spec.primary_metric)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "metrics": list(self.metrics), "primary_metric": self.primary_metric}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskRecord:
        """A report's ``task`` section; one written before it existed is a detection report."""
        if not data:
            return cls()
        return cls(name=data["name"], metrics=tuple(data["metrics"]), primary_metric=data["primary_metric"])


@dataclass(frozen=True, kw_only=True, eq=False)
class PipelineResult:
    """Everything a run measured, with its config, package versions and input hashes.

    Example:
        >>> result = PipelineResult.load("runs/yolov8n-int8/report.json")  # doctest: +SKIP
        >>> print(result.table())  # doctest: +SKIP
    """

    variants: tuple[VariantResult, ...]
    config: dict[str, Any]
    versions: dict[str, str]
    inputs: dict[str, Any]
    out_dir: str
    created: str
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()
    sweep: dict[str, Any] | None = None
    sensitivity: dict[str, Any] | None = None
    files: dict[str, dict[str, Any]] | None = None  # path -> sha256, size_bytes; recorded by save()
    task: TaskRecord = field(default_factory=TaskRecord)
    report_dir: Path | None = field(default=None, compare=False)  # where load() found it; paths resolve here

    @property
    def baseline(self) -> VariantResult:
        return self.variants[0]

    def variant(self, name: str) -> VariantResult:
        for v in self.variants:
            if v.name == name:
                return v
        msg = f"no variant named {name!r}; this run has {[v.name for v in self.variants]}"
        raise ConfigError(msg)

    def engine(self, name: str | None = None, *, threads: int | None = None) -> Engine:
        """A new engine for a variant's model (default: the last variant), on the backend it was measured on.

        The caller owns it: use it as a context manager or call ``close()``. ``threads``: inference threads
        (default: the backend's own choice).
        """
        from yoloquant.artifacts import OnnxModel
        from yoloquant.backends import build_engine
        from yoloquant.config import Backend

        v = self.variant(name) if name is not None else self.variants[-1]
        return build_engine(OnnxModel.load(self.path(v.model_path)), Backend(v.backend), threads=threads)

    def path(self, recorded: str) -> Path:
        """Where a path this report holds is now (relative and moved-folder paths resolve to its folder)."""
        return resolve_path(recorded, recorded_dir=self.out_dir, report_dir=self.report_dir)

    def table(self) -> str:
        """Plain-text table: FP32 baseline vs each variant (mAP, delta, latency, speedup, size)."""
        return render_table(self)

    def to_markdown(self) -> str:
        return render_markdown(self)

    def _repr_html_(self) -> str:
        return render_html(self)

    def __repr__(self) -> str:
        names = ", ".join(v.name for v in self.variants)
        return f"PipelineResult(variants=[{names}], out_dir={self.out_dir!r})"

    def to_dict(self) -> dict[str, Any]:
        sections = {"sweep": self.sweep, "sensitivity": self.sensitivity, "files": self.files}
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "created": self.created,
            "seconds": round(self.seconds, 2),
            "out_dir": self.out_dir,
            "variants": [v.to_dict() for v in self.variants],
            "config": self.config,
            "versions": self.versions,
            "inputs": self.inputs,
            "warnings": list(self.warnings),
            "task": self.task.to_dict(),
            **{k: v for k, v in sections.items() if v is not None},  # present only on sweeps / analyses
        }

    def save(self, out_dir: Path | str | None = None) -> Path:
        """Write ``report.json`` and ``report.md`` atomically; returns the json path."""
        folder = Path(out_dir if out_dir is not None else self.out_dir)
        files = file_records(self.path(p) for p in self._described())
        report = dataclasses.replace(self, files=files or None)
        atomic_write_text(folder / "report.md", report.to_markdown())
        # report.json last: its presence marks a complete run
        path = folder / "report.json"
        atomic_write_text(path, json.dumps(report.to_dict(), indent=2) + "\n")
        return path

    def _described(self) -> list[str]:
        """The files this report describes: every variant's model, the sensitivity analysis' outputs."""
        extra = (self.sensitivity or {}).get("files") or []
        return [v.model_path for v in self.variants] + [str(f) for f in extra]

    @classmethod
    def load(cls, path: Path | str, *, verify: bool = True) -> PipelineResult:
        """Read a ``report.json`` (or the run folder holding one).

        Args:
            path: The report or its folder.
            verify: Check the sha256 and size of every file the report describes (its ``files``
                section); a missing or changed file raises ConfigError naming it.
        """
        path = Path(path).absolute()
        if path.is_dir():
            path = path / "report.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            msg = f"cannot read report {path}: {exc}; pass a report.json written by yoloquant"
            raise ConfigError(msg) from exc
        try:
            result = cls._from_dict(data)
            result.baseline  # noqa: B018 - a report without variants is as broken as one without the key
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            msg = (
                f"{path} is not a complete yoloquant report ({type(exc).__name__}: {exc}); pass a report.json "
                "written by yoloquant, or run the pipeline again into that folder"
            )
            raise ConfigError(msg) from exc
        result = dataclasses.replace(result, report_dir=path.parent)
        if verify and result.files:
            verify_files(result.files, recorded_dir=result.out_dir, report_dir=path.parent, report=path)
        return result

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> PipelineResult:
        return cls(
            variants=tuple(VariantResult.from_dict(v) for v in data["variants"]),
            config=data["config"],
            versions=data["versions"],
            inputs=data["inputs"],
            out_dir=data["out_dir"],
            created=data["created"],
            seconds=float(data.get("seconds", 0.0)),
            warnings=tuple(data.get("warnings", ())),
            sweep=data.get("sweep"),
            sensitivity=data.get("sensitivity"),
            files=data.get("files"),
            task=TaskRecord.from_dict(data.get("task") or {}),
        )
