"""Ultralytics .pt -> ONNX export: metadata kept, static / dynamic batch, end-to-end heads, pass-through."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from yoloquant import ExportError, HeadType, OnnxModel
from yoloquant.backends.ort import OrtEngineBuilder
from yoloquant.config import ExportConfig
from yoloquant.export import OnnxFileExporter, UltralyticsExporter, exporter_for

pytest.importorskip("ultralytics")
onnx = pytest.importorskip("onnx")


def test_static_export_keeps_ultralytics_metadata_and_adds_ours(yolov8n_onnx: Path, yolov8n_pt: Path) -> None:
    meta = {p.key: p.value for p in onnx.load(str(yolov8n_onnx)).metadata_props}
    assert meta["task"] == "detect"
    assert meta["stride"] == "32"
    assert meta["yoloquant.head"] == "dfl"
    from yoloquant.artifacts import file_sha256

    assert meta["yoloquant.source_sha256"] == file_sha256(yolov8n_pt)
    info = OnnxModel.load(yolov8n_onnx).info
    assert info.names[0] == "person" and info.num_classes == 80
    assert info.imgsz == (640, 640)
    assert not info.dynamic_batch
    assert yolov8n_onnx.name == "yolov8n-fp32.onnx"
    assert not list(yolov8n_onnx.parent.glob(".export-*"))  # scratch dir removed


def test_dynamic_export_runs_any_batch_and_opset_is_honoured(tmp_path: Path, yolov8n_pt: Path) -> None:
    model = UltralyticsExporter(ExportConfig(dynamic=True, opset=18)).export(yolov8n_pt, tmp_path)
    assert model.info.dynamic_batch
    assert max(o.version for o in onnx.load(str(model.path)).opset_import if o.domain in ("", "ai.onnx")) == 18
    with OrtEngineBuilder().build(model) as engine:
        (out,) = engine.infer(np.zeros((3, 3, 640, 640), np.float32))
    assert out.shape == (3, 84, 8400)


def test_end_to_end_head_is_recognised(tmp_path: Path, assets: Path) -> None:
    model = UltralyticsExporter().export(assets / "weights" / "yolo26n.pt", tmp_path)
    assert model.info.head is HeadType.END2END
    with OrtEngineBuilder().build(model) as engine:
        (out,) = engine.infer(np.zeros((1, 3, 640, 640), np.float32))
    assert out.shape == (1, 300, 6)


def test_existing_onnx_passes_through(tmp_path: Path, yolov8n_onnx: Path) -> None:
    exporter = exporter_for(yolov8n_onnx)
    assert isinstance(exporter, OnnxFileExporter)
    model = exporter.export(yolov8n_onnx, tmp_path)
    assert model.path.read_bytes() == yolov8n_onnx.read_bytes()
    assert model.info.names[79] == "toothbrush"


def test_unknown_suffix_and_missing_file_say_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"expected an Ultralytics \.pt checkpoint or an \.onnx file"):
        exporter_for(tmp_path / "model.tflite")
    with pytest.raises(ExportError, match="does not exist"):
        UltralyticsExporter().export(tmp_path / "missing.pt", tmp_path)


def test_corrupt_checkpoint_is_an_export_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match=r"could not export .*broken\.pt") as info:
        UltralyticsExporter().export(bad, tmp_path / "out")
    assert info.value.artifact == bad
