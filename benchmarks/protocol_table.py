"""The protocol's Markdown table from one or more ``protocol.jsonl`` ledgers (benchmarks/protocol.py).

    .venv/bin/python benchmarks/protocol_table.py [LABEL=]runs/protocol-v8/protocol.jsonl ...

A row's CPU is the ledger's ``cpu`` field (benchmarks/protocol.py writes it) or the LABEL given for that file:
ONNX Runtime's uint8 x int8 kernels compute differently on CPUs with and without VNNI.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _cell(d: dict[str, object]) -> str:
    low, high = d["ci95"]  # type: ignore[misc]
    return f"{d['value']:+.2f} [{low:+.2f}, {high:+.2f}]"


def main(paths: list[str]) -> int:
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for arg in paths:
        label, _, path = arg.rpartition("=")
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            key = (Path(r["model"]).stem, r["variant"], r.get("cpu", label))
            rows.setdefault(key, {})[r["set"]] = _cell(r["delta_map50_95"])
    print("| model | variant | CPU | coco128 64-127 (choose) | coco-val-person, 252 images (report) |")
    print("|---|---|---|---|---|")
    for (model, variant, cpu), sets in sorted(rows.items()):
        print(
            f"| {model} | {variant} | {cpu} | {sets.get('coco128-64-127', '-')} | {sets.get('coco-val-person', '-')} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
