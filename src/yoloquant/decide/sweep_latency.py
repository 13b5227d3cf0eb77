"""A sweep's phase 2: every finished variant timed in one interleaved run, each on its own backend, on one node.

The phase runs where the sweep's executor places it (``run_timing``: a Ray executor with ``timing_resources``
sends it to one node holding that resource; otherwise it runs in the driver), always as one run on one
machine, so every ratio of the report compares timings from the same hardware in the same machine state.
``latency.json`` records the node and hardware that timed each variant (``timed_on`` and ``nodes``).

The timings are cached in ``<out>/latency.json`` under the timed models, their backends, the benchmark
settings and the timing resource, so a rerun with other iterations, warmup, threads, batch sizes or another
timing resource times again.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

from yoloquant._io import atomic_write_text
from yoloquant.config import BenchConfig
from yoloquant.decide.sweep_result import _entry_backend, _latency_key
from yoloquant.errors import ConfigError
from yoloquant.pipeline import EvalPlan

__all__ = ["eval_input", "first_image", "measure_latency", "this_node", "timing_record"]

Place = Callable[[Callable[[], Any]], Any]


def measure_latency(
    out: Path,
    entries: dict[str, dict[str, Any]],
    bench: BenchConfig,
    *,
    inputs: Callable[[dict[str, Any]], Any],
    progress: bool,
    place: Place | None = None,
    resources: Mapping[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each entry's latency (``LatencyResult.to_dict()`` of its first batch size), timed or from the cache.

    ``inputs(engines)`` gives the batch they are timed on (the sweep's first evaluation image); ``place(fn)``
    runs the phase where it must run (default here); ``resources`` is the timing resource it asked for.
    The models must be readable at the same paths where it runs (the sweep's shared folder).
    """
    path = out / "latency.json"
    key = _latency_key(entries, bench)
    if resources:
        key["timing_resources"] = dict(resources)
    if path.is_file():
        cached: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("key") == json.loads(json.dumps(key)):
            return dict(cached["latency"])
    models = {n: (str(e["model_path"]), _entry_backend(e).value) for n, e in entries.items()}
    # a remote phase's bar would print on the worker, not here
    job = partial(time_models, models, bench, inputs, progress=progress and not resources)
    latency, node = (place or _here)(job)
    name = str(node["node"])
    record = {"key": key, "latency": latency, "timed_on": dict.fromkeys(latency, name), "nodes": {name: node}}
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return dict(latency)


def _here(fn: Callable[[], Any]) -> Any:
    return fn()


def time_models(
    models: dict[str, tuple[str, str]],
    bench: BenchConfig,
    inputs: Callable[[dict[str, Any]], Any],
    *,
    progress: bool,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The phase itself, wherever it runs: ``({name: latency dict}, this_node())``."""
    from yoloquant.artifacts import OnnxModel
    from yoloquant.backends import open_engines
    from yoloquant.bench.latency import benchmark_interleaved
    from yoloquant.config import Backend

    loaded = {n: (OnnxModel.load(Path(p)), Backend(b)) for n, (p, b) in models.items()}
    with ExitStack() as stack:
        engines = open_engines(stack, loaded, threads=bench.threads)
        timed = benchmark_interleaved(engines, bench, inputs=inputs(engines), progress=progress)
    return {n: r[0].to_dict() for n, r in timed.items()}, this_node()


def this_node() -> dict[str, Any]:
    """The machine this process runs on: host, CPU model and cores, GPUs, and its Ray node when in a Ray worker."""
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "gpus": _gpu_models(),
        "platform": platform.platform(),
    }
    ray = sys.modules.get("ray")  # imported only where Ray runs this: never import it here
    if ray is not None and ray.is_initialized():
        info["ray_node_id"] = ray.get_runtime_context().get_node_id()
    info["node"] = info["host"] + (f" (ray {info['ray_node_id'][:12]})" if "ray_node_id" in info else "")
    return info


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    line = next((ln for ln in text.splitlines() if ln.startswith("model name")), "")
    return line.partition(":")[2].strip() or platform.processor() or platform.machine()


def _gpu_models() -> list[str]:
    """NVIDIA GPUs from the driver's /proc files (no CUDA import); empty without one."""
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        line = next((ln for ln in info.read_text(errors="replace").splitlines() if ln.startswith("Model:")), "")
        names.append(line.partition(":")[2].strip())
    return names


def timing_record(out: Path) -> dict[str, Any] | None:
    """What timed the variants of ``out/latency.json``: ``{"timed_on": {name: node}, "nodes": {node: info}}``."""
    path = out / "latency.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if "nodes" not in data:  # written before the phase recorded its node
        return None
    return {"timed_on": data["timed_on"], "nodes": data["nodes"], "resources": data["key"].get("timing_resources")}


def eval_input(ev: EvalPlan | None, engines: dict[str, Any]) -> Any:
    """The first evaluation image at the engines' input size (a top-level function: the phase may be shipped)."""
    if ev is None:
        msg = "a sweep's base pipeline needs .evaluate(...): the variants are timed on its first image"
        raise ConfigError(msg)
    return first_image(ev, next(iter(engines.values())).info.imgsz[0])


def first_image(ev: EvalPlan, imgsz: int) -> Any:
    """The first evaluation image, as the runner times with (``bench.latency.real_input``)."""
    from yoloquant.bench.latency import real_input
    from yoloquant.data.datasets import load_dataset

    image = load_dataset(ev.source, split=ev.split, labels=False).select(1, ev.offset).images[0]
    return real_input(image, imgsz)
