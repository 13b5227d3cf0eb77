"""The sweep's measured rows, its result and the ledger-entry / report helpers behind them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from yoloquant.bench.latency import LatencyResult, speedups
from yoloquant.config import Backend, BenchConfig
from yoloquant.decide._files import new_figure, save_figure
from yoloquant.decide.pareto import (
    Candidate,
    Point,
    Recommendation,
    pareto_front,
    recommend_within_noise,
    resolved_steps,
)
from yoloquant.errors import ConfigError
from yoloquant.eval.bootstrap import Metric, paired_delta
from yoloquant.protocols import Quantizer
from yoloquant.report.render import metric_label
from yoloquant.report.result import PipelineResult, TaskRecord, VariantResult

if TYPE_CHECKING:
    from yoloquant.decide.sweep import SweepVariant

__all__ = ["SweepResult", "SweepRow", "baseline_name", "metric_value"]

FP32 = "fp32"
_DEFAULT = Backend.ORT_CPU.value


def baseline_name(backend: str) -> str:
    """The FP32 entry that ``backend``'s variants are compared with: ``fp32`` (ONNX Runtime) or ``fp32-<backend>``."""
    return FP32 if backend == _DEFAULT else f"{FP32}-{backend}"


def _entry_backend(entry: dict[str, Any]) -> Backend:
    """The backend a ledger entry was evaluated on (entries record it in their variant)."""
    return Backend((entry.get("variant") or {}).get("backend") or _DEFAULT)


def _check_base(done: dict[str, dict[str, Any]], fingerprint: str, out: Path) -> None:
    """Refuse to resume a ledger written for another base pipeline."""
    stale = [n for n, e in done.items() if e.get("base") != fingerprint]
    if stale:
        msg = f"{out} holds a sweep of another base pipeline ({stale[:3]}...); use a new output folder"
        raise ConfigError(msg)


def _entry(result: PipelineResult, name: str, variant: SweepVariant | None, seconds: float) -> dict[str, Any]:
    v = result.variant(name)
    return {
        "name": v.name,
        "params": variant.to_dict() if variant else {"precision": "fp32"},
        "map50_95": v.map50_95,
        "map50": v.map50,
        "metrics": {k: m.value for k, m in v.metrics.items()},
        "task": result.task.to_dict(),
        "model_path": v.model_path,
        "seconds": round(seconds, 2),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "variant": v.to_dict(),  # the report's variant record, latency added after the timing phase
        # the evaluation's bootstrap replicates: every variant is evaluated on the same images with the same
        # seed, so these pair any two variants (decide/pareto.py); 1000 floats each, rounded to 1e-7 mAP
        "replicates": {k: [round(float(x), 7) for x in r] for k, r in v.replicates.items()},
        "inputs": dict(result.inputs),
        "warnings": list(result.warnings),
    }


_RULE = (
    "constraints on the point values; among the qualifying variants, the fastest whose mAP50-95 is "
    "indistinguishable from the most accurate one's (paired 95% interval of the difference holds 0); among "
    "those tied in speed with it (95% interval of the median per-round latency ratio holds 1), the simplest"
)


def _config_dict(quantizer: Quantizer | None) -> dict[str, Any]:
    return dict(quantizer.config.to_dict()) if quantizer is not None else {}


def metric_value(entry: dict[str, Any], metric: str) -> float | None:
    """A ledger entry's value of ``metric`` (entries written before ``metrics`` have detection's plain keys)."""
    value = (entry.get("metrics") or {}).get(metric, entry.get(metric))
    return None if value is None else float(value)


def _paired(entry: dict[str, Any], base: dict[str, Any]) -> dict[str, Metric]:
    """Each metric's paired delta vs ``base`` in points (plain deltas for entries without replicates)."""
    out = {}
    for k in base.get("metrics") or ("map50_95", "map50"):
        value, ref = metric_value(entry, k), metric_value(base, k)
        if value is None or ref is None:
            continue
        a, b = (entry.get("replicates") or {}).get(k), (base.get("replicates") or {}).get(k)
        if a and b and len(a) == len(b):
            out[k] = paired_delta(np.asarray(a), np.asarray(b), float(value), float(ref))
        else:
            out[k] = Metric(value=(float(value) - float(ref)) * 100)
    return out


