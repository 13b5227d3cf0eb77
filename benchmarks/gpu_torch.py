"""The compiled-PyTorch engine on a GPU (#15): latency, end to end vs Ultralytics, load, streams, GPU letterbox mAP.

    YOLO_OFFLINE=1 PYTHONPYCACHEPREFIX=/tmp/pyc python benchmarks/gpu_torch.py \\
        --out benchmarks/results/gpu-torch-h200.json [--eval-data .gpu-data/cvp/images] [--phase speed|map|all]

(``PYTHONPYCACHEPREFIX``, with ``PYTHONDONTWRITEBYTECODE`` unset, where the Python keeps no ``.pyc`` files for
torch: the engine loads in fresh processes are timed as an installation with them runs them.)

Speeds are medians of interleaved rounds in one process (every variant timed in each round, in turn).
End to end = decoded uint8 frames in memory -> letterbox -> infer -> decode + NMS -> boxes in frame pixels.
``map`` evaluates the FP16 engine with the CPU (OpenCV) letterbox and with the GPU letterbox on the same images
and reports the paired delta with its 95% interval.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PT = ROOT / "assets" / "weights" / "yolov8n.pt"
IMAGES = sorted((ROOT / "assets" / "coco64" / "images").glob("*.jpg"))


def _export(tmp: Path) -> Any:
    from yoloquant.export import UltralyticsExporter

    return UltralyticsExporter().export(PT, tmp)


def _build(model: Any, art: Path, *, compile_: bool = True, batch_sizes: tuple[int, ...] = (1, 16),
           artifact: str | None = None) -> Any:  # fmt: skip
    """An FP16 engine; ``artifact`` None: the engine's default kind."""
    from yoloquant.backends.torch.engine import TorchEngineBuilder, TorchEngineConfig

    kind = {} if artifact is None else {"artifact": artifact}
    cfg = TorchEngineConfig(precision="fp16", batch_sizes=batch_sizes, artifact_dir=art, compile=compile_, **kind)
    return TorchEngineBuilder(cfg).build(model)


def _frames() -> list[np.ndarray]:
    from yoloquant.data.images import read_image

    return [read_image(p) for p in IMAGES]


def _timed(fn: Any) -> float:
    import torch

    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000


