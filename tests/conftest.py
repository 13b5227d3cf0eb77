"""Shared fixtures: the bundled real assets, and one FP32 ONNX export per session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from yoloquant.artifacts import OnnxModel

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
SHARED_DATA = ROOT.parent / "shared" / "data"


def find_shared_weights(relpath: str) -> Path | None:
    """A checkpoint of ``../shared/data/weights`` (or of ``.gpu-data``, the ignored copy a GPU run carries), or
    None where neither holds it."""
    found = (folder / relpath for folder in (SHARED_DATA / "weights", ROOT / ".gpu-data"))
    return next((p for p in found if p.is_file()), None)


@pytest.fixture(scope="session")
def shared_weights() -> Callable[[str], Path | None]:
    """:func:`find_shared_weights`, for tests in other folders."""
    return find_shared_weights


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


@pytest.fixture(scope="session")
def yolov8n_pose_onnx(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    """The real YOLOv8n-pose of ``../shared/data`` exported once per test session (640, static batch 1).

    Skipped where ``../shared/data`` (or Ultralytics) is absent.
    """
    pose_pt = find_shared_weights("yolov8n-pose_coco_from_int8ir/yolov8n-pose.pt")
    if pose_pt is None:
        pytest.skip("needs ../shared/data (yolov8n-pose.pt)")
    pytest.importorskip("ultralytics")
    from yoloquant.config import ExportConfig
    from yoloquant.export import UltralyticsExporter

    return UltralyticsExporter(ExportConfig(imgsz=640)).export(pose_pt, tmp_path_factory.mktemp("pose-export"))


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """One local Ray instance for the whole session (starting one costs seconds): 2 CPUs, no dashboard, and a
    ``timing-node`` resource (a stand-in for a label such as a GPU type). It talks to nothing beyond this machine
    (Ray binds its own node address; with ``_node_ip_address="127.0.0.1"`` a second driver process cannot join).
    Yields its address, which a driver in another process joins. Workers import ``doubles`` and ``src``."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences Ray 2.52's FutureWarning
    path = os.pathsep.join(p for p in (str(ROOT / "tests"), str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        resources={"timing-node": 1},
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": path, "YOLO_OFFLINE": "1"}},
        logging_level="WARNING",
        log_to_driver=False,
    )
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()
