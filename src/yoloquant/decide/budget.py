"""Accuracy-budgeted mixed precision: INT8 everywhere except the fewest sensitive groups.

Quantize everything; if the mAP50-95 drop on the search images exceeds ``max_map_drop`` points,
return the most sensitive groups (ranked by :func:`~yoloquant.decide.sensitivity.analyze_sensitivity`)
to float: k = 1, 2, 4, ... until the drop is within budget, then bisect between the last k that
failed and the first that passed. mAP is not strictly monotone in k, so the k found is the smallest
*tried* k that passes, not a proven minimum. A step passes on its point drop; each step also records
its paired 95% interval on the search images (``step_deltas``).

In a pipeline the search runs on the labelled calibration images by default and the evaluation set
verifies it: :func:`budget_verification` turns the variant's paired delta there into the verified drop,
its interval and P(drop <= budget) over the bootstrap resamples.

Example:
    >>> q = BudgetedQuantizer(max_map_drop=0.3, eval_data="coco.yaml", num_images=64, offset=64)
    >>> plan = QuantPipeline.from_ultralytics("yolov8n.pt").calibrate("coco/images").quantize(
    ...     "int8", quantizer=q)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from yoloquant._io import atomic_write_text
from yoloquant._optional import require
from yoloquant.artifacts import CalibrationSet, OnnxModel, QdqModel
from yoloquant.config import Backend, BenchConfig, EvalConfig, Precision, _Serializable
from yoloquant.decide._ortcache import SharedCalibration
from yoloquant.decide.budget_search import Candidates
from yoloquant.decide.budget_search import tries as _tries
from yoloquant.decide.evaluator import Evaluate, ModelEvaluator
from yoloquant.decide.executor import Executor
from yoloquant.decide.groups import Granularity
from yoloquant.decide.sensitivity import (
    GroupSensitivity,
    SensitivityConfig,
    SensitivityReport,
    analyze_sensitivity,
)
from yoloquant.decide.verification import budget_verification
from yoloquant.errors import ConfigError
from yoloquant.eval.bootstrap import Metric
from yoloquant.quantize.graph import classify_qdq_nodes
from yoloquant.quantize.ort_static import OrtQuantConfig

if TYPE_CHECKING:
    from yoloquant.data.datasets import Dataset
    from yoloquant.eval.coco import EvalResult

log = logging.getLogger(__name__)

__all__ = [
    "BudgetConfig",
    "BudgetResult",
    "BudgetedQuantizer",
    "budget_verification",
    "load_labelled",
    "search_budget",
]


@dataclass(frozen=True, kw_only=True)
class BudgetConfig(_Serializable):
    """Options of :class:`BudgetedQuantizer`.

    Attributes:
        max_map_drop: Largest accepted mAP50-95 drop vs FP32, in points (0.3 = 0.003 mAP).
        eval_source: Labelled images the drop is measured on (folder, yaml or COCO json).
        num_images / offset / split: Which of them (keep them disjoint from the calibration images).
        granularity: Group size returned to float: ``conv`` or ``block``.
        proxy_images: Calibration images of the sensitivity proxy that ranks the groups.
        float_mode: ``exclude`` (ORT ``nodes_to_exclude``) or ``dequantize`` (float groups read float
            inputs; see :mod:`yoloquant.decide._dequant`).
    """

    max_map_drop: float = 0.3
    eval_source: str = ""
    num_images: int | None = None
    offset: int = 0
    split: str = "val"
    granularity: Granularity = Granularity.CONV
    proxy_images: int = 8
    float_mode: str = "dequantize"

    def __post_init__(self) -> None:
        object.__setattr__(self, "granularity", Granularity(self.granularity))
        object.__setattr__(self, "eval_source", str(self.eval_source))
        if self.float_mode not in ("exclude", "dequantize"):
            msg = f"float_mode is 'exclude' or 'dequantize', got {self.float_mode!r}"
            raise ConfigError(msg)
        if self.max_map_drop < 0:
            msg = f"max_map_drop is in mAP50-95 points and must be >= 0 (e.g. 0.3), got {self.max_map_drop}"
            raise ConfigError(msg)
        if not self.eval_source:
            msg = "an accuracy budget needs labelled evaluation images: pass eval_data= (folder, yaml or json)"
            raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class BudgetResult:
    """The budgeted model and how it was found.

    Attributes:
        float_groups: Groups returned to float, most sensitive first.
        steps: ``(k, mAP50-95)`` for every k tried, in order.
        step_deltas: ``k -> delta`` vs FP32 on the search images, in points, with its paired 95% interval
            (no interval with ``EvalConfig(resamples=0)``).
        within_budget: Whether the final model meets ``max_map_drop`` on the search images (point drop).
        latency_ms: Median latency (batch 1) of ``fp32``, ``int8`` and ``budget`` when timed, interleaved.
        ort_config: The :class:`OrtQuantConfig` that re-makes the model with ``OrtStaticQuantizer``.
    """

    max_map_drop: float
    fp32_map50_95: float
    int8_map50_95: float
    map50_95: float
    float_groups: tuple[str, ...]
    float_nodes: tuple[str, ...]
    groups_total: int
    steps: tuple[tuple[int, float], ...]
    within_budget: bool
    model_path: str
    ort_config: dict[str, Any]
    latency_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    step_deltas: dict[int, Metric] = dataclasses.field(default_factory=dict)

    @property
    def search_delta(self) -> Metric | None:
        """The chosen model's delta vs FP32 on the search images (points, paired interval)."""
        return self.step_deltas.get(len(self.float_groups))

    @property
    def drop(self) -> float:
        """mAP50-95 drop vs FP32 in points."""
        return (self.fp32_map50_95 - self.map50_95) * 100

    def speedups(self) -> dict[str, float]:
        """``vs_fp32``, ``int8_vs_fp32``, ``vs_int8`` and ``kept`` (budget speedup / full-INT8 speedup)."""
        lat = self.latency_ms
        if not {"fp32", "int8", "budget"} <= set(lat):
            return {}
        s_b, s_i = lat["fp32"] / lat["budget"], lat["fp32"] / lat["int8"]
        return {"vs_fp32": s_b, "int8_vs_fp32": s_i, "vs_int8": lat["int8"] / lat["budget"], "kept": s_b / s_i}

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_map_drop": self.max_map_drop,
            "fp32_map50_95": self.fp32_map50_95,
            "int8_map50_95": self.int8_map50_95,
            "map50_95": self.map50_95,
            "drop_points": round(self.drop, 3),
            "search_delta": self.search_delta.to_dict() if self.search_delta else None,
            "within_budget": self.within_budget,
            "float_groups": list(self.float_groups),
            "float_nodes": list(self.float_nodes),
            "groups_total": self.groups_total,
            "steps": [
                {"float_groups": k, "map50_95": m, "delta": d.to_dict() if (d := self.step_deltas.get(k)) else None}
                for k, m in self.steps
            ],
            "model_path": self.model_path,
            "ort_config": self.ort_config,
            "latency_ms": self.latency_ms,
            "speedups": {k: round(v, 4) for k, v in self.speedups().items()},
            "seconds": round(self.seconds, 2),
        }

    def to_markdown(self) -> str:
        def pts(m: float) -> str:
            return f"{m:.4f} ({(m - self.fp32_map50_95) * 100:+.2f})"

        lines = [
            f"# Accuracy budget: mAP50-95 drop <= {self.max_map_drop} points",
            "",
            f"FP32 {self.fp32_map50_95:.4f}, full INT8 {pts(self.int8_map50_95)}, budgeted {pts(self.map50_95)}"
            f" ({'within' if self.within_budget else 'NOT within'} budget) with {len(self.float_groups)} of "
            f"{self.groups_total} groups float: {', '.join(f'`{g}`' for g in self.float_groups) or 'none'}.",
            "",
            "Steps (groups float -> mAP50-95, delta vs FP32 [95% interval]): "
            + ", ".join(f"{k} -> {m:.4f} ({self._step(k)})" for k, m in self.steps),
        ]
        s = self.speedups()
        if s:
            lat = self.latency_ms
            lines += [
                "",
                f"Latency p50 (interleaved): FP32 {lat['fp32']:.2f} ms, INT8 {lat['int8']:.2f} ms, "
                f"budgeted {lat['budget']:.2f} ms; speedup vs FP32 {s['vs_fp32']:.3f}x "
                f"(full INT8 {s['int8_vs_fp32']:.3f}x, kept {s['kept']:.1%} of it).",
            ]
        return "\n".join(lines) + "\n"

    def _step(self, k: int) -> str:
        d = self.step_deltas.get(k)
        return d.format("+.2f") if d is not None else f"{(dict(self.steps)[k] - self.fp32_map50_95) * 100:+.2f}"

    def save(self, out_dir: Path | str) -> Path:
        folder = Path(out_dir)
        atomic_write_text(folder / "budget.md", self.to_markdown())
        path = folder / "budget.json"
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def load_labelled(
    source: str | Path, split: str, num_images: int | None, offset: int, *, names: dict[int, str] | None = None
) -> Dataset:
    """The labelled images a budget is searched on.

    Raises:
        ConfigError: If not one of them has a labelled object (e.g. a folder without ``labels/``).
    """
    from yoloquant.data.datasets import load_dataset

    data = load_dataset(source, split=split, names=names).select(num_images, offset)
    if data.labels is None or not any(len(gt.boxes) for gt in data.labels):
        msg = (
            f"the accuracy budget measures mAP on {source}, which has no labels in images {offset}.."
            f"{offset + len(data) - 1}; pass an image folder with a sibling labels/ folder, a dataset yaml "
            "or a COCO json (or search on the evaluation set: budget_data='evaluation')"
        )
        raise ConfigError(msg)
    return data


