"""What every INT8 quantizer checks and prepares before its expensive work: data, out folder, target file."""

from __future__ import annotations

from pathlib import Path

from yoloquant.artifacts import CalibrationSet, OnnxModel
from yoloquant.errors import QuantizationError

__all__ = ["int8_target"]


def int8_target(model: OnnxModel, data: CalibrationSet, out_dir: Path, *, typical: str) -> Path:
    """``out_dir/<stem>-int8.onnx`` (``-fp32`` dropped), with ``out_dir`` created; refuses empty calibration data."""
    if len(data) == 0:
        msg = f"the calibration set is empty; calibrate on at least one image ({typical} is typical)"
        raise QuantizationError(msg, artifact=model.path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir / f"{model.path.stem.removesuffix('-fp32')}-int8.onnx"
