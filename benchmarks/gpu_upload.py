"""How a host batch reaches the GPU at batch 1 (uint8 1x3x640x640): the ways ``TorchEngine.infer`` could upload.

    python benchmarks/gpu_upload.py [--rounds 500]

Prints the median microseconds of each way, every way timed once per round in turn (interleaved): numpy's or
torch's copy into pinned memory, the pinned upload, both together, and an upload straight from pageable memory.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
from gpu_torch import interleaved_medians  # this folder's GPU benchmark (its folder is on sys.path)

from yoloquant.backends.torch.replay import copy_into


def _wall_us(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e6


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=500)
    args = ap.parse_args()
    x = np.random.default_rng(0).integers(0, 255, (1, 3, 640, 640), dtype=np.uint8)
    pinned = torch.empty(x.shape, dtype=torch.uint8, pin_memory=True)
    device = torch.empty(x.shape, dtype=torch.uint8, device="cuda")
    stream = torch.cuda.Stream()

    def upload(source: torch.Tensor) -> None:
        with torch.cuda.stream(stream):
            device.copy_(source, non_blocking=True)
        stream.synchronize()

    def numpy_copy() -> None:
        pinned.numpy()[...] = x

    def torch_copy() -> None:  # what TorchEngine.infer does with a plain array
        copy_into(pinned, x)

    cases: dict[str, Callable[[], None]] = {
        "numpy_to_pinned": numpy_copy,
        "torch_to_pinned": torch_copy,
        "pinned_upload": lambda: upload(pinned),
        "numpy_to_pinned_then_upload": lambda: (numpy_copy(), upload(pinned)),
        "torch_to_pinned_then_upload": lambda: (torch_copy(), upload(pinned)),
        "pageable_upload": lambda: upload(torch.from_numpy(x)),
    }
    medians = interleaved_medians(cases, args.rounds, warmup=50, timer=_wall_us)
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "threads": torch.get_num_threads()}
    print(json.dumps(report | {k: round(v, 1) for k, v in medians.items()}))


if __name__ == "__main__":
    main()
