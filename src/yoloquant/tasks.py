"""What differs between YOLO tasks, in one place: export, decode and evaluation dispatch through a ``TaskSpec``.

A :class:`TaskSpec` names the Ultralytics models it accepts (``model.task``), decodes a batch of raw
outputs (all of them: a segmentation head adds mask prototypes, a pose head keypoints) into
:class:`~yoloquant.detections.Detections`, lists the pycocotools ``iouType`` each of its metrics is
scored with, and names the primary metric that budgets and Pareto fronts rank by. Detection,
segmentation and pose (DFL and end-to-end heads each) are shipped.

Example:
    >>> spec = task_spec("detect")
    >>> spec.metric_names, spec.primary_metric
    (('map50_95', 'map50'), 'map50_95')
    >>> task_spec("segment").primary_metric
    'mask_map50_95'
    >>> task_spec("pose").metric_names
    ('map50_95', 'map50', 'pose_map50_95', 'pose_map50')
    >>> task_spec("obb")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    yoloquant.errors.ConfigError: task 'obb' is unknown; supported tasks: detect (detection), pose (...), segment (...)
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from yoloquant.errors import ConfigError, ExportError

if TYPE_CHECKING:
    import numpy as np

    from yoloquant.artifacts import ModelInfo
    from yoloquant.detections import Detections

__all__ = [
    "Decoder",
    "Scoring",
    "Task",
    "TaskSpec",
    "exported_task",
    "register_task",
    "supported_tasks",
    "task_for_ultralytics",
    "task_spec",
    "unregister_task",
]


class Task(StrEnum):
    """The YOLO tasks yoloquant knows by name (all three are supported)."""

    DETECT = "detect"
    SEGMENT = "segment"
    POSE = "pose"


class Decoder(Protocol):
    """Decodes a batch of raw model outputs into per-image detections in model-input pixels."""

    def __call__(
        self,
        outputs: Sequence[np.ndarray],
        info: ModelInfo,
        *,
        conf: float,
        iou: float,
        max_det: int,
        multi_label: bool,
    ) -> list[Detections]: ...


@dataclass(frozen=True)
class Scoring:
    """One pycocotools evaluation of a task and the metric names it produces.

    Attributes:
        iou_type: pycocotools ``iouType``: ``"bbox"``, ``"segm"`` or ``"keypoints"``.
        prefix: Prepended to ``map50_95`` / ``map50`` (``""`` for boxes; ``"mask_"`` for masks, ``"pose_"``
            for keypoints).
    """

    iou_type: str
    prefix: str = ""

    @property
    def metric_names(self) -> tuple[str, str]:
        """``(mAP over IoU 0.50:0.95, mAP at IoU 0.50)`` names."""
        return f"{self.prefix}map50_95", f"{self.prefix}map50"


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """What yoloquant does differently for one task.

    Attributes:
        name: The task's name, as ``ModelInfo.task`` and report.json hold it.
        ultralytics_tasks: The Ultralytics ``model.task`` values exported as this task.
        decode: Raw outputs -> detections.
        scoring: The evaluations that score it, in report order.
        primary_metric: The metric budgets and Pareto fronts rank by (one of ``metric_names``).
        description: A few words for error messages.
    """

    name: str
    ultralytics_tasks: tuple[str, ...]
    decode: Decoder
    scoring: tuple[Scoring, ...]
    primary_metric: str
    description: str = ""

    def __post_init__(self) -> None:
        if self.primary_metric not in self.metric_names:
            msg = f"task {self.name!r}: primary metric {self.primary_metric!r} is not one of {self.metric_names}"
            raise ConfigError(msg)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric its evaluation produces, in report order."""
        return tuple(n for s in self.scoring for n in s.metric_names)


_REGISTRY: dict[str, TaskSpec] = {}
_PLANNED: frozenset[str] = frozenset()  # named, refused until they land (none now)