def interleaved_medians(cases: dict[str, Any], rounds: int, *, warmup: int, timer: Any = _timed) -> dict[str, float]:
    """Each case run ``warmup`` times, then timed once per round in turn (interleaved); the median per case, in
    ``timer``'s unit (``_timed``: ms with the GPU synchronized around the call)."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for k, fn in cases.items():
            samples[k].append(timer(fn))
    return {k: statistics.median(v) for k, v in samples.items()}


def _e2e_torch(engine: Any, frames: list[np.ndarray], batch: int) -> Any:
    import torch

    from yoloquant.data.letterbox import scale_detections
    from yoloquant.data.letterbox_gpu import letterbox_batch
    from yoloquant.postprocess.gpu import decode_torch

    def run() -> None:
        for i in range(0, len(frames) - batch + 1, batch):
            gpu = [torch.from_numpy(f).pin_memory().cuda(non_blocking=True) for f in frames[i : i + batch]]
            pixels, metas = letterbox_batch(gpu, 640)
            (pred,) = engine.infer_gpu(pixels)
            dets = decode_torch(pred, engine.info, conf=0.25, multi_label=False)  # predict's setting
            [scale_detections(d, m) for d, m in zip(dets, metas, strict=True)]

    return run


def _e2e_predictor(engine: Any, frames: list[np.ndarray], batch: int) -> Any:
    """``TorchPredictor``: one CUDA graph (model + decode + scaling) and one download a batch, two in flight."""
    from yoloquant.backends.torch.predictor import TorchPredictor

    predictor = TorchPredictor(engine, conf=0.25)
    predictor.prepare(batch)
    usable = frames[: len(frames) - len(frames) % batch]

    def run() -> None:
        predictor.predict(usable, batch_size=batch)

    return run


def _e2e_ultralytics(frames: list[np.ndarray], batch: int) -> Any:
    from ultralytics import YOLO

    model = YOLO(str(PT))

    def run() -> None:
        for i in range(0, len(frames) - batch + 1, batch):
            model.predict(frames[i : i + batch], half=True, batch=batch, verbose=False, conf=0.25, device=0)

    return run


def _latency(engine: Any, eager: Any, rounds: int) -> dict[str, float]:
    """Median ms: public infer() (host uint8 in, numpy out) and upload + run (no download), batch 1 and 16, each
    batch size interleaved in its own rounds; at batch 1 also the host copy of a plain array into the staging
    buffer, before the call and alone."""
    import torch

    from yoloquant.backends.torch.replay import copy_into

    x1 = np.random.default_rng(0).integers(0, 255, (1, 3, 640, 640), dtype=np.uint8)
    x16 = np.random.default_rng(1).integers(0, 255, (16, 3, 640, 640), dtype=np.uint8)
    staged1 = engine.staging_buffer(1)
    staged1[...] = x1  # as a letterbox writing straight into it would leave it

    def staged_infer() -> None:
        engine.infer(engine.staging_buffer(1))

    def staged_fill_infer() -> None:
        buf = engine.staging_buffer(1)
        buf[...] = x1
        engine.infer(buf)

    def staged_torch_fill_infer() -> None:  # the copy infer() makes of a plain array, done before the call
        buf = engine.staging_buffer(1)
        copy_into(torch.from_numpy(buf), x1)
        engine.infer(buf)

    def torch_fill_only() -> None:  # that copy alone, timed in the same rounds (caches as the calls leave them)
        copy_into(torch.from_numpy(staged1), x1)

    batch1 = {
        "compiled_infer_b1": lambda: engine.infer(x1),
        "compiled_infer_b1_staging_buffer": staged_infer,
        "compiled_infer_b1_staging_buffer_with_fill": staged_fill_infer,
        "compiled_infer_b1_staging_buffer_with_torch_fill": staged_torch_fill_infer,
        "torch_fill_only_b1": torch_fill_only,
        "compiled_upload_run_b1_staging_buffer": lambda: engine.infer_async(
            engine.staging_buffer(1), download=False
        ).synchronize(),
        "compiled_upload_run_b1": lambda: engine.infer_async(x1, download=False).synchronize(),
        "eager_graph_infer_b1": lambda: eager.infer(x1),
    }
    batch16 = {
        "compiled_infer_b16": lambda: engine.infer(x16),
        "compiled_upload_run_b16": lambda: engine.infer_async(x16, download=False).synchronize(),
        "eager_graph_infer_b16": lambda: eager.infer(x16),
    }
    # Each batch size in its own rounds: a batch-16 call moves ~50 MB through host memory, which evicts the CPU
    # caches of the batch-1 call timed after it (its input then comes from DRAM: +0.3 ms after a 64 MB copy, H200).
    medians = interleaved_medians(batch1, rounds, warmup=20) | interleaved_medians(batch16, rounds, warmup=20)
    return {k: round(v, 4) for k, v in medians.items()}


def _throughput(engines: dict[str, Any], frames: list[np.ndarray], rounds: int) -> dict[str, float]:
    """Images per second end to end, every path timed once per round in turn; ratios to Ultralytics."""
    cases: dict[str, Any] = {}
    for b in (1, 16):
        cases[f"ultralytics_b{b}"] = _e2e_ultralytics(frames, b)
        cases[f"yoloquant_b{b}"] = _e2e_torch(engines["default"], frames, b)  # step by step (earlier rows)
        for name, engine in engines.items():
            cases[f"predictor_{name}_b{b}"] = _e2e_predictor(engine, frames, b)
    img_s = images_per_s(interleaved_medians(cases, rounds, warmup=1), len(frames))
    return {f"{k}_img_s": v for k, v in img_s.items()} | ratios_to_ultralytics(img_s)


def images_per_s(medians_ms: dict[str, float], frames: int) -> dict[str, float]:
    """Images per second of end-to-end cases named ``..._b<batch>`` that each ran the whole batches of ``frames``."""
    out = {}
    for k, ms in medians_ms.items():
        batch = int(k.rsplit("_b", 1)[1])
        out[k] = round((frames - frames % batch) / (ms / 1000), 1)
    return out


def ratios_to_ultralytics(img_s: dict[str, float]) -> dict[str, float]:
    """``ratio_<case>``: each case's images per second over ``ultralytics_b<batch>``'s at its batch size."""
    return {
        f"ratio_{k}": round(v / img_s[f"ultralytics_b{k.rsplit('_b', 1)[1]}"], 2)
        for k, v in img_s.items()
        if not k.startswith("ultralytics")
    }


def _streams(engine: Any, frames_per_engine: int) -> dict[str, Any]:
    """8 engines (one compiled model) on 8 streams in 8 threads vs serial results; GPU memory before / after."""
    import torch

    from yoloquant.data.letterbox import preprocess

    inputs = [preprocess(f, 640)[0][None] for f in _frames()[:16]]
    serial = [engine.infer(x)[0] for x in inputs]
    twins = [engine.on_stream() for _ in range(8)]
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    bad = [0] * 8

    def work(k: int) -> None:
        for i in range(frames_per_engine):
            j = (i + k) % len(inputs)
            if not np.array_equal(twins[k].infer(inputs[j])[0], serial[j]):
                bad[k] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    torch.cuda.synchronize()
    return {
        "engines": 8,
        "frames_each": frames_per_engine,
        "mismatches": sum(bad),
        "gpu_bytes_growth": int(torch.cuda.memory_allocated() - before),
        "frames_per_s": round(8 * frames_per_engine / seconds, 1),
    }


def _load_seconds(art: Path, model: Any, artifact: str | None = None, *, env: dict[str, str] | None = None,
                  profile: Path | None = None, stderr_to: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """A fresh process builds the engine from the saved compiled code (or compiles it, when there is none yet):
    seconds of the build and of the whole process; a crash or an error is recorded, not raised. ``profile``:
    the build's cProfile statistics go to that file; ``stderr_to``: the process's stderr is kept there."""
    cmd = [sys.executable, __file__, "--phase", "load", "--art", str(art), "--onnx", str(model.path), "--out", "-",
           *(["--artifact", artifact] if artifact else []),
           *(["--profile", str(profile)] if profile else [])]  # fmt: skip
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False, timeout=400,
                              env={**os.environ, **(env or {})})  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 400 s"}
    if stderr_to is not None:
        stderr_to.write_text(proc.stderr)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr[-1500:]}"}
    found = dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    return found | {"process_wall_s": round(time.perf_counter() - start, 2), "env": env or {}}


def _load_phase(art: Path, onnx: Path, artifact: str | None, profile: Path | None) -> None:
    import cProfile
    import io
    import pstats

    from yoloquant.artifacts import OnnxModel

    model = OnnxModel.load(onnx)
    model = type(model)(path=model.path, info=model.info, precision=model.precision, checkpoint=PT)
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    engine = _build(model, art, artifact=artifact)
    seconds = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
    x = np.zeros((1, 3, 640, 640), np.uint8)
    first = time.perf_counter()
    engine.infer(x)
    report = {
        "load_from_artifact_s": round(seconds, 2),
        "loaded_from_artifact": engine.loaded_artifact,
        "load_phases_s": engine.build_phases,
        "first_infer_ms": round((time.perf_counter() - first) * 1e3, 2),
        "artifact": engine.config.artifact,
        "pycache_prefix": sys.pycache_prefix,
        "dont_write_bytecode": sys.flags.dont_write_bytecode,
    }
    if profiler is not None:
        profiler.dump_stats(str(profile))
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        report["profile_cumulative"] = text.getvalue().splitlines()[-32:]
    print(json.dumps(report))


def _load_experiments(model: Any, tmp: Path) -> dict[str, Any]:
    """Each step a fresh process: cold builds (batch 1 and 16) of the precompiled functions and of the inductor
    cache, then loads of each, interleaved twice; the precompiled load also with an empty inductor cache (another
    machine), with one compile thread, and under cProfile."""
    pre, ind = tmp / "precompiled", tmp / "inductor"
    pc = "precompiled"
    out: dict[str, Any] = {"precompiled_cold": _load_seconds(pre, model, pc)}
    out["inductor_cold"] = _load_seconds(ind, model, "inductor-cache")
    for r in (1, 2):
        out[f"precompiled_load_{r}"] = _load_seconds(pre, model, pc)
        out[f"inductor_load_{r}"] = _load_seconds(ind, model, "inductor-cache")
        print(json.dumps(out), flush=True)
    empty = {"TORCHINDUCTOR_CACHE_DIR": str(tmp / "c0")}  # another machine: nothing in inductor's local cache
    out["precompiled_load_empty_cache"] = _load_seconds(pre, model, pc, env=empty)
    out["precompiled_load_one_thread"] = _load_seconds(pre, model, pc, env={"TORCHINDUCTOR_COMPILE_THREADS": "1"})
    out["precompiled_load_profiled"] = _load_seconds(pre, model, pc, profile=tmp / "load.pstats")
    return out


def _load_bytecode(model: Any, tmp: Path) -> dict[str, Any]:
    """Loads of both saved kinds in fresh processes, without and with compiled bytecode (``.pyc``) for torch's
    compiler stack: a ``PYTHONPYCACHEPREFIX`` (``PYTHONDONTWRITEBYTECODE`` cleared) that each kind's cold build
    fills, then loads interleaved, twice; the ``no_pyc`` loads write none."""
    pyc = {"PYTHONPYCACHEPREFIX": str(tmp / "pyc"), "PYTHONDONTWRITEBYTECODE": ""}
    no_pyc = {"PYTHONDONTWRITEBYTECODE": "1"}
    kinds = {"precompiled": tmp / "precompiled", "inductor-cache": tmp / "inductor"}
    out: dict[str, Any] = {f"{k}_cold": _load_seconds(art, model, k, env=pyc) for k, art in kinds.items()}
    out["pyc_files"] = sum(1 for _ in (tmp / "pyc").rglob("*.pyc"))
    for r in (1, 2):
        for kind, art in kinds.items():
            out[f"{kind}_no_pyc_{r}"] = _load_seconds(art, model, kind, env=no_pyc)
            out[f"{kind}_pyc_{r}"] = _load_seconds(art, model, kind, env=pyc)
        print(json.dumps(out), flush=True)
    return out


def _load_profile(model: Any, tmp: Path, keep: Path) -> dict[str, Any]:
    """Where a precompiled load spends its time: a cold build, then loads in fresh processes (plain, with one
    compile thread, without inductor's warm worker pool, under cProfile and under ``-X importtime``; the
    statistics and the import log are kept in ``keep``)."""
    pre, pc = tmp / "precompiled", "precompiled"
    keep.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"cold": _load_seconds(pre, model, pc)}
    variants = {
        "plain_1": {},
        "one_compile_thread": {"TORCHINDUCTOR_COMPILE_THREADS": "1"},
        "no_warm_pool": {"TORCH_WARM_POOL": "0"},
        "one_thread_no_pool": {"TORCHINDUCTOR_COMPILE_THREADS": "1", "TORCH_WARM_POOL": "0"},
    }
    for name, env in variants.items():
        out[name] = _load_seconds(pre, model, pc, env=env)
        print(json.dumps({name: out[name]}), flush=True)
    out["profiled"] = _load_seconds(pre, model, pc, profile=keep / "precompiled-load.pstats")
    out["importtime"] = _load_seconds(pre, model, pc, env={"PYTHONPROFILEIMPORTTIME": "1"},
                                      stderr_to=keep / "precompiled-load-importtime.txt")  # fmt: skip
    return out


def _map(model: Any, art: Path, data: Path) -> dict[str, Any]:
    from yoloquant.config import EvalConfig
    from yoloquant.data.datasets import load_dataset
    from yoloquant.data.letterbox_gpu import preprocess_via_torch
    from yoloquant.eval.coco import delta, evaluate

    dataset = load_dataset(data)
    with _build(model, art, batch_sizes=(1,)) as engine:
        cpu = evaluate(engine, dataset, EvalConfig(), progress=False)
        gpu = evaluate(engine, dataset, EvalConfig(), progress=False, preprocess=preprocess_via_torch)
    d = delta(gpu, cpu)
    return {
        "images": cpu.num_images,
        "cpu_letterbox_map50_95": cpu.metrics["map50_95"].to_dict(),
        "gpu_letterbox_map50_95": gpu.metrics["map50_95"].to_dict(),
        "delta_points": d.to_dict(),
    }


def _speed(report: dict[str, Any], model: Any, art: Path, tmp: Path, args: argparse.Namespace) -> None:
    """Build and load of the default kind (precompiled; with ``--aoti`` also an AOTInductor package), latency, end
    to end and streams, into ``report``. Start it with ``PYTHONPYCACHEPREFIX`` set (and no
    ``PYTHONDONTWRITEBYTECODE``) to time the load as a Python with ``.pyc`` files for torch runs it."""
    start = time.perf_counter()
    engine = _build(model, art)
    report["cold_build_s"] = round(time.perf_counter() - start, 1)
    report |= _load_seconds(art, model)
    report["pycache_prefix"] = sys.pycache_prefix
    print(json.dumps(report, indent=1), flush=True)
    engines = {"default": engine}
    if args.aoti:
        report["aoti"] = {"cold_build": _load_seconds(tmp / "aoti", model, "aoti")}  # a fresh process compiles
        report["aoti"]["load"] = _load_seconds(tmp / "aoti", model, "aoti")  # and another loads the package
        if "error" not in report["aoti"]["load"]:
            engines["aoti"] = _build(model, tmp / "aoti", artifact="aoti")
    with _build(model, tmp / "eager", compile_=False) as eager:
        report["latency_ms"] = _latency(engine, eager, args.rounds)
        if "aoti" in engines:
            report["latency_ms_aoti"] = _latency(engines["aoti"], eager, args.rounds)
        print(json.dumps(report, indent=1), flush=True)
    report["end_to_end"] = _throughput(engines, _frames(), max(5, args.rounds // 20))
    for e in engines.values():
        e.close()
    print(json.dumps(report, indent=1), flush=True)
    cmd = [sys.executable, __file__, "--phase", "streams", "--out", "-", "--frames-per-engine",
           str(args.frames_per_engine)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    lines = proc.stdout.strip().splitlines()
    report["streams"] = json.loads(lines[-1]) if proc.returncode == 0 else {"error": proc.stderr[-600:]}
    print(json.dumps(report["streams"]), flush=True)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--phase", choices=("speed", "map", "all", "load", "streams", "latency", "load-experiments",
                                        "load-profile", "load-bytecode"),
                    default="all")  # fmt: skip
    ap.add_argument("--art", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--artifact", help=argparse.SUPPRESS)  # default: the engine's default kind
    ap.add_argument("--profile", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--onnx", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--eval-data", type=Path, default=ROOT / ".gpu-data" / "cvp" / "images")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--frames-per-engine", type=int, default=2000)
    ap.add_argument("--aoti", action="store_true", help="also build, load and time an AOTInductor package")
    args = ap.parse_args()
    if args.phase == "load":
        _load_phase(args.art, args.onnx, args.artifact, args.profile)
        return
    if args.phase == "streams":  # its own process: a CUDA fault there loses no other number
        model = _export(Path(tempfile.mkdtemp()))
        with _build(model, Path(tempfile.mkdtemp()) / "art", batch_sizes=(1,)) as engine:
            print(json.dumps(_streams(engine, args.frames_per_engine)))
        return
    tmp = Path(tempfile.mkdtemp())
    art, model = tmp / "yolov8n.torch", _export(tmp / "export")
    report: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    report |= {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "model": "yolov8n fp16"}
    if args.phase == "load-experiments":  # the saved-code loads alone, each kind in fresh processes
        report["load_experiments"] = _load_experiments(model, tmp)
    if args.phase == "load-profile":  # where a precompiled load's seconds go, then latency from that artifact
        report["load_profile"] = _load_profile(model, tmp, args.out.parent / "load-profile")
        with _build(model, tmp / "precompiled", artifact="precompiled") as engine, \
                _build(model, tmp / "eager", compile_=False) as eager:  # fmt: skip
            report["latency_ms_precompiled"] = _latency(engine, eager, args.rounds)
    if args.phase == "load-bytecode":  # both saved kinds' loads without and with .pyc for the compiler stack
        report["load_bytecode"] = _load_bytecode(model, tmp)
    if args.phase == "latency":  # the model-level latencies alone (no end to end, load or streams)
        with _build(model, art) as engine, _build(model, tmp / "eager", compile_=False) as eager:
            report["latency_ms"] = _latency(engine, eager, args.rounds)
    if args.phase in ("speed", "all"):
        _speed(report, model, art, tmp, args)
    if args.phase in ("map", "all"):
        report["map"] = _map(model, art, args.eval_data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("YOLO_OFFLINE", "1")
    main()
