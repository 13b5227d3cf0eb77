"""Shared fixtures: the bundled real assets, and one FP32 ONNX export per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def assets() -> Path:
    return ASSETS


@pytest.fixture(scope="session")
def yolov8n_pt() -> Path:
    return ASSETS / "weights" / "yolov8n.pt"


@pytest.fixture(scope="session")
def coco64_images() -> Path:
    return ASSETS / "coco64" / "images"


@pytest.fixture(scope="session")
def coco64_yaml() -> Path:
    return ASSETS / "coco64.yaml"


@pytest.fixture(scope="session")
def yolov8n_onnx(tmp_path_factory: pytest.TempPathFactory, yolov8n_pt: Path) -> Path:
    """The bundled YOLOv8n exported once per test session (static batch 1, opset 17)."""
    pytest.importorskip("ultralytics")
    from yoloquant.export import UltralyticsExporter

    out = tmp_path_factory.mktemp("yolov8n-export")
    return UltralyticsExporter().export(yolov8n_pt, out).path
