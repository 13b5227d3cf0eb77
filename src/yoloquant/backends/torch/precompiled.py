"""The ``"precompiled"`` artifact of a torch engine: ``torch.compile(...).aot_compile()`` once per batch size.

``aot_compile`` traces the model with Dynamo and compiles it with inductor ahead of time; the result is saved
(``save_compiled_function``) and loaded back (``torch.compiler.load_compiled_function``) with no tracing and no
code generation, in a new process or on another machine with the same PyTorch and GPU: the Triton kernels travel
inside the file. The module is an argument of the compiled function, so its weights stay out of the file (the
checkpoint is loaded as usual) and one file per batch size is about 10 MB for YOLOv8n.

Measured on the lent H200 with torch 2.11.0+cu130 (yolov8n FP16, benchmarks/gpu_precompile_probe.py):
loading batch 1 takes 6.3 s in a fresh process (also with an empty inductor cache), batch 16 then 0.1 s more;
the replayed graph runs in the same time as the inductor-cache engine's (0.49 ms at batch 1). A whole build
from the saved files (batch 1 and 16) took 4.6-4.8 s where Python had ``.pyc`` files for torch and 9.3-10.6 s
where it had none (``benchmarks/gpu_torch.py --phase load-bytecode``).

Guards are dropped at compile (``guard_filter_fn``): each file is only ever called with its own batch size and
dtype, which :class:`PrecompiledModel` enforces. A model that Dynamo cannot trace as one graph (YOLO26's head on
torch 2.11) raises :class:`PrecompileError`; the builder then falls back to the inductor cache.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from yoloquant._optional import require
from yoloquant.errors import EngineBuildError, InferenceError

__all__ = ["PrecompileError", "PrecompiledModel", "aot_compile", "precompiled_file"]


class PrecompileError(EngineBuildError):
    """``aot_compile`` could not compile the model (a graph break, or no ``aot_compile`` in this PyTorch)."""


def precompiled_file(batch_size: int) -> str:
    """The file name of the compiled function for ``batch_size``."""
    return f"precompiled-b{batch_size}.bin"


def _forward(module: Any, x: Any) -> Any:
    """What each compiled function runs: the module is an argument, so its weights stay out of the file."""
    return module(x)


def _drop_guards(guards: list[Any]) -> list[bool]:
    return [False for _ in guards]


def _forget_grids(module: Any) -> None:
    """Make the next trace build the head's anchor grid itself. An Ultralytics head keeps the feature shape it last
    saw (``shape``) and reuses its ``anchors`` while a call's shape matches; with the guards dropped, a function
    traced while they matched would read ``anchors`` on every call. Another batch size's function replaces them
    at each call (during a CUDA-graph capture, with a tensor that holds garbage until that graph first replays),
    so on the H200 the batch-1 function read garbage anchors after the batch-4 capture (the checkpoint's pickled
    head keeps the shape of its last forward: a 640 px batch of 1). A function traced with no shape computes its
    own anchors."""
    for m in module.modules():
        if hasattr(m, "anchors") and getattr(m, "shape", None) is not None:
            m.shape = None


def aot_compile(module: Any, example: Any) -> Any:
    """``module`` traced and compiled ahead of time for ``example`` (Dynamo with the guards dropped, then
    inductor): a function of ``(module, x)`` that ``save_compiled_function`` writes. Mark ``example``'s batch
    dimension dynamic first for one function of every batch size (Ultralytics' heads do not trace so)."""
    torch = require("torch")
    config = torch._dynamo.config
    switch = config.patch(enable_aot_compile=True) if hasattr(config, "enable_aot_compile") else None
    _forget_grids(module)
    with torch.inference_mode(), switch or contextlib.nullcontext():
        compiled = torch.compile(_forward, fullgraph=True, options={"guard_filter_fn": _drop_guards})
        return compiled.aot_compile(((module, example), {}))


class PrecompiledModel:
    """``module`` run through one ahead-of-time compiled function per batch size (uint8 ``[B, 3, H, W]`` in).

    Example:
        >>> fn = PrecompiledModel(module, (640, 640))  # doctest: +SKIP
        >>> fn.compile(1); fn.save(folder)  # doctest: +SKIP
        >>> PrecompiledModel(module, (640, 640)).load(folder, (1,))  # doctest: +SKIP
    """

    def __init__(self, module: Any, imgsz: tuple[int, int], *, saved: Path | None = None) -> None:
        """``saved``: a folder of valid compiled functions (checked against this model by its metadata), from
        which a batch size asked for later is loaded instead of compiled."""
        self.module = module
        self.imgsz = imgsz
        self.saved = saved
        self.by_batch: dict[int, Any] = {}
        self.unsaved: set[int] = set()

    def modules(self) -> Any:
        """The wrapped module's modules (a CUDA graph holds the head's attribute tensors: ``held_tensors``)."""
        return self.module.modules()

    def compile(self, batch_size: int) -> None:
        """Trace and compile ``batch_size`` now (tens of seconds).

        Raises:
            PrecompileError: Dynamo broke the graph, or this PyTorch has no ``aot_compile``.
        """
        torch = require("torch")
        device = next(self.module.parameters()).device
        example = torch.zeros((batch_size, 3, *self.imgsz), dtype=torch.uint8, device=device)
        try:
            self.by_batch[batch_size] = aot_compile(self.module, example)
        except Exception as exc:  # Dynamo and inductor raise assorted types
            msg = f"precompiling batch {batch_size} failed: {str(exc)[:400]}"
            raise PrecompileError(msg) from exc
        self.unsaved.add(batch_size)

    def save(self, folder: Path) -> None:
        """Write the compiled functions not saved yet, each atomically (PyTorch writes a temporary, then moves)."""
        folder.mkdir(parents=True, exist_ok=True)
        for b in sorted(self.unsaved):
            self.by_batch[b].save_compiled_function(str(folder / precompiled_file(b)))
        self.unsaved.clear()

    def load(self, folder: Path, batch_sizes: tuple[int, ...]) -> None:
        """Load the compiled functions of ``batch_sizes`` from ``folder`` (no tracing, no code generation). The
        module must have been made by the torch engine's ``_module`` first: the saved guard state names its uint8
        wrapper class, which that makes.

        Raises:
            EngineBuildError: A file does not load (the message names it and the fix).
        """
        torch = require("torch")
        for b in batch_sizes:
            path = folder / precompiled_file(b)
            try:
                with path.open("rb") as f:
                    self.by_batch[b] = torch.compiler.load_compiled_function(f)
            except Exception as exc:  # unpickling and PyTorch's compatibility checks raise assorted types
                msg = f"the precompiled engine {path} does not load: {exc}; pass rebuild=True to compile it again"
                raise EngineBuildError(msg, artifact=path) from exc

    def __call__(self, x: Any) -> Any:
        torch = require("torch")
        if x.dtype != torch.uint8 or tuple(x.shape[1:]) != (3, *self.imgsz):
            h, w = self.imgsz
            msg = f"a precompiled engine takes uint8 [B, 3, {h}, {w}], got {x.dtype} {tuple(x.shape)}"
            raise InferenceError(msg)
        batch = int(x.shape[0])
        if batch not in self.by_batch and self.saved is not None and (self.saved / precompiled_file(batch)).is_file():
            self.load(self.saved, (batch,))
        if batch not in self.by_batch:
            self.compile(batch)  # a size not built: compiled now (saved by the next build that asks for it)
        return self.by_batch[batch](self.module, x)
