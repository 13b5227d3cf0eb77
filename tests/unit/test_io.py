"""Atomic writes: the target is either the old file or the whole new one, never a torn one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from yoloquant import _io


def test_atomic_write_bytes_replaces_and_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    fsync = os.fsync
    monkeypatch.setattr(_io.os, "fsync", lambda fd: (synced.append(fd), fsync(fd))[1])
    target = tmp_path / "sub" / "report.json"
    _io.atomic_write_bytes(target, b"old")
    _io.atomic_write_text(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert len(synced) == 2
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "cache.npy"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="killed"), _io.atomic_open(target) as fh:
        fh.write(b"half")
        msg = "killed"
        raise RuntimeError(msg)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npy"]


def test_atomic_open_round_trips_an_array(tmp_path: Path) -> None:
    target = tmp_path / "images.npy"
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    with _io.atomic_open(target) as fh:
        np.save(fh, array, allow_pickle=False)
    np.testing.assert_array_equal(np.load(target), array)


def test_atomic_path_for_a_library_that_writes_to_a_path(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    with _io.atomic_path(target) as staged:
        assert staged.parent == tmp_path and staged != target
        staged.write_bytes(b"onnx")
        assert not target.exists()
    assert target.read_bytes() == b"onnx"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_replace_durably_moves_a_finished_file(tmp_path: Path) -> None:
    staged, target = tmp_path / "exported.onnx", tmp_path / "m-fp32.onnx"
    staged.write_bytes(b"x")
    target.write_bytes(b"old")
    _io.replace_durably(staged, target)
    assert target.read_bytes() == b"x" and not staged.exists()


def test_written_files_get_the_usual_permissions_not_mkstemps_0600(tmp_path: Path) -> None:
    """A model written for a server that runs as another user must stay readable as a plain write leaves it."""
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    _io.atomic_write_bytes(tmp_path / "atomic.bin", b"x")
    with _io.atomic_path(tmp_path / "staged.onnx") as staged:
        staged.write_bytes(b"x")
    mode = plain.stat().st_mode & 0o777
    assert (tmp_path / "atomic.bin").stat().st_mode & 0o777 == mode
    assert (tmp_path / "staged.onnx").stat().st_mode & 0o777 == mode
