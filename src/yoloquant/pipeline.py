"""``QuantPipeline``: an immutable, lazy, fluent plan of a quantization run.

Each step returns a new pipeline (``dataclasses.replace``); nothing runs before :meth:`run`, which
checks that the plan is complete and its inputs exist before doing any work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yoloquant.config import (
    Backend,
    BenchConfig,
    CalibMethod,
    EvalConfig,
    ExportConfig,
    Precision,
    check_int,
    parse_enum,
)
from yoloquant.errors import ConfigError
from yoloquant.protocols import Quantizer, QuantizerConfig
from yoloquant.report.result import PipelineResult
from yoloquant.vocabulary import renamed_keywords

if TYPE_CHECKING:
    from yoloquant.decide.executor import Executor
    from yoloquant.decide.sensitivity import SensitivityConfig
    from yoloquant.quantize.float_scope import FloatScope

__all__ = ["CalibrationPlan", "EvalPlan", "QuantPipeline", "VariantPlan"]


@dataclass(frozen=True, kw_only=True)
class CalibrationPlan:
    """Where calibration images come from: a folder, dataset yaml or COCO json, and which N."""

    source: Path
    num_images: int = 64
    offset: int = 0
    split: str = "train"

    def __post_init__(self) -> None:
        check_int(self.num_images, option="num_images", minimum=1, where="calibrate(): ")
        check_int(self.offset, option="offset", where="calibrate(): ")
        if self.num_images < 1 or self.offset < 0:
            msg = f"calibration needs num_images >= 1 and offset >= 0, got {self.num_images} and {self.offset}"
            raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class VariantPlan:
    """One model variant to produce: precision, the backend that runs it, the quantizer that makes it."""

    precision: Precision
    backend: Backend = Backend.ORT_CPU
    quantizer: Quantizer | None = None
    label: str | None = None
    max_map_drop: float | None = None  # accuracy budget (mAP50-95 points), resolved at run time
    granularity: str = "block"
    budget_data: str = "calibration"  # labelled images the budget is searched on: calibration or evaluation
    # where the budget search measures its candidates (None: in the run's process); a RayExecutor's dicts can't hash
    executor: Executor | None = field(default=None, hash=False)

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        return self.precision.value if self.backend is Backend.ORT_CPU else f"{self.precision}-{self.backend}"

    @property
    def needs_calibration(self) -> bool:
        """Whether its quantizer calibrates: fp32 variants and the fp16 converter do not."""
        return self.quantizer is not None and self.quantizer.needs_calibration

    def describe(self) -> str:
        how = f" via {self.quantizer.name}" if self.quantizer is not None else ""
        where = f", budget searched on {_executor_name(self.executor)}" if self.executor is not None else ""
        return f"{self.name}: {self.precision} on {self.backend}{how}{where}"


@dataclass(frozen=True, kw_only=True)
class EvalPlan:
    """Where evaluation images and labels come from, which of them, and the COCO eval settings."""

    source: Path
    split: str = "val"
    offset: int = 0
    config: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        check_int(self.offset, option="offset", where="evaluate(): ")


BASELINE = VariantPlan(precision=Precision.FP32)


@dataclass(frozen=True, kw_only=True)
class QuantPipeline:
    """A plan: export -> calibrate -> quantize -> build -> evaluate -> benchmark -> report.

    The FP32 model on ONNX Runtime's CPU provider is always the first variant, the baseline every
    other variant is compared with.

    Example:
        >>> from yoloquant import QuantPipeline
        >>> plan = (
        ...     QuantPipeline.from_ultralytics("assets/weights/yolov8n.pt", imgsz=640)
        ...     .calibrate("assets/coco64/images", num_images=32)
        ...     .quantize("int8", backend="ort-cpu")
        ...     .evaluate("assets/coco64.yaml", num_images=32, offset=32)
        ...     .benchmark(batch_sizes=(1,))
        ... )
        >>> result = plan.run("runs/yolov8n-int8")  # doctest: +SKIP
        >>> print(result.table())  # doctest: +SKIP
    """

    model: Path
    export_config: ExportConfig = field(default_factory=ExportConfig)
    calibration: CalibrationPlan | None = None
    variants: tuple[VariantPlan, ...] = (BASELINE,)
    evaluation: EvalPlan | None = None
    bench: BenchConfig | None = None
    progress: bool = True
    sensitivity: SensitivityConfig | None = None
    sensitivity_executor: Executor | None = field(default=None, hash=False)  # where its groups run; None: run()'s

    @classmethod
    def from_ultralytics(
        cls, model: str | Path, *, imgsz: int = 640, opset: int = 17, dynamic: bool = False, task: str | None = None
    ) -> QuantPipeline:
        """Start from an Ultralytics ``.pt`` checkpoint, exported to ONNX at ``run()``.

        ``task``: None runs the model as its own task (detect, segment, pose: the checkpoint says); ``"detect"``
        runs a segmentation or pose model as a detector (its boxes only; evaluation scores boxes alone).
        """
        config = ExportConfig(imgsz=imgsz, opset=opset, dynamic=dynamic, task=task)
        return cls(model=Path(model), export_config=config)

    @classmethod
    def from_onnx(cls, model: str | Path, *, task: str | None = None) -> QuantPipeline:
        """Start from an ONNX file exported by Ultralytics or yoloquant (its metadata is needed); ``task`` as in
        :meth:`from_ultralytics`."""
        return cls(model=Path(model), export_config=ExportConfig(task=task))

    @renamed_keywords()
    def calibrate(
        self, source: str | Path, *, num_images: int = 64, offset: int = 0, split: str = "train"
    ) -> QuantPipeline:
        """Calibrate on ``num_images`` images (sorted by name, from ``offset``) of a folder, yaml or json."""
        plan = CalibrationPlan(source=Path(source), num_images=num_images, offset=offset, split=split)
        return dataclasses.replace(self, calibration=plan)

    @renamed_keywords()
    def quantize(
        self,
        precision: str | Precision | QuantizerConfig = Precision.INT8,
        *,
        backend: str | Backend = Backend.ORT_CPU,
        quantizer: Quantizer | str | None = None,
        calibration_method: str | CalibMethod | None = None,
        keep_float: str | FloatScope | None = None,
        name: str | None = None,
        max_map_drop: float | None = None,
        granularity: str = "block",
        budget_data: str = "calibration",
        executor: Executor | None = None,
    ) -> QuantPipeline:
        """Add a variant. Call again to add more (another quantizer, preset, or backend).

        Example:
            >>> from yoloquant.quantize.modelopt import ModelOptConfig
            >>> pipe = QuantPipeline.from_onnx("m.onnx").quantize(ModelOptConfig.fp8())
            >>> pipe.variants[-1].describe()
            'fp8: fp8 on onnxruntime via modelopt'

        Args:
            precision: ``int8``, ``fp8`` (ModelOpt), ``fp16``, ``w8a16`` / ``w8a8`` / ``w4a16`` / ``w4a8``
                (Brevitas, docs/brevitas.md), or ``fp32`` (the float model on another backend). Or a quantizer
                config (``OrtQuantConfig``, ``ModelOptConfig``, ``NncfConfig``, ``BrevitasConfig``,
                ``Fp16Config``, or one registered with ``yoloquant.quantize.registry.register``): its quantizer
                makes the variant, at the precision the config makes (``ModelOptConfig.mode``, the Brevitas
                bits; int8 for ONNX Runtime and NNCF, fp16 for ``Fp16Config``); then leave out ``quantizer``,
                ``calibration_method`` and ``keep_float``, which the config holds.
            backend: ``ort-cpu`` (ONNX Runtime's CPU provider), ``openvino`` (OpenVINO's own runtime, CPU),
                ``ort-cuda`` (ONNX Runtime's CUDA provider, fp32 / fp16), ``torch`` (the checkpoint compiled by
                PyTorch, GPU, fp32 / fp16) or ``tensorrt``: where this variant is evaluated and timed.
            quantizer: ``"ort"`` (ONNX Runtime static INT8, fast on the CPU), ``"modelopt"`` (TensorRT's Q/DQ
                layout, INT8 / FP8), ``"brevitas"`` (W8 / W4 weights), ``"nncf"`` (NNCF INT8, ``backend="openvino"``
                only), or a Quantizer object. Default: ``ort``
                for int8, ``modelopt`` for fp8, ``brevitas`` for the ``w*a*`` precisions.
            calibration_method: ``minmax``, ``entropy`` or ``percentile`` (ModelOpt: minmax / entropy;
                Brevitas: percentile instead of its default, MSE).
            keep_float: What stays float, the same in every quantizer: a
                :class:`~yoloquant.quantize.float_scope.FloatScope` or a preset, ``nothing``, ``decode``
                (the decode path), ``head`` (and the box / class output convs) or ``head+first`` (and the
                stem conv). Default: the quantizer's best measured scope (docs/concepts.md).
            name: Variant name in the report; default built from the choices, e.g. ``int8-modelopt``.
            max_map_drop: Accuracy budget in mAP50-95 points (ONNX Runtime INT8 only): quantize everything,
                then return the most sensitive groups to float until the drop on the search images is
                within budget (``yoloquant.decide.budget``). Needs ``.evaluate()`` somewhere in the plan.
            granularity: Groups the budget returns to float: ``block`` (``/model.N/``) or ``conv``.
            budget_data: Labelled images the budget is searched on: ``calibration`` (default: the
                calibration images, which need labels; the evaluation set then verifies the budget held-out,
                and the report gives the verified drop, its interval and P(drop <= budget)) or
                ``evaluation`` (the plan's evaluation set: the reported drop is the searched one, optimistic).
            executor: Where the budget search measures its candidate models and ranks its groups:
                ``RayExecutor(address="auto")`` spreads them over a Ray cluster (docs/ray.md; the same chosen
                groups and model as in one process; the run's out dir and the images must be at the same path on
                every worker). Default: in ``run()``'s process. Needs ``max_map_drop``.
        """
        if isinstance(precision, str):  # a Precision is a str too
            prec = parse_enum(Precision, precision, option="precision")
            back = _check_backend(prec, parse_enum(Backend, backend, option="backend"))
            chosen, parts = _chosen(prec, back, quantizer, calibration_method, keep_float)
        else:
            if quantizer is not None or calibration_method is not None or keep_float is not None:
                msg = "a config holds the quantizer's options: drop quantizer=, calibration_method= and keep_float="
                raise ConfigError(msg)
            prec, chosen = _configured(precision)
            back = _check_backend(prec, parse_enum(Backend, backend, option="backend"))
            parts = _configured_parts(prec, back, chosen)
        if executor is not None and max_map_drop is None:
            msg = "executor= spreads the accuracy budget's search over workers: give max_map_drop= too (docs/ray.md)"
            raise ConfigError(msg)
        if max_map_drop is not None:
            from yoloquant.decide.budget_plan import budget_name_part

            parts.append(budget_name_part(chosen, max_map_drop, granularity, budget_data))
        parts += [f"keep-{_scope_name(keep_float)}"] if keep_float is not None else []
        parts += [back.value] if back is not Backend.ORT_CPU else []
        variant = VariantPlan(
            precision=prec,
            backend=back,
            quantizer=chosen,
            label=name or "-".join(parts),
            max_map_drop=max_map_drop,
            granularity=granularity,
            budget_data=budget_data,
            executor=executor,
        )
        if variant in self.variants:  # a re-run notebook cell adds the same variant again
            return self
        if any(v.name == variant.name for v in self.variants):
            msg = f"the plan already has a variant {variant.name!r}; pass name= or another backend / precision"
            raise ConfigError(msg)
        return dataclasses.replace(self, variants=(*self.variants, variant))

    @renamed_keywords()
    def evaluate(
        self,
        source: str | Path,
        *,
        split: str = "val",
        num_images: int | None = None,
        offset: int = 0,
        conf: float = 0.001,
        iou: float = 0.7,
        max_det: int = 300,
    ) -> QuantPipeline:
        """Measure COCO mAP50-95 / mAP50 of every variant (``yolo val`` settings by default)."""
        config = EvalConfig(conf=conf, iou=iou, max_det=max_det, num_images=num_images)
        plan = EvalPlan(source=Path(source), split=split, offset=offset, config=config)
        return dataclasses.replace(self, evaluation=plan)

    @renamed_keywords()
    def benchmark(
        self,
        batch_sizes: tuple[int, ...] = (1,),
        *,
        iterations: int = 100,
        warmup: int = 10,
        threads: int | None = None,
    ) -> QuantPipeline:
        """Time every variant, interleaved, at each batch size. A batch above 1 exports a dynamic batch."""
        config = BenchConfig(batch_sizes=tuple(batch_sizes), iterations=iterations, warmup=warmup, threads=threads)
        export = self.export_config
        if max(config.batch_sizes) > 1 and not export.dynamic:
            export = dataclasses.replace(export, dynamic=True)
        return dataclasses.replace(self, bench=config, export_config=export)

    @renamed_keywords()
    def analyze_sensitivity(
        self,
        *,
        granularity: str = "block",
        top_k: int = 10,
        proxy_images: int = 8,
        max_groups: int | None = None,
        rank_by: str = "quantized",
        float_mode: str = "exclude",
        executor: Executor | None = None,
    ) -> QuantPipeline:
        """Also rank the layer groups by INT8 sensitivity; lands in ``report.json``'s ``sensitivity`` section.

        Analyzes the ONNX Runtime INT8 layout of the plan's first ``ort`` INT8 variant (default
        ``OrtQuantConfig()`` without one) on the calibration images, with mAP of the ``top_k`` groups on
        the evaluation set; ``sensitivity/`` gets the Markdown table and bar chart. The options are those of
        :class:`~yoloquant.decide.SensitivityConfig`; ``executor`` is where the groups are measured
        (``RayExecutor(address="auto")``: one Ray task per group, the same ranking as in one process, docs/ray.md;
        default: in ``run()``'s process).

        Example:
            >>> plan = (QuantPipeline.from_onnx("m.onnx").calibrate("imgs").quantize("int8")
            ...         .evaluate("coco.yaml").analyze_sensitivity(granularity="block", top_k=5))
            >>> plan.sensitivity.top_k
            5
        """
        from yoloquant.decide.groups import Granularity
        from yoloquant.decide.sensitivity import SensitivityConfig

        config = SensitivityConfig(
            granularity=parse_enum(Granularity, granularity, option="granularity"),
            top_k=top_k,
            proxy_images=proxy_images,
            max_groups=max_groups,
            rank_by=rank_by,
            float_mode=float_mode,
        )
        return dataclasses.replace(self, sensitivity=config, sensitivity_executor=executor)

    def with_progress(self, enabled: bool) -> QuantPipeline:
        """Show or hide progress bars."""
        return dataclasses.replace(self, progress=enabled)

    def describe(self) -> str:
        """The plan, one stage per line."""
        lines = [f"model: {self.model} (export: {self.export_config.to_dict()})"]
        if self.calibration:
            c = self.calibration
            lines.append(f"calibrate: {c.num_images} images of {c.source} from #{c.offset}")
        lines += [f"variant {v.describe()}" for v in self.variants]
        if self.evaluation:
            e = self.evaluation
            lines.append(f"evaluate: {e.source} split={e.split} offset={e.offset} {e.config.to_dict()}")
        if self.bench:
            lines.append(f"benchmark: {self.bench.to_dict()} (interleaved)")
        if self.sensitivity:
            s = self.sensitivity
            lines.append(
                f"sensitivity: {s.granularity.value} groups ranked by {s.rank_by} SQNR on {s.proxy_images} "
                f"calibration images, mAP of the top {s.top_k}"
                + (
                    f", groups measured on {_executor_name(self.sensitivity_executor)}"
                    if self.sensitivity_executor
                    else ""
                )
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-able data, stored in the report."""
        optional = {"sensitivity": self.sensitivity.to_dict()} if self.sensitivity else {}
        return {
            "model": str(self.model),
            "export": self.export_config.to_dict(),
            "calibration": _plain(self.calibration),
            "variants": [
                {
                    "name": v.name,
                    "precision": v.precision.value,
                    "backend": v.backend.value,
                    "quantizer": _quantizer_dict(v.quantizer),
                    **_budget_dict(v),
                }
                for v in self.variants
            ],
            "evaluation": _plain(self.evaluation),
            "benchmark": self.bench.to_dict() if self.bench else None,
            **optional,  # only when asked: older plans keep their exact dict (a sweep ledger's fingerprint)
        }

    def run(self, out_dir: str | Path) -> PipelineResult:
        """Check the plan, then run it, writing models and ``report.json`` / ``report.md`` to ``out_dir``."""
        from yoloquant.runner import run_pipeline

        return run_pipeline(self, Path(out_dir))


def _executor_name(executor: Executor) -> str:
    """``RayExecutor(address='auto')``: the executor's class and the options that differ from its defaults."""
    if not dataclasses.is_dataclass(executor):
        return type(executor).__name__
    fields = dataclasses.fields(executor)
    shown = [f"{f.name}={v!r}" for f in fields if (v := getattr(executor, f.name)) != f.default]
    return f"{type(executor).__name__}({', '.join(shown)})" if shown else type(executor).__name__


def _plain(plan: CalibrationPlan | EvalPlan | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    out = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)}
    out["source"] = str(plan.source)
    if isinstance(plan, EvalPlan):
        out["config"] = plan.config.to_dict()
    return out


