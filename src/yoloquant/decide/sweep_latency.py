"""A sweep's phase 2: every finished variant timed in one interleaved run, each on its own backend.

The timings are cached in ``<out>/latency.json`` under the timed models, their backends and the benchmark
settings, so a rerun with other iterations, warmup, threads or batch sizes times again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from yoloquant._io import atomic_write_text
from yoloquant.config import BenchConfig
from yoloquant.decide.sweep_result import _entry_backend, _latency_key
from yoloquant.pipeline import EvalPlan

__all__ = ["first_image", "measure_latency"]


def measure_latency(
    out: Path,
    entries: dict[str, dict[str, Any]],
    bench: BenchConfig,
    *,
    inputs: Callable[[dict[str, Any]], Any],
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """Each entry's latency (``LatencyResult.to_dict()`` of its first batch size), timed or from the cache.

    ``inputs(engines)`` gives the batch they are timed on (the sweep's first evaluation image).
    """
    path = out / "latency.json"
    key = _latency_key(entries, bench)
    if path.is_file():
        cached: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("key") == json.loads(json.dumps(key)):
            return dict(cached["latency"])
    from yoloquant.artifacts import OnnxModel
    from yoloquant.backends import open_engines
    from yoloquant.bench.latency import benchmark_interleaved

    models = {n: (OnnxModel.load(e["model_path"]), _entry_backend(e)) for n, e in entries.items()}
    with ExitStack() as stack:
        engines = open_engines(stack, models, threads=bench.threads)
        timed = benchmark_interleaved(engines, bench, inputs=inputs(engines), progress=progress)
    latency = {n: r[0].to_dict() for n, r in timed.items()}
    atomic_write_text(path, json.dumps({"key": key, "latency": latency}, indent=1) + "\n")
    return latency


def first_image(ev: EvalPlan, imgsz: int) -> Any:
    """The first evaluation image, as the runner times with (``bench.latency.real_input``)."""
    from yoloquant.bench.latency import real_input
    from yoloquant.data.datasets import load_dataset

    image = load_dataset(ev.source, split=ev.split, labels=False).select(1, ev.offset).images[0]
    return real_input(image, imgsz)
