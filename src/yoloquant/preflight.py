"""Checks a plan makes before any work, from the model file, the installed packages and the plan itself.

``QuantPipeline.run()`` calls :func:`check_plan` first (and then loads and checks the data), so a plan that
cannot work fails in about a second and writes nothing, instead of after export, calibration and quantization.

Example:
    >>> facts = model_facts(Path("assets/weights/yolov8n.pt"), ExportConfig())  # doctest: +SKIP
    >>> facts.names[0], facts.task, facts.batch  # doctest: +SKIP
    ('person', 'detect', 1)
"""

from __future__ import annotations

import collections
import copyreg
import logging
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from yoloquant._optional import available, require
from yoloquant.artifacts import ModelInfo
from yoloquant.config import ExportConfig, HeadType
from yoloquant.errors import ConfigError, ExportError
from yoloquant.tasks import exported_task

if TYPE_CHECKING:
    from yoloquant.pipeline import QuantPipeline

__all__ = ["ModelFacts", "check_plan", "model_facts"]

log = logging.getLogger(__name__)

_REEXPORT = "re-export it from the .pt (`yolo export model=yolov8n.pt format=onnx`) or pass the .pt itself"


@dataclass(frozen=True, kw_only=True)
class ModelFacts:
    """What a model file says about itself, read without exporting or running it.

    Attributes:
        path: The ``.pt`` or ``.onnx`` file.
        names: Class index -> name; None when a checkpoint cannot be read without PyTorch (checked at export).
        task: Ultralytics task (``detect``, ``segment``, ...), when known.
        batch: The fixed batch size of the ONNX input (of the export, for a ``.pt``); None when dynamic.
    """

    path: Path
    names: dict[int, str] | None
    task: str | None
    batch: int | None


def model_facts(path: Path, export: ExportConfig) -> ModelFacts:
    """Read what :class:`ModelFacts` holds from an ONNX file or an Ultralytics checkpoint.

    Raises:
        ExportError: If an ONNX file cannot be parsed, or its graph is not a YOLO detection head.
        ConfigError: If an ONNX file lacks Ultralytics' metadata.
    """
    if path.suffix.lower() == ".onnx":
        return _onnx_facts(path)
    names, task = _checkpoint_names(path)
    return ModelFacts(path=path, names=names, task=task, batch=None if export.dynamic else 1)


def _onnx_facts(path: Path) -> ModelFacts:
    onnx = require("onnx")
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # protobuf's DecodeError and onnx's own errors: translated here
        msg = f"cannot read {path} as ONNX ({type(exc).__name__}: {exc}); it is truncated or not ONNX: {_REEXPORT}"
        raise ExportError(msg, artifact=path) from exc
    info = ModelInfo.from_onnx(path)
    _check_task(path, info.task)
    _check_head(path, graph, info)
    dim = graph.input[0].type.tensor_type.shape.dim[0]
    batch = int(dim.dim_value) if dim.HasField("dim_value") and dim.dim_value > 0 else None
    return ModelFacts(path=path, names=info.names, task=info.task, batch=batch)


def _dims(value_info: Any) -> list[int | str]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _check_head(path: Path, graph: Any, info: ModelInfo) -> None:
    """The first output must be a YOLO head: DFL ``[B, 4 + nc + extra, anchors]`` or end-to-end ``[B, N, 6 + extra]``.

    ``extra`` is what the model's own task adds after the class scores (``info.source_task``, also when it runs
    as ``detect``): a seg head's mask coefficients (as many as its second output's prototypes), a pose head's
    keypoint values (``kpt_shape``); none for a detector.
    """
    if not graph.output:
        msg = f"{path} has no graph outputs, so it is not a YOLO detector; {_REEXPORT}"
        raise ExportError(msg, artifact=path)
    dims = _dims(graph.output[0])
    extra, what = _extra_channels(path, graph, info)
    if info.head is HeadType.END2END:
        ok, expected = len(dims) == 3 and dims[2] in (6 + extra, "?"), f"[batch, max_det, 6{what}]"
    else:
        want = 4 + info.num_classes + extra
        ok = len(dims) == 3 and dims[1] in (want, "?")
        expected = f"[batch, 4 + {info.num_classes} classes{what}, anchors]"
    if not ok:
        kind = {"detect": "detection", "segment": "segmentation"}.get(info.source_task, info.source_task)
        msg = (
            f"{path} is not a YOLO {kind} graph: its output {graph.output[0].name!r} has shape {dims}, "
            f"where a {info.head.value} head with {info.num_classes} class names gives {expected}; {_REEXPORT}"
        )
        raise ExportError(msg, artifact=path)


def _extra_channels(path: Path, graph: Any, info: ModelInfo) -> tuple[int, str]:
    """(channels after the class scores, their words for the message) of the model's own task."""
    if info.source_task == "pose":
        if info.kpt_shape is None:
            msg = f"{path} is a pose model without Ultralytics' 'kpt_shape' metadata; {_REEXPORT}"
            raise ExportError(msg, artifact=path)
        k, d = info.kpt_shape
        return k * d, f" + {k * d} keypoint values"
    if info.source_task == "segment" and len(graph.output) > 1:
        protos = _dims(graph.output[1])
        if len(protos) == 4 and isinstance(protos[1], int) and protos[1] > 0:
            return protos[1], f" + {protos[1]} mask coefficients"
    return 0, ""


