"""Decide for the user: which layers to keep float, and which configuration to ship.

- ``sensitivity``: per-group damage of INT8 (quantize only one group / keep only one group float),
  ranked by a fast output proxy (SQNR, cosine) and checked with real mAP for the top candidates.
- ``budget``: quantize everything, return the most sensitive groups to float until the mAP drop is
  within a budget; :class:`BudgetedQuantizer` plugs that into a :class:`~yoloquant.QuantPipeline`.
- ``sweep``: a grid of pipeline variants, resumable through an append-only ledger, timed together,
  with the Pareto front of latency vs mAP and a recommendation; ``executor`` is where its variants run.

Nothing heavy is imported here: the names below load their module on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yoloquant.decide.budget import BudgetConfig, BudgetedQuantizer, BudgetResult, search_budget
    from yoloquant.decide.executor import Executor, LocalExecutor
    from yoloquant.decide.groups import Granularity, LayerGroup, find_groups
    from yoloquant.decide.sensitivity import (
        GroupSensitivity,
        SensitivityConfig,
        SensitivityReport,
        analyze_sensitivity,
    )
    from yoloquant.decide.sweep import Sweep, SweepResult, SweepVariant

__all__ = [
    "BudgetConfig",
    "BudgetResult",
    "BudgetedQuantizer",
    "Executor",
    "Granularity",
    "GroupSensitivity",
    "LayerGroup",
    "LocalExecutor",
    "SensitivityConfig",
    "SensitivityReport",
    "Sweep",
    "SweepResult",
    "SweepVariant",
    "analyze_sensitivity",
    "find_groups",
    "search_budget",
]

_HOME = {
    "BudgetConfig": "budget",
    "BudgetResult": "budget",
    "BudgetedQuantizer": "budget",
    "search_budget": "budget",
    "Executor": "executor",
    "LocalExecutor": "executor",
    "Granularity": "groups",
    "LayerGroup": "groups",
    "find_groups": "groups",
    "GroupSensitivity": "sensitivity",
    "SensitivityConfig": "sensitivity",
    "SensitivityReport": "sensitivity",
    "analyze_sensitivity": "sensitivity",
    "Sweep": "sweep",
    "SweepResult": "sweep",
    "SweepVariant": "sweep",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        msg = f"module 'yoloquant.decide' has no attribute {name!r}"
        raise AttributeError(msg)
    return getattr(importlib.import_module(f"yoloquant.decide.{module}"), name)