def register_task(spec: TaskSpec) -> None:
    """Make ``spec`` the task named ``spec.name`` (replacing one registered under that name)."""
    _REGISTRY[spec.name] = spec


def unregister_task(name: str) -> None:
    """Forget the task ``name`` (for tests that register a double); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def supported_tasks() -> str:
    """The registered tasks, for messages: ``detect (detection)``."""
    _register_shipped()
    return ", ".join(f"{n} ({s.description})" if s.description else n for n, s in sorted(_REGISTRY.items()))


def task_spec(name: str) -> TaskSpec:
    """The spec of the task ``name``.

    Raises:
        ConfigError: ``name`` is a planned or unknown task; names the supported tasks.
    """
    _register_shipped()
    if name in _REGISTRY:
        return _REGISTRY[name]
    what = "is not supported yet" if name in _PLANNED else "is unknown"
    msg = f"task {name!r} {what}; supported tasks: {supported_tasks()}"
    raise ConfigError(msg)


def task_for_ultralytics(ultralytics_task: str) -> TaskSpec:
    """The spec that exports Ultralytics models of ``model.task == ultralytics_task``.

    Raises:
        ConfigError: No registered task accepts it; names the supported tasks.
    """
    _register_shipped()
    for spec in _REGISTRY.values():
        if ultralytics_task in spec.ultralytics_tasks:
            return spec
    return task_spec(ultralytics_task)  # a task registered under that name, or the error naming the supported ones


def exported_task(task: str, path: Path, override: str | None = None) -> TaskSpec:
    """The spec of a model about to be exported, whose Ultralytics (or yoloquant) task is ``task``.

    ``override`` runs it as another task: its own, or ``detect`` for any model (a segmentation or pose
    model's boxes, scored as a detector's; faster to evaluate). None keeps the model's own.

    Raises:
        ExportError: No registered task accepts ``task``, or ``override`` is a task the model cannot run as;
            names the supported tasks or the possible overrides.

    Example:
        >>> exported_task("segment", Path("yolo26n-seg.pt"), override="detect").name
        'detect'
    """
    try:
        spec = task_for_ultralytics(task)
    except ConfigError as exc:
        msg = f"{path} is a {task!r} model: {exc}"
        raise ExportError(msg, artifact=path) from exc
    if override is None or override == spec.name:
        return spec
    if override != Task.DETECT:
        can = "'detect' only" if spec.name == Task.DETECT else f"{spec.name!r} or 'detect' (its boxes only)"
        msg = f"{path} is a {spec.name} model: it runs as task {can}, not {override!r}; pass task=None for its own"
        raise ExportError(msg, artifact=path)
    return task_spec(override)


# task -> (decoder module, decoder, scorings, primary metric, description); decoders import lazily (postprocess
# dispatches through this module)
_SHIPPED: dict[Task, tuple[str, str, tuple[Scoring, ...], str, str]] = {
    Task.DETECT: ("yoloquant.postprocess.decode", "decode_boxes", (Scoring("bbox"),), "map50_95", "detection"),
    Task.SEGMENT: (
        "yoloquant.postprocess.masks",
        "decode_segments",
        (Scoring("bbox"), Scoring("segm", "mask_")),
        "mask_map50_95",
        "instance segmentation",
    ),
    Task.POSE: (
        "yoloquant.postprocess.pose",
        "decode_pose",
        (Scoring("bbox"), Scoring("keypoints", "pose_")),
        "pose_map50_95",
        "pose estimation",
    ),
}


def _register_shipped() -> None:
    for task, (module, function, scoring, primary, description) in _SHIPPED.items():
        if task not in _REGISTRY:
            decoder = getattr(importlib.import_module(module), function)
            spec = TaskSpec(
                name=task.value,
                ultralytics_tasks=(task.value,),
                decode=decoder,
                scoring=scoring,
                primary_metric=primary,
                description=description,
            )
            register_task(spec)
