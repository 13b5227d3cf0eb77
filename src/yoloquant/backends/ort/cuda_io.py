"""The pinned host slots, IOBinding device buffers and ``PendingOutputs`` behind ``CudaEngine``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from yoloquant._optional import require
from yoloquant.backends._cuda import PinnedBuffer, check, cudart
from yoloquant.errors import InferenceError

if TYPE_CHECKING:
    from yoloquant.backends.ort.cuda import CudaEngine

__all__ = ["PendingOutputs"]


class _Slot:
    """One pinned input + outputs, and the event that says when the device is done with them."""

    def __init__(self, in_shape: tuple[int, ...], in_dtype: np.dtype[Any], outs: list[tuple[tuple[int, ...], Any]]):
        rt = cudart()
        self.input = PinnedBuffer(in_shape, in_dtype)
        self.outputs = [PinnedBuffer(shape, np.dtype(dt)) for shape, dt in outs]
        self.event: Any = check(rt.cudaEventCreateWithFlags(rt.cudaEventDisableTiming), "cudaEventCreate")
        self.generation = 0
        self.busy = False

    def free(self) -> None:
        rt = cudart()
        check(rt.cudaEventSynchronize(self.event), "cudaEventSynchronize")
        check(rt.cudaEventDestroy(self.event), "cudaEventDestroy")
        for buf in (self.input, *self.outputs):
            buf.free()


class _BatchBuffers:
    """Device buffers and IOBinding for one batch size, plus its ring of pinned slots."""

    def __init__(self, engine: CudaEngine, batch: int, out_shapes: list[tuple[int, ...]], depth: int) -> None:
        ort = require("onnxruntime")
        self.batch = batch
        h, w = engine.info.imgsz
        in_shape = (batch, 3, h, w)
        dev = engine.device_id
        self.input = ort.OrtValue.ortvalue_from_shape_and_type(list(in_shape), engine.input_dtype, "cuda", dev)
        self.outputs = [
            ort.OrtValue.ortvalue_from_shape_and_type(list(s), dt, "cuda", dev)
            for s, dt in zip(out_shapes, engine.output_dtypes, strict=True)
        ]
        self.binding = engine.session.io_binding()
        self.binding.bind_ortvalue_input(engine.input_name, self.input)
        for name, value in zip(engine.output_names, self.outputs, strict=True):
            self.binding.bind_ortvalue_output(name, value)
        outs = list(zip(out_shapes, engine.output_dtypes, strict=True))
        self.slots = [_Slot(in_shape, np.dtype(engine.input_dtype), outs) for _ in range(depth)]
        self.next = 0

    def free(self) -> None:
        for slot in self.slots:
            slot.free()
        self.binding.clear_binding_inputs()
        self.binding.clear_binding_outputs()
        self.input = None
        self.outputs = []


class PendingOutputs:
    """The outputs of one :meth:`CudaEngine.infer_async` call, valid until that pinned slot is reused.

    Attributes:
        device_outputs: Device pointers and shapes of the outputs (valid until the next run of the
            same batch size is queued on the engine's stream), for GPU-side postprocessing.
    """

    def __init__(self, engine: CudaEngine, buffers: _BatchBuffers, slot: _Slot, download: bool) -> None:
        self._engine = engine
        self._download = download
        self._slot = slot
        self._generation = slot.generation
        self.device_outputs: list[tuple[int, tuple[int, ...], Any]] = [
            (int(v.data_ptr()), tuple(v.shape()), dt)
            for v, dt in zip(buffers.outputs, engine.output_dtypes, strict=True)
        ]

    def ready(self) -> bool:
        """Whether the device has finished this call (does not block)."""
        rt = cudart()
        (err,) = rt.cudaEventQuery(self._slot.event)
        return bool(err == rt.cudaError_t.cudaSuccess)

    def wait(self, *, copy: bool = True) -> list[np.ndarray]:
        """Block until this call finished and return its outputs.

        Args:
            copy: Return copies. False returns views of the pinned buffers, valid only until ``depth``
                more calls of the same batch size are queued (saves a host copy of every output).
        """
        if self._slot.generation != self._generation:
            msg = (
                "these outputs were overwritten: more than `depth` infer_async calls were queued before "
                "wait(); call wait() sooner or build the engine with a larger depth"
            )
            raise InferenceError(msg)
        check(cudart().cudaEventSynchronize(self._slot.event), "cudaEventSynchronize")
        self._slot.busy = False
        if not self._download:
            return []
        return [np.array(o.array, copy=True) if copy else o.array for o in self._slot.outputs]
