"""One batch size of a :class:`~yoloquant.backends.torch.engine.TorchEngine`: its static input, its CUDA graph and
outputs, the pinned staging buffer a host batch is uploaded from, and a queued call's outputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from yoloquant._optional import require

__all__ = ["Replay", "TorchPending", "as_list", "copy_into", "held_tensors"]


class Replay:
    """One batch size: the static input, the captured graph (or the plain function) and its outputs.

    ``post`` (outputs -> tensors), when given, runs after the model inside the same graph (a fixed-shape decode).
    """

    def __init__(self, fn: Any, shape: tuple[int, ...], device: Any, graph: bool, post: Any = None) -> None:
        torch = require("torch")
        self.input = torch.zeros(shape, dtype=torch.uint8, device=device)
        self.fn, self.post = fn, post
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):  # compiles (first call) and warms up outside the capture
                self._call()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = None
        if graph:
            self.graph = torch.cuda.CUDAGraph()
            # Captured on its own stream, not torch's one default capture stream: cuBLAS keeps a workspace per
            # stream, and a graph keeps the one it was captured with, so two graphs captured on one stream would
            # share it when they replay side by side (TorchPredictor's slots, on_stream twins).
            with torch.cuda.graph(self.graph, stream=side), torch.inference_mode():
                self.outputs = self._call()
        # The graph reads tensors the model keeps as attributes (the head's anchors and strides, made on the
        # first call at a new shape). The next batch size's warm-up replaces them, which would free the memory
        # this graph still reads: hold them as long as the graph lives.
        self.held = held_tensors(fn)
        self.staging = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        self.staged = torch.cuda.Event()
        self.staged.record()

    def _call(self) -> list[Any]:
        out = as_list(self.fn(self.input))
        return out if self.post is None else as_list(self.post(out))

    def launch(self) -> list[Any]:
        """Run on the current stream on what is in ``input``; returns the graph's own output tensors, which the
        next launch overwrites."""
        torch = require("torch")
        if self.graph is None:
            with torch.inference_mode():
                return self._call()
        self.graph.replay()
        return list(self.outputs)

    def run(self, x: Any = None) -> list[Any]:
        """Run on the current stream (on ``x``, or on what was uploaded into ``input``); returns fresh float32
        tensors (the next call cannot overwrite them)."""
        torch = require("torch")
        if x is not None:
            self.input.copy_(x, non_blocking=True)
        return [o.to(torch.float32, copy=True) for o in self.launch()]  # the next call cannot overwrite a copy


def as_list(out: Any) -> list[Any]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def held_tensors(fn: Any) -> list[Any]:
    """Tensors that ``fn``'s modules keep as plain attributes, outside their parameters and buffers (an
    Ultralytics head's ``anchors`` and ``strides``): a captured CUDA graph reads them by address."""
    torch = require("torch")
    held: list[Any] = []
    for module in fn.modules() if callable(getattr(fn, "modules", None)) else ():  # a package holds its own
        for value in vars(module).values():
            items = value if isinstance(value, (list, tuple)) else (value,)
            held += [v for v in items if isinstance(v, torch.Tensor)]
    return held


class TorchPending:
    """Outputs of a queued call: device tensors now, numpy after :meth:`wait`."""

    def __init__(self, tensors: list[Any], done: Any, host: list[Any] | None = None) -> None:
        self.tensors = tensors
        self._done = done
        self._host = host  # pinned copies queued on the stream, when the call downloads

    def ready(self) -> bool:
        return bool(self._done.query())

    def synchronize(self) -> None:
        """Wait for the GPU, leaving the outputs on the device (``tensors``)."""
        self._done.synchronize()

    def wait(self) -> list[np.ndarray]:
        """Wait for the GPU and return the outputs as float32 numpy arrays."""
        self._done.synchronize()
        if self._host is not None:
            return [h.numpy() for h in self._host]  # each array owns its pinned buffer
        return [t.cpu().numpy() for t in self.tensors]


def copy_into(pinned: Any, pixels: np.ndarray) -> None:
    """Copy a host batch into the pinned staging tensor with torch's vectorised, threaded copy (2.6x numpy's
    assignment for a 640x640 batch of 1 on 2 cores); numpy's for a view torch cannot wrap (negative strides,
    read-only)."""
    if pixels.flags.writeable and all(s >= 0 for s in pixels.strides):
        pinned.copy_(require("torch").from_numpy(pixels))
    else:
        pinned.numpy()[...] = pixels
