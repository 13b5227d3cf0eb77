"""The ``files`` section of ``report.json``: sha256 and size of every file the report describes.

``PipelineResult.save()`` records them as the report is written; ``PipelineResult.load()`` checks them,
so a report never silently describes a model that was replaced, truncated or deleted after the run.
Paths resolve against the folder the report was loaded from: a run folder that was moved or copied
still loads, and so do old reports whose paths were relative to the directory the run started in.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from yoloquant.artifacts import file_sha256
from yoloquant.errors import ConfigError

__all__ = ["file_records", "resolve_path", "verify_files"]


def file_records(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """``{absolute path: {"sha256", "size_bytes"}}`` of the paths that exist (each once)."""
    out: dict[str, dict[str, Any]] = {}
    for p in paths:
        key = str(p.absolute())
        if key not in out and p.is_file():
            out[key] = {"sha256": file_sha256(p), "size_bytes": p.stat().st_size}
    return out


def resolve_path(path: str, *, recorded_dir: str, report_dir: Path | None) -> Path:
    """Where a path written into a report is now.

    Args:
        path: The path as the report holds it (absolute since the ``files`` section; relative before).
        recorded_dir: The report's ``out_dir``, as written.
        report_dir: The folder the report was loaded from (None: not loaded from disk).
    """
    p, recorded = Path(path), Path(recorded_dir)
    if report_dir is None:
        return p
    if p.is_relative_to(recorded) and (not recorded.is_absolute() or recorded != report_dir):
        return report_dir / p.relative_to(recorded)  # an old cwd-relative path, or a moved run folder
    return p if p.is_absolute() else report_dir / p


def verify_files(records: dict[str, Any], *, recorded_dir: str, report_dir: Path, report: Path) -> None:
    """Raise ConfigError naming the first recorded file that is missing or changed since the report."""
    redo = f"the report no longer describes it: run the pipeline again into {report_dir}"
    for path, want in records.items():
        p = resolve_path(path, recorded_dir=recorded_dir, report_dir=report_dir)
        if not p.is_file():
            msg = f"{report} describes {p}, which is missing; {redo}"
            raise ConfigError(msg)
        size = p.stat().st_size
        if size != want.get("size_bytes", size) or file_sha256(p) != want.get("sha256"):
            msg = (
                f"{p} changed after {report} was written (size {want.get('size_bytes')} -> {size} bytes, "
                f"sha256 {str(want.get('sha256'))[:12]}... -> {file_sha256(p)[:12]}...); {redo}"
            )
            raise ConfigError(msg)