def _check_task(path: Path, task: str | None) -> None:
    if task is not None:
        exported_task(task, path)


class _Stub:
    """Stands in for every class a checkpoint pickles: nothing of the checkpoint's code runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state


class _StubUnpickler(pickle.Unpickler):
    _REAL: ClassVar[dict[tuple[str, str], Any]] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("copyreg", "_reconstructor"): getattr(copyreg, "_reconstructor"),  # noqa: B009 - private, untyped
    }

    def find_class(self, module: str, name: str) -> Any:
        return self._REAL.get((module, name)) or type(name, (_Stub,), {})

    def persistent_load(self, pid: Any) -> None:  # tensor storages: not needed for names
        return None


def _checkpoint_names(path: Path) -> tuple[dict[int, str] | None, str | None]:
    """(names, task) of an Ultralytics checkpoint, from its pickle with every class stubbed (no torch, ~40 ms)."""
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None:
                return None, None
            with archive.open(pkl) as fh:
                checkpoint = _StubUnpickler(fh).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as exc:
        log.debug("cannot read the names of %s without PyTorch (%s); the export checks them", path, exc)
        return None, None
    model = checkpoint.get("ema") or checkpoint.get("model") if isinstance(checkpoint, dict) else None
    state = getattr(model, "state", None)
    if not isinstance(state, dict):
        return None, None
    raw, task = state.get("names"), state.get("task")
    names = {int(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else None
    if isinstance(raw, list):
        names = dict(enumerate(str(n) for n in raw))
    return names, str(task) if task else None


def check_plan(plan: QuantPipeline) -> ModelFacts:
    """Everything about ``plan`` that can be checked from the model file and the installed packages.

    Raises:
        ExportError: The model file is unreadable, not a YOLO detector, or not a detection model.
        ConfigError: A batch the model cannot run, or a quantizer that cannot start from this model.
        MissingDependencyError: A package or an ONNX Runtime execution provider the plan needs is missing.
    """
    for module in _needed_modules(plan):
        if not available(module):
            require(module)  # raises the MissingDependencyError that names the extra
    facts = model_facts(plan.model, plan.export_config)
    _check_task(plan.model, facts.task)
    _check_batches(plan, facts)
    _check_quantizers(plan)
    from yoloquant.backends import check_backend

    for backend in {v.backend for v in plan.variants}:
        check_backend(backend)
    return facts


def _needed_modules(plan: QuantPipeline) -> list[str]:
    modules = ["onnx", "onnxruntime"]
    if plan.model.suffix.lower() == ".pt":
        modules += ["torch", "ultralytics"]
    if plan.evaluation is not None:
        modules.append("pycocotools")
    by_quantizer = {"modelopt": "modelopt.onnx.quantization", "brevitas": "brevitas"}
    quantizers = {v.quantizer.name for v in plan.variants if v.quantizer is not None}
    modules += [by_quantizer[name] for name in sorted(quantizers) if name in by_quantizer]
    return modules


def _check_batches(plan: QuantPipeline, facts: ModelFacts) -> None:
    if facts.batch is None:
        return
    wanted = set(plan.bench.batch_sizes) if plan.bench else set()
    wanted |= {plan.evaluation.config.batch} if plan.evaluation else set()
    bad = sorted(b for b in wanted if b != facts.batch)
    if not bad:
        return
    if plan.model.suffix.lower() == ".onnx":
        fix = (
            f"benchmark batch {facts.batch} only (--batch-sizes {facts.batch} / "
            f"benchmark(batch_sizes=({facts.batch},))), "
            "or start from the .pt, which yoloquant exports with a dynamic batch when a benchmark batch is > 1 "
            "(--model yolov8n.pt / QuantPipeline.from_ultralytics), or re-export the ONNX with a dynamic batch "
            "(`yolo export model=yolov8n.pt format=onnx dynamic=True`)"
        )
    else:
        fix = "export with a dynamic batch: QuantPipeline.from_ultralytics(..., dynamic=True)"
    msg = f"{plan.model} has a fixed batch of {facts.batch}, so it cannot run batch {', '.join(map(str, bad))}; {fix}"
    raise ConfigError(msg)


def _check_quantizers(plan: QuantPipeline) -> None:
    if plan.model.suffix.lower() != ".onnx":
        return
    from yoloquant.quantize.brevitas import BrevitasQuantizer

    brevitas = [v.name for v in plan.variants if isinstance(v.quantizer, BrevitasQuantizer)]
    if brevitas:
        msg = (
            f"variants {brevitas} use Brevitas, which quantizes the PyTorch model, but the plan starts from the ONNX "
            f"{plan.model}; start from its Ultralytics checkpoint (--model yolov8n.pt / "
            "QuantPipeline.from_ultralytics('yolov8n.pt'))"
        )
        raise ConfigError(msg)