def search_budget(
    model: OnnxModel,
    calib: CalibrationSet,
    eval_data: Dataset | Evaluate,
    out_dir: Path | str,
    *,
    max_map_drop: float = 0.3,
    granularity: Granularity | str = Granularity.CONV,
    quant: OrtQuantConfig | None = None,
    ranking: SensitivityReport | None = None,
    eval_config: EvalConfig | None = None,
    bench: BenchConfig | None = None,
    proxy_images: int = 8,
    rank_by: str = "quantized",
    float_mode: str = "dequantize",
    executor: Executor | None = None,
) -> BudgetResult:
    """Find the fewest most-sensitive groups to keep float so the mAP drop is within ``max_map_drop``.

    Args:
        model: The float ONNX model.
        calib: Calibration images (ranges, and the first ``proxy_images`` for the ranking proxy).
        eval_data: Labelled images the drop is measured on (on ONNX Runtime's CPU provider, with
            ``eval_config``), or the callable that measures a model on them (the runner's: its search
            images, its backend; ``eval_config`` then unused).
        out_dir: Work files, ``budget.{json,md}`` and the budgeted model ``<stem>-int8-budget.onnx``.
        max_map_drop: Accepted drop vs FP32 in mAP50-95 points.
        granularity: ``conv`` or ``block`` groups.
        quant: The ORT INT8 layout (default :class:`OrtQuantConfig`).
        ranking: A sensitivity report of the same model and layout; computed (proxy only) when None.
        eval_config: COCO eval settings.
        bench: Time FP32, full INT8 and the budgeted model interleaved (None: no timing).
        proxy_images: Images of the ranking proxy when ``ranking`` is None.
        rank_by: Ranking of a computed ranking: ``quantized`` or ``float`` (see SensitivityConfig).
        float_mode: ``exclude`` or ``dequantize`` (see SensitivityConfig).
        executor: Where the candidates are measured and a computed ranking's groups too (``RayExecutor()``: one
            task per candidate, several candidates at once: those the search may ask next are measured ahead);
            the same chosen groups and model as here (:mod:`yoloquant.decide.budget_search`). ``out_dir`` and
            the evaluation images must then be at the same path on every worker; None: in this process.

    Example:
        >>> r = search_budget(model, calib, val, "runs/budget", max_map_drop=0.3)  # doctest: +SKIP
        >>> r.float_groups, r.drop  # doctest: +SKIP
    """
    start = time.perf_counter()
    out = Path(out_dir)
    evaluate = eval_data if callable(eval_data) else ModelEvaluator(eval_data, eval_config or EvalConfig())
    shared = SharedCalibration(model, calib, quant or OrtQuantConfig(), out / "work")
    candidates = Candidates(
        shared, evaluate, max_map_drop=max_map_drop, float_mode=float_mode, work=out / "work", executor=executor
    )
    base, int8 = candidates.baseline_and_int8()
    fp32 = base.primary  # the task's primary metric (mAP50-95 for detection)
    maps: dict[int, float] = {0: int8.primary}  # k -> mAP, in the order the search asked
    deltas: dict[int, Metric] = {0: _delta(int8, base)}
    passed: dict[int, bool] = {0: candidates.passes(int8)}
    groups: tuple[GroupSensitivity, ...] = ()

    def float_nodes(k: int) -> list[str]:
        return [n for g in groups[:k] for n in g.group.nodes]

    def passes(k: int) -> bool:
        if k not in maps:
            result = candidates.result(k, float_nodes, len(groups), passed)
            maps[k], deltas[k], passed[k] = result.primary, _delta(result, base), candidates.passes(result)
        return passed[k]

    if not passes(0):  # rank only when full INT8 misses the budget
        if ranking is None:
            cfg = SensitivityConfig(
                granularity=Granularity(granularity),
                top_k=0,
                cross_check=rank_by == "float",
                proxy_images=proxy_images,
                rank_by=rank_by,
                float_mode=float_mode,
            )
            ranking = analyze_sensitivity(
                model, calib, out / "sensitivity", config=cfg, shared=shared, executor=executor
            )
        groups = ranking.groups
        _tries(len(groups), passes)
    if candidates.unasked:
        log.info("budget search: measured %s ahead, which the search did not ask", candidates.unasked)
    ok = [k for k in maps if passed[k]]
    k = min(ok) if ok else len(groups)
    passes(k)
    stem = model.path.stem.removesuffix("-fp32")
    final = shared.build(float_nodes(k), out / f"{stem}-int8-budget.onnx", float_mode=float_mode)
    latency = _latency(model, shared, final, bench, out) if bench is not None else {}
    result = BudgetResult(
        max_map_drop=max_map_drop,
        fp32_map50_95=fp32,
        int8_map50_95=maps[0],
        map50_95=maps[k],
        float_groups=tuple(g.group.name for g in groups[:k]),
        float_nodes=tuple(float_nodes(k)),
        groups_total=len(ranking.groups) if ranking is not None else 0,
        steps=tuple(maps.items()),
        within_budget=bool(ok),
        model_path=str(final.path),
        ort_config=final.config,
        latency_ms=latency,
        seconds=time.perf_counter() - start,
        step_deltas=deltas,
    )
    result.save(out)
    return result


