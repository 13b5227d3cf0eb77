"""Export an Ultralytics ``.pt`` checkpoint to ONNX, offline, keeping the model's metadata."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from yoloquant._io import replace_durably
from yoloquant._optional import require
from yoloquant.artifacts import META_PREFIX, ModelInfo, OnnxModel, file_sha256
from yoloquant.config import ExportConfig
from yoloquant.errors import ExportError
from yoloquant.export.onnx_file import OnnxFileExporter
from yoloquant.export.optimize import rewrite_dfl_softmax, slices_to_split
from yoloquant.protocols import Exporter
from yoloquant.tasks import exported_task

__all__ = ["UltralyticsExporter", "exporter_for"]


@dataclass(frozen=True)
class UltralyticsExporter:
    """Ultralytics ``.pt`` -> ONNX with ``YOLO(pt).export(format="onnx")``.

    The ONNX keeps Ultralytics' metadata (names, imgsz, stride, task, end2end) and gains
    ``yoloquant.head``, ``yoloquant.task`` (the :mod:`yoloquant.tasks` task that accepted ``model.task``) and
    ``yoloquant.source_sha256``. Runs with ``YOLO_OFFLINE=1``: nothing is downloaded.

    Example:
        >>> exporter = UltralyticsExporter(ExportConfig(imgsz=640))
        >>> model = exporter.export(Path("yolov8n.pt"), Path("runs/x"))  # doctest: +SKIP
        >>> model.info.names[0]  # doctest: +SKIP
        'person'
    """

    config: ExportConfig = field(default_factory=ExportConfig)

    def export(self, source: Path, out_dir: Path) -> OnnxModel:
        with _info_hidden():  # Ultralytics' banner, and "yolo predict model=<scratch path>" hints
            return self._export(source, out_dir)

    def _export(self, source: Path, out_dir: Path) -> OnnxModel:
        if not source.is_file():
            msg = f"model file {source} does not exist; pass the path of an Ultralytics .pt checkpoint"
            raise ExportError(msg, artifact=source)
        os.environ.setdefault("YOLO_OFFLINE", "1")
        ultralytics = require("ultralytics")
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / f"{source.stem}-fp32.onnx"
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
            # Ultralytics writes the ONNX beside the checkpoint, so export a copy inside a scratch dir.
            weights = Path(tmp) / source.name
            shutil.copyfile(source, weights)
            try:
                model = ultralytics.YOLO(str(weights))
                exported = model.export(
                    format="onnx",
                    imgsz=self.config.imgsz,
                    opset=self.config.opset,
                    dynamic=self.config.dynamic,
                    simplify=self.config.simplify,
                    verbose=False,
                )
            except Exception as exc:  # Ultralytics raises many types; translate at the boundary
                msg = f"Ultralytics could not export {source} to ONNX: {exc}"
                raise ExportError(msg, artifact=source) from exc
            spec = exported_task(str(model.task), source, self.config.task)
            _finish(Path(exported), source, self.config, spec.name)
            replace_durably(Path(exported), target)
        return OnnxModel(path=target, info=ModelInfo.from_onnx(target), checkpoint=source)


@contextlib.contextmanager
def _info_hidden() -> Iterator[None]:
    """Drop the ``ultralytics`` logger's INFO records (warnings still show) while exporting.

    A filter, not a level: Ultralytics resets its logger's level when it is first imported.
    """
    logger = logging.getLogger("ultralytics")

    def warnings_only(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING

    logger.addFilter(warnings_only)
    try:
        yield
    finally:
        logger.removeFilter(warnings_only)


def _finish(path: Path, source: Path, config: ExportConfig, task: str) -> None:
    """Apply the output-preserving rewrites and add yoloquant's metadata keys to an Ultralytics export."""
    onnx = require("onnx")
    model = onnx.load(str(path))
    if config.fast_dfl and rewrite_dfl_softmax(model):
        onnx.checker.check_model(model)
    if slices_to_split(model):
        onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    head = "end2end" if meta.get("end2end") == "True" else "dfl"
    extra = {
        f"{META_PREFIX}head": head,
        f"{META_PREFIX}task": task,
        f"{META_PREFIX}source_sha256": file_sha256(source),
    }
    for key, value in extra.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def exporter_for(source: Path, config: ExportConfig | None = None) -> Exporter:
    """The exporter for a model file, chosen by its suffix (``.pt`` or ``.onnx``)."""
    suffix = source.suffix.lower()
    if suffix == ".pt":
        return UltralyticsExporter(config or ExportConfig())
    if suffix == ".onnx":
        return OnnxFileExporter(task=(config or ExportConfig()).task)
    msg = f"cannot export {source}: expected an Ultralytics .pt checkpoint or an .onnx file, got {suffix!r}"
    raise ExportError(msg, artifact=source)