def _budget_dict(v: VariantPlan) -> dict[str, Any]:
    if v.max_map_drop is None:
        return {}
    return {"budget": {"max_map_drop": v.max_map_drop, "granularity": v.granularity, "data": v.budget_data}}


def _quantizer_dict(quantizer: Quantizer | None) -> dict[str, Any] | None:
    if quantizer is None:
        return None
    return {"name": quantizer.name, "config": quantizer.config.to_dict()}


_QUANTIZER_MEMBERS = ("name", "config", "needs_calibration", "with_progress", "quantize")


def _check_backend(prec: Precision, back: Backend) -> Backend:
    """``back``, if it can run a ``prec`` variant here."""
    if back is Backend.TENSORRT:
        msg = (
            "the TensorRT backend does not run here yet; quantize for it with quantizer='modelopt' and "
            "backend='ort-cpu' to measure the TensorRT-layout model's accuracy on the CPU"
        )
        raise ConfigError(msg)
    if back is Backend.ORT_CUDA and prec in (Precision.INT8, Precision.FP8):
        msg = (
            f"ONNX Runtime's CUDA provider has no {prec} kernels (a Q/DQ model runs slower than FP32 there); "
            "use fp16 or fp32 on ort-cuda, and TensorRT for INT8 / FP8 speed on GPUs"
        )
        raise ConfigError(msg)
    if back is Backend.TORCH and prec not in (Precision.FP32, Precision.FP16):
        msg = f"the torch backend runs fp32 and fp16 variants (the compiled checkpoint), not {prec.value}"
        raise ConfigError(msg)
    return back


