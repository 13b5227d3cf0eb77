"""``TorchPredictor``: decoded frames in, detections in frame pixels out, with one CUDA graph and one download a batch.

The end-to-end path of :class:`~yoloquant.backends.torch.engine.TorchEngine` for services and benchmarks:

1. The batch's frames are copied into one pinned buffer and uploaded in one copy (uint8 BGR, as decoded).
2. Each frame is letterboxed on the GPU (:func:`yoloquant.data.letterbox_gpu.letterbox_frame`, ``yolo predict``'s
   geometry) into the graph's input.
3. One CUDA-graph replay runs the model, the fixed-shape decode + NMS and the scaling back to frame pixels
   (:mod:`yoloquant.postprocess.gpu_static`); the ``[B, max_det, 6]`` table, the counts and the exact-flags
   come back in one download.
4. An image the fixed shapes could not decode exactly (more candidates than ``candidates``, or longer suppression
   chains than ``nms_rounds``) is decoded again from the model's outputs by the exact dynamic-shape decoder
   (:func:`yoloquant.postprocess.gpu.decode_torch`); the results are the same either way.

``depth`` batches are in flight, each on its own CUDA stream: while the GPU runs one, the host uploads and
letterboxes the next, and at small batch sizes the GPU runs the kernels of two batches side by side (a batch of
one leaves most of the GPU idle). Detect models only (DFL or end-to-end heads).

Example:
    >>> engine = TorchEngineBuilder(TorchEngineConfig(precision="fp16")).build(model)  # doctest: +SKIP
    >>> with TorchPredictor(engine, conf=0.25) as predictor:  # doctest: +SKIP
    ...     dets = predictor.predict(frames, batch_size=16)  # one Detections per frame, in frame pixels
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from yoloquant._lifecycle import ClosesOnExit
from yoloquant._optional import require
from yoloquant.backends.torch.engine import TorchEngine
from yoloquant.config import HeadType
from yoloquant.data.letterbox import LetterboxMeta, scale_detections
from yoloquant.data.letterbox_gpu import letterbox_frame
from yoloquant.detections import Detections
from yoloquant.errors import ConfigError, InferenceError
from yoloquant.postprocess.gpu import decode_torch
from yoloquant.postprocess.gpu_static import PARAMS, StaticDecode, decode_static, letterbox_params
from yoloquant.tasks import task_spec

__all__ = ["TorchPredictor"]


class _Slot:
    """One batch in flight: its stream, graph (model + decode), parameters, pinned buffers and completion event."""

    def __init__(self, engine: TorchEngine, batch_size: int, spec: StaticDecode) -> None:
        torch = require("torch")
        self.engine, self.batch_size, self.spec = engine, batch_size, spec
        self.params = torch.zeros((batch_size, PARAMS), dtype=torch.float32, device=engine.device)
        self.params_host = torch.zeros((batch_size, PARAMS), dtype=torch.float32, pin_memory=True)
        with torch.cuda.device(engine.device):
            self.replay = engine.capture(batch_size, self._decode)
        self.host = [torch.empty(o.shape, dtype=o.dtype, pin_memory=True) for o in self.replay.outputs[:3]]
        self.frames_host = torch.empty(0, dtype=torch.uint8, pin_memory=True)
        self.frames_dev = torch.empty(0, dtype=torch.uint8, device=engine.device)
        self.done = torch.cuda.Event()
        self.metas: list[LetterboxMeta] = []
        self.stream = torch.cuda.Stream(engine.device)
        self.stream.wait_stream(torch.cuda.current_stream(engine.device))  # the buffers' fills above

    def _decode(self, outputs: list[Any]) -> list[Any]:
        out = decode_static(outputs[0], self.params, self.spec)
        return [out.table, out.count, out.exact, outputs[0]]  # the raw output stays for the exact decoder

    def submit(self, frames: Sequence[np.ndarray]) -> None:
        """Queue upload, letterbox, replay and download of ``frames`` (at most ``batch_size``) on the slot's
        stream. The slot must be free (:meth:`collect` ed)."""
        torch = require("torch")
        sizes = [f.nbytes for f in frames]
        total = sum(sizes)
        if self.frames_host.numel() < total:  # grows rarely: to the largest batch of frames seen
            self.frames_host = torch.empty(total, dtype=torch.uint8, pin_memory=True)
            self.frames_dev = torch.empty(total, dtype=torch.uint8, device=self.engine.device)
        staging = self.frames_host.numpy()
        offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        for frame, a, b in zip(frames, offsets, offsets[1:], strict=False):
            staging[a:b] = frame.reshape(-1)
        stream = self.stream
        with torch.cuda.stream(stream):
            self.frames_dev[:total].copy_(self.frames_host[:total], non_blocking=True)
            self.metas = []
            for i, (frame, a, b) in enumerate(zip(frames, offsets, offsets[1:], strict=False)):
                pixels, meta = letterbox_frame(self.frames_dev[a:b].view(frame.shape), self.engine.info.imgsz[0])
                self.replay.input[i].copy_(pixels)
                self.metas.append(meta)
            self.params_host.numpy()[...] = letterbox_params(self.metas, self.batch_size)
            self.params.copy_(self.params_host, non_blocking=True)
            outputs = self.replay.launch()
            for h, o in zip(self.host, outputs, strict=False):
                h.copy_(o, non_blocking=True)
            self.done.record(stream)

    def collect(self) -> list[Detections]:
        """Wait for the submitted batch and return its detections, in frame pixels."""
        self.done.synchronize()
        table, count, exact = (h.numpy() for h in self.host)
        out = []
        for i, meta in enumerate(self.metas):
            if exact[i]:
                rows = table[i, : int(count[i])]
                out.append(Detections(rows[:, :4].copy(), rows[:, 4].copy(), rows[:, 5].astype(np.int64)))
            else:
                out.append(self._exact(i, meta))
        self.metas = []
        return out

    def _exact(self, i: int, meta: LetterboxMeta) -> Detections:
        """Image ``i`` decoded by the dynamic-shape decoder from the slot's raw output (still in place: the slot
        is not launched again before it is collected)."""
        torch = require("torch")
        spec = self.spec
        with torch.cuda.stream(self.stream):
            raw = self.replay.outputs[3][i : i + 1]
            (dets,) = decode_torch(raw, self.engine.info, conf=spec.conf, iou=spec.iou, max_det=spec.max_det,
                                   multi_label=spec.multi_label)  # fmt: skip
        return scale_detections(dets, meta)


class TorchPredictor(ClosesOnExit):
    """Frames -> letterbox -> model -> decode + NMS -> frame pixels, on one :class:`TorchEngine` (see the module).

    Args:
        engine: A detect model's torch engine; the predictor captures its own graphs and runs each batch in
            flight on a stream of its own (the engine's ``infer`` keeps working). One predictor per thread.
        conf, iou, max_det, multi_label: As :func:`yoloquant.postprocess.decode.decode` (``yolo predict``'s
            defaults).
        candidates: Candidates per image that go through the in-graph NMS; a crowded image with more is
            decoded exactly on the side.
        nms_rounds: Suppression rounds of the in-graph NMS (see :mod:`yoloquant.postprocess.gpu_static`).
        depth: Batches in flight.

    Raises:
        ConfigError: The engine's model is not a detector, or a limit is out of range.
    """

    def __init__(
        self,
        engine: TorchEngine,
        *,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = 300,
        multi_label: bool = False,
        candidates: int = 1024,
        nms_rounds: int = 12,
        depth: int = 2,
    ) -> None:
        info = engine.info
        if task_spec(info.task).name != "detect":
            msg = f"TorchPredictor decodes detect models; this is a {info.task!r} model: use engine.infer_gpu"
            raise ConfigError(msg)
        if depth < 1:
            msg = f"depth must be >= 1, got {depth}"
            raise ConfigError(msg)
        self.engine = engine
        self.spec = StaticDecode(end2end=info.head is HeadType.END2END, conf=conf, iou=iou, max_det=max_det,
                                 multi_label=multi_label, candidates=candidates, nms_rounds=nms_rounds)  # fmt: skip
        self.depth = depth
        self._slots: dict[int, list[_Slot]] = {}

    def prepare(self, batch_size: int) -> None:
        """Capture ``batch_size``'s graphs now (compiling it if new) instead of at the first batch."""
        self._slots_for(batch_size)

    def _slots_for(self, batch_size: int) -> list[_Slot]:
        if batch_size < 1:
            msg = f"batch_size must be >= 1, got {batch_size}"
            raise ConfigError(msg)
        if batch_size not in self._slots:
            self._slots[batch_size] = [_Slot(self.engine, batch_size, self.spec) for _ in range(self.depth)]
        return self._slots[batch_size]

    def stream(self, frames: Iterable[np.ndarray], batch_size: int = 1) -> Iterator[Detections]:
        """Detections of each frame, in order, as batches complete (``depth`` batches ahead of the caller)."""
        slots = self._slots_for(batch_size)
        pending: deque[_Slot] = deque()
        for turn, batch in enumerate(_batched(frames, batch_size)):
            if len(pending) == self.depth:  # the oldest batch in flight holds the slot this one takes
                yield from pending.popleft().collect()
            slot = slots[turn % self.depth]
            slot.submit(batch)
            pending.append(slot)
        while pending:
            yield from pending.popleft().collect()

    def predict(self, frames: Iterable[np.ndarray], batch_size: int = 1) -> list[Detections]:
        """Detections of every frame (uint8 ``[H, W, 3]`` BGR, any sizes), in frame pixels, in order."""
        return list(self.stream(frames, batch_size))

    def close(self) -> None:
        """Drop the graphs and buffers (idempotent); the engine stays open."""
        self._slots.clear()


def _batched(frames: Iterable[np.ndarray], batch_size: int) -> Iterator[list[np.ndarray]]:
    """``frames`` (checked) in lists of ``batch_size``, the last one possibly shorter."""
    batch: list[np.ndarray] = []
    for index, frame in enumerate(frames):
        batch.append(_checked(frame, index))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _checked(frame: np.ndarray, index: int) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        msg = f"frame {index} is {dtype} {shape}; TorchPredictor takes uint8 [H, W, 3] BGR frames (cv2.imread's)"
        raise InferenceError(msg)
    return np.ascontiguousarray(frame)
