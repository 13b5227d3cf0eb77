"""A sweep's phase 1 in the driver: the one export every variant starts from, the progress bar (variants done /
running / failed) and the record of variants that failed (``<out>/failed.jsonl``, append-only like the
ledger, a line per failure).

A failed variant is not in the ledger, so a rerun of the sweep tries it again; the report lists the variants
whose last try failed and that are still missing from the ledger.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from yoloquant._optional import require
from yoloquant.config import ExportConfig
from yoloquant.decide.executor import VariantJob
from yoloquant.decide.ledger import Ledger

__all__ = ["FailureLog", "SweepProgress", "export_once"]

log = logging.getLogger(__name__)


def export_once(model: Path, config: ExportConfig, out: Path) -> Path:
    """Export a ``.pt`` once for the whole sweep (into ``out/export``); variants start from the ONNX file."""
    if model.suffix != ".pt":
        return model
    from yoloquant.export import exporter_for

    onnx = out / "export" / f"{model.stem}-fp32.onnx"
    if not onnx.is_file():
        exporter_for(model, config).export(model, out / "export")
    return onnx


class SweepProgress:
    """One bar over the sweep's variants; its text says how many are done, running and failed."""

    def __init__(self, *, total: int, done: int, parallelism: int, enabled: bool) -> None:
        self.bar = require("tqdm").tqdm(total=total, initial=done, desc="sweep", unit="variant", disable=not enabled)
        self.done, self.failed, self.parallelism, self.left = done, 0, max(1, parallelism), 0

    def wave(self, size: int) -> None:
        """A wave of ``size`` jobs was handed to the executor."""
        self.left = size
        self._show()

    def finished(self, name: str, *, ok: bool) -> None:
        self.left -= 1
        if ok:
            self.done += 1
        else:
            self.failed += 1
        self.bar.update()
        self._show(name)

    def _show(self, last: str | None = None) -> None:
        running = min(self.parallelism, self.left)
        text = f"done {self.done}, running {running}, failed {self.failed}" + (f"; last {last}" if last else "")
        self.bar.set_postfix_str(text)

    def close(self) -> None:
        self.bar.close()


class FailureLog:
    """``<out>/failed.jsonl``: one line per failed try of a variant, with its error; the driver writes it."""

    def __init__(self, out: Path) -> None:
        self.ledger = Ledger(out / "failed.jsonl")

    def record(self, job: VariantJob, error: Exception, *, fingerprint: str) -> dict[str, Any]:
        entry = {
            "name": job.name,
            "params": job.variant.to_dict() if job.variant else {"precision": "fp32"},
            "error": f"{type(error).__name__}: {_one_line(error)}",
            "base": fingerprint,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.ledger.repair()
        self.ledger.append(entry)
        log.warning("sweep: %s failed: %s", job.name, entry["error"])
        return entry

    def missing(self, done: dict[str, dict[str, Any]], wanted: set[str]) -> dict[str, dict[str, Any]]:
        """The last failure of each wanted variant that is not in the ledger (``done``), by name."""
        last: dict[str, dict[str, Any]] = {}
        for entry in self.ledger.lines():
            last[str(entry["name"])] = entry
        return {n: e for n, e in last.items() if n in wanted and n not in done}


def _one_line(exc: BaseException) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or repr(exc)