def _noise_section(rec: Recommendation, cands: dict[str, Candidate]) -> dict[str, Any]:
    """The recommendation's working: the best qualifying variant and who is the same within noise."""
    best = cands.get(rec.best) if rec.best else None
    vs_best = {}
    if best is not None and best.replicates is not None:
        for n in rec.qualifying:
            c = cands[n]
            if c.replicates is not None and c.replicates.shape == best.replicates.shape:
                vs_best[n] = paired_delta(c.replicates, best.replicates, c.accuracy, best.accuracy).to_dict()
    return {
        "best": rec.best,
        "same_as_best": list(rec.same_as_best),
        "same_speed": list(rec.same_speed),
        "qualifying": list(rec.qualifying),
        "vs_best": vs_best,
    }


def _variant(entry: dict[str, Any], timing: dict[str, Any], fp32: dict[str, Any]) -> VariantResult:
    """A ledger entry's variant with its latency from the interleaved phase."""
    if "variant" not in entry:
        msg = (
            f"ledger entry {entry.get('name')!r} was written by an older yoloquant and lacks the variant record "
            "report.json needs; run the sweep into a new output folder"
        )
        raise ConfigError(msg)
    lat, base = LatencyResult.from_dict(timing), LatencyResult.from_dict(fp32)
    return dataclasses.replace(
        VariantResult.from_dict(entry["variant"]), latency=(lat,), speedup_vs_fp32=speedups((lat,), (base,))
    )


