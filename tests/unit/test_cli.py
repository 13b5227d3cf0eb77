from __future__ import annotations

from pathlib import Path

import pytest

from yoloquant.cli import main


def test_unknown_precision_is_a_clear_error(capsys: pytest.CaptureFixture[str], yolov8n_pt: Path) -> None:
    rc = main(["run", "--model", str(yolov8n_pt), "--precision", "fp32,int3", "--out", "x"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown precision 'int3'; choose one of: fp32, fp16, int8, fp8" in err


def test_missing_model_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = main(
        ["run", "--model", str(tmp_path / "m.pt"), "--precision", "fp32", "--no-bench", "--out", str(tmp_path / "o")]
    )
    assert rc == 2
    assert "m.pt does not exist" in capsys.readouterr().err


def test_bad_batch_sizes(capsys: pytest.CaptureFixture[str], yolov8n_pt: Path) -> None:
    rc = main(["run", "--model", str(yolov8n_pt), "--batch-sizes", "1,x", "--out", "x"])
    assert rc == 2
    assert "--batch-sizes takes comma-separated integers" in capsys.readouterr().err
