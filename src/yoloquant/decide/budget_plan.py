"""The accuracy budget as a client of the pipeline: what the runner asks of decide for budgeted variants.

The runner calls, in its stage order:

- :func:`check_budgets` with the plan checks: a budget needs an evaluation set;
- :func:`load_search_images` before any work: each budget's labelled search images, loaded once (the
  ``evaluation`` ones are the runner's evaluation set itself);
- :meth:`BudgetPlan.variants` before quantizing: budgeted variants get a :class:`BudgetedQuantizer` whose
  ``evaluate`` measures candidates on those images, on the variant's backend (``backends.registry``);
- :meth:`BudgetPlan.verify` per variant result: the search checked on the evaluation set, and its warnings.

Example:
    >>> budget = BudgetPlan(plan, load_search_images(plan, names), eval_data)  # doctest: +SKIP
    >>> variants = budget.variants()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yoloquant.config import parse_enum
from yoloquant.decide.evaluator import ModelEvaluator
from yoloquant.errors import ConfigError

if TYPE_CHECKING:
    from yoloquant.data.datasets import Dataset
    from yoloquant.eval.bootstrap import Metric
    from yoloquant.eval.coco import EvalResult
    from yoloquant.pipeline import EvalPlan, QuantPipeline, VariantPlan
    from yoloquant.protocols import Quantizer

__all__ = ["BudgetPlan", "budget_name_part", "check_budgets", "load_search_images"]

_Source = tuple[Path, str, int | None, int]  # (source, split, num_images, offset)


def budget_name_part(quantizer: Quantizer | None, max_map_drop: float, granularity: str, budget_data: str) -> str:
    """The budget's part of a variant name, if the options can work: ONNX Runtime INT8, a budget >= 0, a known
    granularity and search data."""
    from yoloquant.decide.groups import Granularity
    from yoloquant.quantize.ort_static import OrtStaticQuantizer

    if not isinstance(quantizer, OrtStaticQuantizer) or max_map_drop < 0:
        msg = "max_map_drop needs the ONNX Runtime INT8 quantizer (quantizer='ort') and a budget >= 0"
        raise ConfigError(msg)
    parse_enum(Granularity, granularity, option="budget granularity")
    if budget_data not in ("evaluation", "calibration"):
        msg = f"budget_data is 'evaluation' or 'calibration' (labelled calibration images), got {budget_data!r}"
        raise ConfigError(msg)
    return f"budget{max_map_drop:g}"


def check_budgets(plan: QuantPipeline) -> None:
    """Fail before any work when a budgeted variant has no evaluation set to verify it on."""
    budgeted = [v.name for v in plan.variants if v.max_map_drop is not None]
    if budgeted and plan.evaluation is None:
        msg = f"variants {budgeted} have an accuracy budget (max_map_drop): add .evaluate(...) to the plan"
        raise ConfigError(msg)


def load_search_images(plan: QuantPipeline, names: dict[int, str] | None) -> dict[_Source, Dataset]:
    """The labelled calibration images each ``budget_data="calibration"`` budget searches on, loaded once.

    Raises:
        ConfigError: A budget's calibration images have no labels; says how to search elsewhere.
    """
    from yoloquant.decide.budget import load_labelled

    loaded: dict[_Source, Dataset] = {}
    for v in plan.variants:
        if v.max_map_drop is None or v.budget_data != "calibration" or plan.evaluation is None:
            continue
        source = _source(v, plan, plan.evaluation)
        if source in loaded:  # another budget on the same images
            continue
        try:
            loaded[source] = load_labelled(*source, names=names)
        except ConfigError as exc:
            msg = (
                f"variant {v.name!r} searches its accuracy budget on the calibration images (the default; the "
                f"evaluation set then verifies it), so they need labels: {exc}"
            )
            raise ConfigError(msg) from exc
    return loaded


def _source(v: VariantPlan, plan: QuantPipeline, e: EvalPlan) -> _Source:
    """The labelled images a budget is searched on: ``(source, split, num_images, offset)``."""
    c = plan.calibration
    if v.budget_data == "calibration" and c is not None:
        return c.source, c.split, c.num_images, c.offset
    return e.source, e.split, e.config.num_images, e.offset


@dataclass(frozen=True)
class BudgetPlan:
    """A plan's budgeted variants with their search images (``load_search_images``) and evaluation set."""

    plan: QuantPipeline
    search: Mapping[_Source, Dataset]
    eval_data: Dataset | None

    def variants(self) -> tuple[VariantPlan, ...]:
        """The plan's variants, each budgeted one with the budget search as its quantizer.

        Budgets on the same images and backend get the same evaluator, so the runner can share the model of
        two equal budgets; one on another backend searches there.
        """
        evaluators: dict[tuple[Any, ...], ModelEvaluator] = {}
        return tuple(self._budgeted(v, evaluators) for v in self.plan.variants)

    def _budgeted(self, v: VariantPlan, evaluators: dict[tuple[Any, ...], ModelEvaluator]) -> VariantPlan:
        e = self.plan.evaluation
        if v.max_map_drop is None or e is None:
            return v
        from yoloquant.decide.budget import BudgetedQuantizer
        from yoloquant.quantize.ort_static import OrtStaticQuantizer

        source = _source(v, self.plan, e)
        data = self.search.get(source) if v.budget_data == "calibration" else self.eval_data
        config = dataclasses.replace(e.config, num_images=None)  # the count is the search set's
        key = (source, v.budget_data, v.backend)
        if data is not None and key not in evaluators:
            evaluators[key] = ModelEvaluator(data, config, v.backend)
        quantizer = BudgetedQuantizer(
            max_map_drop=v.max_map_drop,
            eval_data=source[0],
            num_images=source[2],
            offset=source[3],
            split=source[1],
            granularity=v.granularity,
            quant=v.quantizer.config if isinstance(v.quantizer, OrtStaticQuantizer) else None,
            eval_config=config,
            evaluate=evaluators.get(key),
            executor=v.executor,
        )
        return dataclasses.replace(v, quantizer=quantizer)

    def warnings(self) -> list[str]:
        """The run's warning when budgets were searched on the evaluation images (in-sample)."""
        plan = self.plan
        in_sample = [v.name for v in plan.variants if v.max_map_drop is not None and v.budget_data == "evaluation"]
        if not in_sample:
            return []
        return [
            f"{in_sample} searched the accuracy budget on the evaluation images, so their reported drop is the one "
            "the search selected for (optimistic); quantize(..., budget_data='calibration') searches on the "
            "labelled calibration images and leaves the evaluation set as a held-out check"
        ]

    def verify(
        self,
        v: VariantPlan,
        quantization: dict[str, Any] | None,
        ev: EvalResult | None,
        baseline: EvalResult | None,
        deltas: dict[str, Metric],
    ) -> tuple[dict[str, Any] | None, list[str]]:
        """A variant's quantization record with ``budget_verification`` added, and the budget's warnings."""
        checked = _with_verification(v, quantization, ev, baseline, deltas)
        return checked, _interval_warnings(v, deltas) + _verification_warnings(v, checked)


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
