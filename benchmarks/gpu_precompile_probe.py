"""Probe of ``torch.compile(...).aot_compile()`` for YOLOv8n FP16 on a GPU (#15; the ``"precompiled"`` artifact).

    YOLO_OFFLINE=1 python benchmarks/gpu_precompile_probe.py save    # compile b1, b16 and a dynamic batch
    YOLO_OFFLINE=1 python benchmarks/gpu_precompile_probe.py load    # a fresh process loads, captures, replays
    TORCHINDUCTOR_CACHE_DIR=/tmp/empty python benchmarks/gpu_precompile_probe.py load   # as on another machine

Prints one JSON line per step: seconds to compile / load, capture seconds, the replay's median ms and the largest
difference from the outputs at save time. Results of the lent H200: benchmarks/results/gpu-torch-load-h200.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

START = time.perf_counter()
import torch  # noqa: E402  (the import is timed)
from gpu_torch import _timed  # noqa: E402  (this folder's GPU benchmark)

from yoloquant.backends.torch.engine import _module  # noqa: E402
from yoloquant.backends.torch.precompiled import aot_compile  # noqa: E402
from yoloquant.backends.torch.replay import Replay, as_list  # noqa: E402
from yoloquant.config import Precision  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PT = Path(os.environ.get("PT", str(ROOT / "assets" / "weights" / "yolov8n.pt")))
ART = Path("/tmp/aotprobe")
VARIANTS = {"b1": (1, False), "b16": (16, False), "dyn": (16, True)}  # name: (batch, dynamic batch)


def _save(module: Any, device: Any, out: dict[str, Any]) -> None:
    for name, (batch, dynamic) in VARIANTS.items():
        x = torch.zeros((batch, 3, 640, 640), dtype=torch.uint8, device=device)
        t = time.perf_counter()
        try:
            if dynamic:
                torch._dynamo.mark_dynamic(x, 0, min=1, max=32)
            compiled = aot_compile(module, x)
            with torch.inference_mode():
                ref = as_list(compiled(module, x))
            compiled.save_compiled_function(str(ART / f"{name}.aot"))
            torch.save([r.cpu() for r in ref], ART / f"{name}.ref")
            out[name] = {"compile_s": round(time.perf_counter() - t, 2), "bytes": (ART / f"{name}.aot").stat().st_size}
        except Exception as exc:  # a probe records what failed
            out[name] = {"error": repr(exc)[-800:]}


def _load(module: Any, device: Any, out: dict[str, Any]) -> None:
    for name, (batch, dynamic) in VARIANTS.items():
        if not (ART / f"{name}.aot").is_file():
            continue
        t = time.perf_counter()
        with (ART / f"{name}.aot").open("rb") as f:
            compiled = torch.compiler.load_compiled_function(f)
        row: dict[str, Any] = {"load_s": round(time.perf_counter() - t, 2)}
        for b in (1, 16) if dynamic else (batch,):
            t = time.perf_counter()
            replay = Replay(lambda x, c=compiled: c(module, x), (b, 3, 640, 640), device, True)
            row[f"capture_b{b}_s"] = round(time.perf_counter() - t, 2)
            row[f"replay_b{b}_ms"] = round(statistics.median(_timed(replay.launch) for _ in range(200)), 3)
        with torch.inference_mode():
            got = as_list(compiled(module, torch.zeros((batch, 3, 640, 640), dtype=torch.uint8, device=device)))
        ref = torch.load(ART / f"{name}.ref")
        row["maxdiff_vs_save"] = max(
            float((g.float().cpu() - r.float()).abs().max()) for g, r in zip(got, ref, strict=True)
        )
        row["total_s"] = round(time.perf_counter() - START, 2)
        out[name] = row


def main() -> None:
    step = sys.argv[1]
    ART.mkdir(exist_ok=True)
    imported = time.perf_counter() - START
    device = torch.device("cuda", 0)
    module = _module(PT, Precision.FP16, device)
    out: dict[str, Any] = {"torch": torch.__version__, "step": step, "import_s": round(imported, 2),
                           "module_s": round(time.perf_counter() - START - imported, 2)}  # fmt: skip
    (_save if step == "save" else _load)(module, device, out)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("YOLO_OFFLINE", "1")
    main()
