"""``GpuStreamRunner``: :class:`~yoloquant.stream.runner.StreamRunner` with the per-frame work on the GPU.

Each decoded frame is uploaded once (uint8, a quarter of the float bytes); its tiles are cut, letterboxed
(:mod:`yoloquant.data.letterbox_gpu`) and stacked into fixed-size batches on the device; the engine runs them
with ``infer_gpu`` (device tensors in and out: :class:`~yoloquant.backends.torch.engine.TorchEngine`), and
decode + NMS run on the device with the decoder of the model's task
(:func:`yoloquant.postprocess.gpu.decode_outputs_torch`: detect, segment and pose heads); only the kept rows
come back. As with the CPU runner, a pose model's results carry keypoints and a seg model's carry masks when
``StreamConfig(masks=True)``; without it a seg model is decoded as a detector, with no mask work on the device.
Readers, queues, ordering, skipped frames and timings are the CPU runner's. Several streams (cameras) share
one engine and its batches, so a batch of 8 or 16 frames from 8 cameras runs as one CUDA-graph replay.

The GPU letterbox may differ from OpenCV's by one level on a few pixels (docs/gpu.md), so detections match
the CPU runner's within a pixel, not bit for bit. The ``infer`` timing is the time to queue the batch; the
wait for the GPU falls into ``postprocess``, where the decode first needs its results.

Example:
    >>> engine = TorchEngineBuilder(TorchEngineConfig(batch_sizes=(8,))).build(model)  # doctest: +SKIP
    >>> for r in GpuStreamRunner(engine, ["cam0.mp4", "cam1.mp4"], batch_size=8, classes=(0,)):  # doctest: +SKIP
    ...     print(r.stream, r.index, len(r.detections or ()))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from yoloquant._optional import require
from yoloquant.data.letterbox_gpu import letterbox_frame
from yoloquant.detections import Detections
from yoloquant.errors import ConfigError
from yoloquant.protocols import Engine
from yoloquant.stream.runner import StreamConfig, StreamRunner
from yoloquant.stream.source import SourceInput

__all__ = ["GpuStreamRunner"]


class GpuStreamRunner(StreamRunner):
    """A :class:`StreamRunner` whose letterbox, batching, inference and decode stay on a torch device.

    Args:
        engine: An engine with ``infer_gpu(uint8 [B, 3, H, W] tensor) -> [tensor, ...]`` (the torch backend's),
            returning all of the model's outputs (a seg head's prototypes too); it compiles any batch size, so
            ``batch_size`` needs no dynamic-batch export.
        sources: As :class:`StreamRunner`'s.
        config: Options (:class:`StreamConfig`); keyword ``changes`` override its fields.
        device: Where frames go (default: the engine's ``device``, else ``cuda``). Any torch device works;
            tests run it on the CPU.

    Raises:
        ConfigError: The engine has no ``infer_gpu``.
    """

    def __init__(
        self,
        engine: Engine,
        sources: SourceInput | Sequence[SourceInput],
        config: StreamConfig | None = None,
        *,
        device: Any = None,
        **changes: Any,
    ) -> None:
        if not callable(getattr(engine, "infer_gpu", None)):
            msg = (
                f"GpuStreamRunner needs an engine with infer_gpu (device tensors in and out), and "
                f"{type(engine).__name__} has none: build one with the torch backend, or use StreamRunner"
            )
            raise ConfigError(msg)
        torch = require("torch")
        self.device = torch.device(device if device is not None else getattr(engine, "device", "cuda"))
        super().__init__(engine, sources, config, **changes)

    def _batches(self, engine: Engine) -> bool:
        return True  # infer_gpu captures each batch size on first use

    def _letterbox(self, image: np.ndarray, grid: list[tuple[int, int, int, int]], imgsz: int) -> list[Any]:
        torch = require("torch")
        frame = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)  # one upload per frame
        crops = [frame] if self.config.tiles is None else [frame[y1:y2, x1:x2] for y1, x1, y2, x2 in grid]
        return [letterbox_frame(crop, imgsz, mode="predict") for crop in crops]

    def _run_batch(self, pixels: list[Any]) -> Any:
        torch = require("torch")
        batch = torch.stack(pixels)
        missing = self.config.batch_size - len(pixels)
        if self.config.pad_batch and missing > 0:
            batch = torch.cat([batch, batch.new_full((missing, *batch.shape[1:]), 114)])
        return self.engine.infer_gpu(batch)  # type: ignore[attr-defined]

    def _decode(self, outputs: Any) -> list[Detections]:
        from yoloquant.postprocess.gpu import decode_outputs_torch, decode_torch

        cfg, info = self.config, self.engine.info
        if info.task == "segment" and not (cfg.masks and cfg.tiles is None):  # masks not asked for: no mask work
            boxes_only = dataclasses.replace(info, task="detect")  # the seg head run as a detector, as --task detect
            return decode_torch(outputs[0], boxes_only, conf=cfg.conf, iou=cfg.iou, max_det=cfg.max_det,
                                multi_label=False)  # fmt: skip
        return decode_outputs_torch(outputs, info, conf=cfg.conf, iou=cfg.iou, max_det=cfg.max_det, multi_label=False)
