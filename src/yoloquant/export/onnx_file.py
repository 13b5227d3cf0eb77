"""Pass an existing ONNX file through, after checking it carries the metadata we need."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from yoloquant._io import atomic_path
from yoloquant._optional import require
from yoloquant.artifacts import META_PREFIX, ModelInfo, OnnxModel
from yoloquant.errors import ExportError
from yoloquant.tasks import exported_task

__all__ = ["OnnxFileExporter"]


@dataclass(frozen=True)
class OnnxFileExporter:
    """An "exporter" for a model that is already ONNX: copies it into the run directory.

    The file must have been exported by Ultralytics or yoloquant (it needs the ``names`` metadata), for a
    task :mod:`yoloquant.tasks` supports.

    Example:
        >>> OnnxFileExporter().export(Path("yolov8n.onnx"), Path("runs/x"))  # doctest: +SKIP
    """

    task: str | None = None  # run it as this task (its own, or "detect"); None: the file's own

    def export(self, source: Path, out_dir: Path) -> OnnxModel:
        if not source.is_file():
            msg = f"model file {source} does not exist; pass the path of a .pt or .onnx YOLO model"
            raise ExportError(msg, artifact=source)
        own = ModelInfo.from_onnx(source).task
        spec = exported_task(own, source, self.task)  # before copying: an unsupported task fails here
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = source.stem.removesuffix("-fp32")
        target = out_dir / f"{stem}-fp32.onnx"
        if spec.name != own:
            with atomic_path(target) as staged:
                _save_with_task(source, staged, spec.name)
        elif source.resolve() != target.resolve():
            with atomic_path(target) as staged:
                shutil.copyfile(source, staged)
        return OnnxModel(path=target, info=ModelInfo.from_onnx(target))


def _save_with_task(source: Path, target: Path, task: str) -> None:
    """A copy of ``source`` whose ``yoloquant.task`` metadata says ``task``."""
    onnx = require("onnx")
    model = onnx.load(str(source))
    props = {p.key: p for p in model.metadata_props}
    entry = props.get(f"{META_PREFIX}task") or model.metadata_props.add()
    entry.key, entry.value = f"{META_PREFIX}task", task
    onnx.save(model, str(target))