def _chosen(
    prec: Precision,
    back: Backend,
    quantizer: Quantizer | str | None,
    calibration: str | CalibMethod | None,
    keep: str | FloatScope | None,
) -> tuple[Quantizer | None, list[str]]:
    """The quantizer a precision string and options name, and the variant name's parts so far."""
    from yoloquant.quantize import default_quantizer_name, make_quantizer

    parts = [prec.value]
    if prec is Precision.FP32:
        if quantizer is not None or calibration is not None or keep is not None:
            msg = "an fp32 variant is not quantized: drop quantizer=, calibration_method= and keep_float="
            raise ConfigError(msg)
        return None, parts
    if quantizer is not None and not isinstance(quantizer, str):
        return _checked_quantizer(quantizer), [*parts, quantizer.name]
    method = parse_enum(CalibMethod, calibration, option="calibration_method") if calibration else None
    chosen = quantizer or default_quantizer_name(prec, back).value
    made = make_quantizer(prec, back, quantizer=chosen, calibration_method=method, keep_float=keep)
    return made, parts + ([str(chosen)] if chosen != default_quantizer_name(prec, back) else [])


def _scope_name(keep_float: str | FloatScope) -> str:
    """A variant name's part for its float scope: the preset, or ``custom``."""
    from yoloquant.quantize.float_scope import FloatScope

    return FloatScope.parse(keep_float).preset or "custom"