def _inputs(entries: dict[str, dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """The FP32 run's inputs (model, export, evaluation set) and each variant's calibration images."""
    inputs = dict(entries[FP32].get("inputs") or {})
    by_variant = {
        n: entries[n]["inputs"]["calibration"] for n in names if "calibration" in entries[n].get("inputs", {})
    }
    return {**inputs, "calibration_by_variant": by_variant}


def _row(
    name: str,
    entries: dict[str, dict[str, Any]],
    latency: dict[str, dict[str, Any]],
    ref: str,
    delta: Metric | None,
    *,
    task: TaskRecord,
) -> SweepRow:
    """``name``'s measured numbers, its speedup and drop (in the task's primary metric) vs ``ref`` (FP32 on its
    backend)."""
    entry, base, metric = entries[name], entries[ref], task.primary_metric
    return SweepRow(
        name=name,
        params=entry.get("params") or {},
        metrics={k: v for k in task.metrics if (v := metric_value(entry, k)) is not None},
        metric=metric,
        latency_ms=float(latency[name]["p50"]),
        speedup=float(latency[ref]["p50"]) / float(latency[name]["p50"]),
        drop=(_value(base, metric) - _value(entry, metric)) * 100,
        model_path=str(entry["model_path"]),
        seconds=float(entry.get("seconds", 0.0)),
        delta_vs_fp32=delta,
    )


def _latency_key(entries: dict[str, dict[str, Any]], bench: BenchConfig) -> dict[str, Any]:
    """What a cached ``latency.json`` must match: the settings, the models and (when not all ONNX Runtime) backends."""
    key: dict[str, Any] = {
        "bench": bench.to_dict(),
        "models": {n: str(e["model_path"]) for n, e in sorted(entries.items())},
    }
    backends = {n: _entry_backend(e).value for n, e in sorted(entries.items())}
    if set(backends.values()) != {_DEFAULT}:
        key["backends"] = backends
    return key


def _decide(
    names: list[str], rows: dict[str, SweepRow], cands: dict[str, Candidate], constraints: dict[str, float | None]
) -> dict[str, Any]:
    """One backend's Pareto front, recommendation and its working, among ``names`` (its FP32 first); the
    caller adds the ``recommended_call``."""
    group = {n: cands[n] for n in names}
    max_drop, min_speedup = constraints["recommend_max_drop"], constraints["recommend_min_speedup"]

    def qualifies(c: Candidate) -> bool:
        r = rows[c.name]  # constraints on the point values (see docs/decide.md)
        return (max_drop is None or r.drop <= max_drop + 1e-9) and (
            min_speedup is None or r.speedup >= min_speedup - 1e-9
        )

    rec = recommend_within_noise(list(group.values()), qualifies)
    front = pareto_front([Point(n, rows[n].latency_ms, rows[n].accuracy) for n in names])
    return {
        "pareto": [p.name for p in front],
        "pareto_resolved": dict(
            zip([p.name for p in front], resolved_steps([group[p.name] for p in front]), strict=True)
        ),
        "recommended": rec.pick or None,
        "rule": _RULE,
        **_noise_section(rec, group),
    }


@dataclass(frozen=True, kw_only=True)
class SweepRow:
    """One variant's measured numbers; ``drop`` in points of the ranking ``metric`` and ``speedup`` vs FP32.

    Attributes:
        metrics: Every metric's value by name (the task's: ``map50_95``, ``map50`` for detection).
        metric: The one the sweep ranks by (the task's primary metric).
    """

    name: str
    params: dict[str, Any]
    metrics: dict[str, float]
    metric: str
    latency_ms: float
    speedup: float
    drop: float
    model_path: str
    seconds: float
    delta_vs_fp32: Metric | None = None  # paired, in points, with its 95% interval

    @property
    def accuracy(self) -> float:
        """The value of the ranking metric."""
        return self.metrics[self.metric]

    @property
    def map50_95(self) -> float | None:
        return self.metrics.get("map50_95")

    @property
    def map50(self) -> float | None:
        return self.metrics.get("map50")


@dataclass(frozen=True, kw_only=True)
class SweepResult:
    """Rows (FP32 first) and the sweep's report: ``report.json`` with its ``sweep`` section.

    ``pareto`` is the front, fastest first; ``recommended`` the pick of
    :func:`~yoloquant.decide.pareto.recommend_within_noise` (None if none qualifies); ``same_as_best`` the
    qualifying variants whose mAP is indistinguishable from the most accurate qualifying one's.
    """

    rows: tuple[SweepRow, ...]
    report: PipelineResult

    @property
    def _section(self) -> dict[str, Any]:
        return self.report.sweep or {}

    @property
    def pareto(self) -> tuple[str, ...]:
        return tuple(self._section["pareto"])

    @property
    def recommended(self) -> str | None:
        name: str | None = self._section["recommended"]
        return name

    @property
    def same_as_best(self) -> tuple[str, ...]:
        return tuple(self._section.get("same_as_best") or ())

    @property
    def recommended_call(self) -> str | None:
        """The ``QuantPipeline`` call that reproduces the recommended variant."""
        call = self._section["recommended_call"]
        return str(call["python"]) if call else None

    @property
    def recommended_cli(self) -> str | None:
        """The ``yoloquant run`` command that reproduces it (None when an option has no flag)."""
        call = self._section["recommended_call"]
        return str(call["cli"]) if call and call["cli"] else None

    def row(self, name: str) -> SweepRow:
        for r in self.rows:
            if r.name == name:
                return r
        msg = f"no variant {name!r} in this sweep; it has {[r.name for r in self.rows]}"
        raise ConfigError(msg)

    def plot(self, path: Path) -> None:
        fig, ax = new_figure((7, 4.5))
        for r in self.rows:
            on = r.name in self.pareto
            ax.scatter(r.latency_ms, r.accuracy, c="tab:red" if on else "tab:gray", zorder=3)
            ax.annotate(r.name, (r.latency_ms, r.accuracy), fontsize=6, xytext=(3, 3), textcoords="offset points")
        front = [self.row(n) for n in self.pareto]
        ax.plot([r.latency_ms for r in front], [r.accuracy for r in front], "r--", lw=1, label="Pareto front")
        ax.set_xlabel("latency p50 (ms, batch 1, interleaved)")
        ax.set_ylabel(metric_label(self.rows[0].metric) if self.rows else "mAP50-95")
        ax.legend(loc="lower right")
        save_figure(fig, path)

    def save(self, out_dir: Path | str) -> Path:
        """Write ``pareto.png``, then ``report.md`` and ``report.json`` (last); returns the json path."""
        folder = Path(out_dir)
        self.plot(folder / "pareto.png")
        return self.report.save(folder)


def _value(entry: dict[str, Any], metric: str) -> float:
    """A ledger entry's value of the ranking metric (every finished entry was evaluated)."""
    value = metric_value(entry, metric)
    if value is None:
        msg = f"ledger entry {entry.get('name')!r} has no {metric!r}; run the sweep into a new output folder"
        raise ConfigError(msg)
    return value
