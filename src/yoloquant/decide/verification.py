"""How an accuracy budget found on the search images holds on the pipeline's evaluation set."""

from __future__ import annotations

from typing import Any

import numpy as np

from yoloquant.eval.bootstrap import Metric, probability_at_least

__all__ = ["budget_verification"]


def budget_verification(
    found: dict[str, Any],
    delta: Metric,
    delta_samples: np.ndarray | None,
    *,
    held_out: bool,
    images: int,
) -> dict[str, Any]:
    """How the budget found by a search holds on the evaluation set.

    Args:
        found: The search's outcome (``BudgetResult.to_dict()``).
        delta: The budgeted variant's mAP50-95 delta vs FP32 on the evaluation set, points, paired interval.
        delta_samples: The paired bootstrap replicates of that delta in points (variant minus FP32 per
            resample); None when the evaluation did not resample.
        held_out: Whether the search ran on other images than the evaluation set.
        images: Evaluation images.

    Returns:
        ``verified_drop_points`` (= -delta) with ``verified_drop_ci95``, ``within_budget`` (the point drop
        <= budget), ``p_within_budget`` (the fraction of the paired replicates, centred on the measured
        delta as the interval is, whose drop is <= budget), ``resolved`` (the interval lies wholly on one
        side of the budget) and the search's own ``searched_drop_points`` / ``searched_delta``.

    Example:
        >>> found = {"max_map_drop": 0.3, "drop_points": 0.1, "search_delta": None}
        >>> v = budget_verification(found, Metric(value=-0.2), np.array([-0.5, -0.2, 0.1]), held_out=True, images=8)
        >>> v["within_budget"], round(v["p_within_budget"], 3)
        (True, 0.667)
    """
    budget = float(found["max_map_drop"])
    drop = -delta.value
    ci = None if delta.low is None or delta.high is None else [-delta.high, -delta.low]
    p = probability_at_least(delta_samples, -budget, value=delta.value) if delta_samples is not None else None
    return {
        "max_map_drop": budget,
        "held_out": held_out,
        "searched_drop_points": found.get("drop_points"),
        "searched_delta": found.get("search_delta"),
        "eval_images": images,
        "verified_delta": delta.to_dict(),
        "verified_drop_points": round(drop, 4),
        "verified_drop_ci95": ci,
        "within_budget": drop <= budget + 1e-9,
        "p_within_budget": p,
        "resolved": None if ci is None else bool(ci[1] <= budget or ci[0] > budget),
    }
