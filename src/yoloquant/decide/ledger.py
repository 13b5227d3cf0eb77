"""An append-only JSONL ledger: one line per finished unit of work, durable before the next starts.

A line is written in one ``write``, flushed and fsync'd, so a process killed at any moment (even
``kill -9``) leaves every earlier line intact and at most one partial last line, which
:meth:`Ledger.entries` ignores and :meth:`Ledger.repair` cuts off before the next append.

Example:
    >>> ledger = Ledger(Path("runs/sweep/ledger.jsonl"))  # doctest: +SKIP
    >>> ledger.append({"name": "int8", "map50_95": 0.45})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["Ledger"]

log = logging.getLogger(__name__)


class Ledger:
    """Finished entries keyed by ``name``; the first entry of a name wins."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every complete line, by name (the first of a name). A torn last line (killed mid-write) is skipped."""
        out: dict[str, dict[str, Any]] = {}
        for entry in self.lines():
            out.setdefault(str(entry["name"]), entry)
        return out

    def lines(self) -> list[dict[str, Any]]:
        """Every complete line, in order. A torn last line (killed mid-write) is skipped."""
        if not self.path.is_file():
            return []
        out: list[dict[str, Any]] = []
        lines = self.path.read_bytes().split(b"\n")
        for i, raw in enumerate(lines):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                if i == len(lines) - 1:  # no newline after it: the write was cut short
                    log.warning("ignoring a partial last line of %s", self.path)
                    continue
                raise
            out.append(entry)
        return out

    def repair(self) -> None:
        """Cut a partial last line off, so the next append starts on a line of its own."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with self.path.open("r+b") as fh:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())

    def append(self, entry: dict[str, Any]) -> None:
        """Add one entry durably (one write, flush, fsync)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        with self.path.open("ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
