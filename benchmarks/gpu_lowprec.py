"""Low precision on the GPU without TensorRT (#15 part 3): FP8 and INT8 GEMMs for YOLOv8n's 1x1 convs vs FP16.

Every 1x1 conv of an Ultralytics ``Conv`` block (stride 1, channels multiples of 16; the head's bare output convs
and the DFL stay FP16) becomes a GEMM on the channels-last activations: FP8 (e4m3) through ``torch._scaled_mm``,
or INT8 through ``torch._int_mm``; weights per output channel, activations per tensor with a static scale from
the max over 16 coco64 images; the scales, bias and SiLU are applied after the GEMM (inductor fuses them).
Latency: batch 16, each variant compiled by inductor and replayed as a CUDA graph, interleaved rounds, median.
Accuracy: mAP50-95 on the bundled coco64 (64 images, ``yolo val`` settings), each variant's paired delta vs FP16
with its 95% interval.

    YOLO_OFFLINE=1 python benchmarks/gpu_lowprec.py --out benchmarks/results/gpu-lowprec-h200.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PT = ROOT / "assets" / "weights" / "yolov8n.pt"
BATCH = 16


def _targets(module: Any) -> list[Any]:
    """The Ultralytics ``Conv`` blocks whose conv is 1x1, stride 1, ungrouped, with channels % 16 == 0."""
    out = []
    for m in module.modules():
        conv = getattr(m, "conv", None)
        if type(m).__name__ != "Conv" or conv is None or not hasattr(conv, "kernel_size"):
            continue
        if conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1 and \
                conv.in_channels % 16 == 0 and conv.out_channels % 16 == 0:  # fmt: skip
            out.append(m)
    return out


def _gemm_conv(conv: Any, amax: float, kind: str) -> Any:
    import torch

    class GemmConv(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            w = conv.weight.detach().float().flatten(1)  # [out, in]
            top = 448.0 if kind == "fp8" else 127.0
            sw = w.abs().amax(1).clamp(min=1e-8) / top
            q = w / sw[:, None]
            q = q.to(torch.float8_e4m3fn) if kind == "fp8" else q.round().clamp(-127, 127).to(torch.int8)
            self.register_buffer("wq", q)
            self.sx = max(amax, 1e-8) / top
            self.register_buffer("scale", (sw * self.sx).to(torch.float32))
            self.register_buffer("bias", conv.bias.detach().float())
            self.top, self.out = top, w.shape[0]
            self.one = torch.ones((), dtype=torch.float32, device=w.device)

        def forward(self, x: Any) -> Any:
            n, c, h, w = x.shape
            a = x.permute(0, 2, 3, 1).reshape(-1, c)
            if kind == "fp8":
                aq = (a.float() / self.sx).clamp(-self.top, self.top).to(torch.float8_e4m3fn)
                y = torch._scaled_mm(aq, self.wq.t(), scale_a=self.one, scale_b=self.one, out_dtype=torch.float32)
            else:
                aq = (a.float() / self.sx).round().clamp(-127, 127).to(torch.int8)
                y = torch._int_mm(aq, self.wq.t()).float()
            y = (y * self.scale + self.bias).to(x.dtype)
            return y.reshape(n, h, w, self.out).permute(0, 3, 1, 2)

    return GemmConv()


def _module(kind: str, calib: Any) -> Any:
    import torch

    from yoloquant.backends.torch.engine import _module as torch_module
    from yoloquant.config import Precision

    module = torch_module(PT, Precision.FP16, torch.device("cuda"))
    if kind == "fp16":
        return module, 0
    targets = _targets(module)
    amax: dict[int, float] = {}
    hooks = [
        m.conv.register_forward_pre_hook(
            lambda mod, args, k=k: amax.__setitem__(k, max(amax.get(k, 0.0), float(args[0].abs().amax())))
        )
        for k, m in enumerate(targets)
    ]
    with torch.inference_mode():
        module(calib)
    for h in hooks:
        h.remove()
    for k, m in enumerate(targets):
        m.conv = _gemm_conv(m.conv, amax[k], kind)
    return module, len(targets)


def _latency(modules: dict[str, Any], rounds: int) -> dict[str, float]:
    import torch

    x = torch.randint(0, 255, (BATCH, 3, 640, 640), dtype=torch.uint8, device="cuda")
    graphs = {}
    for name, m in modules.items():
        fn = torch.compile(m, fullgraph=True, dynamic=False)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                fn(x)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g), torch.inference_mode():
            fn(x)
        graphs[name] = g
    samples: dict[str, list[float]] = {k: [] for k in graphs}
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(rounds):
        for k, g in graphs.items():
            start.record()
            g.replay()
            end.record()
            end.synchronize()
            samples[k].append(start.elapsed_time(end))
    return {k: round(statistics.median(v), 4) for k, v in samples.items()}


def _evaluate(module: Any, info: Any, dataset: Any) -> Any:
    import torch

    from yoloquant.config import EvalConfig
    from yoloquant.eval.coco import evaluate
    from yoloquant.testing import CallbackEngine

    def fn(batch: np.ndarray) -> list[np.ndarray]:
        pixels = np.rint(batch * 255).clip(0, 255).astype(np.uint8) if batch.dtype != np.uint8 else batch
        with torch.inference_mode():
            out = module(torch.from_numpy(pixels).cuda())
        return [out.float().cpu().numpy()]

    return evaluate(CallbackEngine(fn, info), dataset, EvalConfig(), progress=False)


def main() -> None:
    import torch

    from yoloquant.data.datasets import load_dataset
    from yoloquant.data.images import read_image
    from yoloquant.data.letterbox import preprocess
    from yoloquant.eval.coco import delta
    from yoloquant.export import UltralyticsExporter

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    info = UltralyticsExporter().export(PT, Path(tempfile.mkdtemp())).info
    images = sorted((ROOT / "assets" / "coco64" / "images").glob("*.jpg"))[:BATCH]
    calib = torch.from_numpy(np.stack([preprocess(read_image(p), 640)[0] for p in images])).cuda()
    modules, replaced, errors = {}, {}, {}
    for kind in ("fp16", "fp8", "int8"):
        try:
            modules[kind], replaced[kind] = _module(kind, calib)
            with torch.inference_mode():
                modules[kind](calib)  # the GEMMs run on this GPU at these shapes
        except Exception as exc:  # an unsupported dtype / shape: recorded, the others still measured
            errors[kind] = f"{type(exc).__name__}: {exc}"[:600]
            modules.pop(kind, None)
    dataset = load_dataset(ROOT / "assets" / "coco64.yaml")
    evals = {k: _evaluate(m, info, dataset) for k, m in modules.items()}
    latency = _latency(modules, args.rounds)
    report: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "model": "yolov8n, 1x1 convs of Conv blocks as FP8 / INT8 GEMMs, the rest FP16",
        "batch": BATCH,
        "convs_replaced": replaced,
        "latency_ms_b16": latency,
        "map50_95": {k: e.metrics["map50_95"].to_dict() for k, e in evals.items()},
        "delta_vs_fp16_points": {k: delta(e, evals["fp16"]).to_dict() for k, e in evals.items() if k != "fp16"},
        "errors": errors,
        "command": " ".join(sys.argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("YOLO_OFFLINE", "1")
    main()