def _checked_quantizer(quantizer: object) -> Quantizer:
    """A user's quantizer object, if it has every member of the Quantizer protocol."""
    if isinstance(quantizer, Quantizer):  # every protocol member present
        return quantizer
    kind = type(quantizer).__name__
    if not hasattr(quantizer, "quantize"):  # a config, most likely
        msg = f"quantizer= takes a name or a Quantizer object, not a {kind}; pass a config first: quantize({kind}(...))"
    else:
        missing = [m for m in _QUANTIZER_MEMBERS if not hasattr(quantizer, m)]
        msg = f"{kind} lacks the Quantizer members {missing} (see yoloquant.protocols.Quantizer)"
    raise ConfigError(msg)


def _configured(config: QuantizerConfig) -> tuple[Precision, Quantizer]:
    """The precision a quantizer config makes and the quantizer built from it (``quantize/registry.py``)."""
    from yoloquant.quantize.registry import precision_for, quantizer_for

    return precision_for(config), quantizer_for(config)


def _configured_parts(prec: Precision, back: Backend, quantizer: Quantizer) -> list[str]:
    """A config variant's name parts: those of the equivalent precision-string call (``fp8``, ``int8-nncf``)."""
    from yoloquant.quantize import make_quantizer

    try:
        default: Quantizer | None = make_quantizer(prec, back)
    except ConfigError:  # a registered user config at a precision no shipped quantizer makes
        default = None
    return [prec.value] if type(default) is type(quantizer) else [prec.value, quantizer.name]