def _delta(result: EvalResult, base: EvalResult) -> Metric:
    from yoloquant.eval.coco import delta

    return delta(result, base, base.primary_metric)


def _latency(
    model: OnnxModel, shared: SharedCalibration, final: QdqModel, bench: BenchConfig, out: Path
) -> dict[str, float]:
    from contextlib import ExitStack

    from yoloquant.backends import open_engines
    from yoloquant.bench.latency import benchmark_interleaved

    int8 = shared.build([], out / "work" / "int8.onnx", metadata=False)
    with ExitStack() as stack:
        models = {"fp32": model, "int8": int8, "budget": final}
        engines = open_engines(stack, {n: (m, Backend.ORT_CPU) for n, m in models.items()}, threads=bench.threads)
        timed = benchmark_interleaved(engines, bench, progress=False)
    return {name: results[0].p50 for name, results in timed.items()}


class BudgetedQuantizer:
    """A :class:`~yoloquant.protocols.Quantizer`: ORT static INT8 within an mAP budget.

    ``evaluate`` measures a candidate model on the search images (a pipeline's runner passes one that
    reuses the images it loaded and the variant's backend, ``yoloquant.decide.budget_plan``); without it the
    quantizer loads ``eval_data`` itself and evaluates on ONNX Runtime's CPU provider. Equal quantizers (the
    runner shares one model between them) have equal options and the same ``evaluate`` object; ``executor``
    (where the candidates are measured, see :func:`search_budget`) is not compared: it changes where the search
    runs, not what it finds.

    Example:
        >>> q = BudgetedQuantizer(max_map_drop=0.3, eval_data="assets/coco64.yaml", num_images=32, offset=32)
        >>> q.name
        'ort-budget'
    """

    name: ClassVar[str] = "ort-budget"
    needs_calibration: ClassVar[bool] = True

    def with_progress(self, enabled: bool) -> Self:
        """This quantizer: the search shows no progress bars."""
        del enabled
        return self

    def __init__(
        self,
        *,
        max_map_drop: float = 0.3,
        eval_data: str | Path = "",
        num_images: int | None = None,
        offset: int = 0,
        split: str = "val",
        granularity: Granularity | str = Granularity.CONV,
        float_mode: str = "dequantize",
        quant: OrtQuantConfig | None = None,
        eval_config: EvalConfig | None = None,
        evaluate: Evaluate | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.evaluate, self.executor = evaluate, executor
        self.config = BudgetConfig(
            max_map_drop=max_map_drop,
            eval_source=str(eval_data),
            num_images=num_images,
            offset=offset,
            split=split,
            granularity=Granularity(granularity),
            float_mode=float_mode,
        )
        self.quant = quant or OrtQuantConfig()
        self.eval_config = eval_config or EvalConfig()
        self.result: BudgetResult | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BudgetedQuantizer) or other.evaluate is not self.evaluate:
            return False
        return (other.config, other.quant, other.eval_config) == (self.config, self.quant, self.eval_config)

    def __hash__(self) -> int:
        return hash((self.config, self.quant, self.eval_config))

    def __repr__(self) -> str:
        return f"BudgetedQuantizer({self.config!r})"

    def quantize(self, model: OnnxModel, data: CalibrationSet, out_dir: Path) -> QdqModel:
        """Search the budget (see :func:`search_budget`) and return the budgeted model."""
        c = self.config
        evaluate = self.evaluate or ModelEvaluator(
            load_labelled(c.eval_source, c.split, c.num_images, c.offset, names=model.info.names), self.eval_config
        )
        start = time.perf_counter()
        result = search_budget(
            model,
            data,
            evaluate,
            out_dir,
            max_map_drop=c.max_map_drop,
            granularity=c.granularity,
            quant=self.quant,
            proxy_images=c.proxy_images,
            float_mode=c.float_mode,
            executor=self.executor,
        )
        self.result = result
        quantized, floats = classify_qdq_nodes(require("onnx").load(result.model_path))
        return QdqModel(
            path=Path(result.model_path),
            info=model.info,
            precision=Precision.INT8,
            source=model,
            quantizer=self.name,
            backend=self.quant.backend.value,
            config={"budget": c.to_dict(), "result": result.to_dict(), "ort": result.ort_config},
            quantized_nodes=quantized,
            float_nodes=floats,
            seconds=time.perf_counter() - start,
        )
