"""Decode + NMS on the GPU with PyTorch and torchvision, matching :mod:`yoloquant.postprocess.decode`.

The arithmetic is the CPU decoder's, step for step (candidates above ``conf``, one per (box, class)
with ``multi_label``, at most 30000 by score, class-aware NMS with boxes offset by ``class * 7680``,
then ``max_det``), so detections agree with the CPU path; only the filtering and the NMS run on the
device, and just the kept boxes come back to the host.

A :class:`~yoloquant.backends.ort.cuda.CudaEngine`'s outputs can be decoded where they are, without a
download: ``engine.infer_async(batch, download=False)`` then :func:`decode_pending`, which runs the
decode on the engine's stream (so it is ordered after the run and before the next one).

Example:
    >>> pending = engine.infer_async(batch, download=False)  # doctest: +SKIP
    >>> dets = decode_pending(pending, engine, conf=0.25)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from yoloquant._optional import require
from yoloquant.artifacts import ModelInfo
from yoloquant.config import HeadType
from yoloquant.detections import Detections
from yoloquant.errors import ConfigError, InferenceError
from yoloquant.postprocess.decode import MAX_NMS, MAX_WH, decode_boxes, decode_end2end
from yoloquant.tasks import task_spec

if TYPE_CHECKING:
    from yoloquant.backends.ort.cuda import CudaEngine, PendingOutputs

__all__ = ["as_tensor", "decode_pending", "decode_torch"]

_TYPESTR = {np.dtype(np.float32): "<f4", np.dtype(np.float16): "<f2", np.dtype(np.uint8): "|u1"}


class _DeviceArray:
    """A raw device pointer dressed in ``__cuda_array_interface__`` so torch can view it without a copy."""

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: Any) -> None:
        self.__cuda_array_interface__ = {
            "shape": tuple(shape),
            "typestr": _TYPESTR[np.dtype(dtype)],
            "data": (ptr, False),
            "version": 3,
            "strides": None,
            "stream": None,  # the caller orders the work with streams itself
        }


def as_tensor(ptr: int, shape: tuple[int, ...], dtype: Any) -> Any:
    """A ``torch.Tensor`` view of device memory (no copy); it does not own the memory."""
    torch = require("torch")
    return torch.as_tensor(_DeviceArray(ptr, shape, dtype), device="cuda")


def _nms(boxes: Any, scores: Any, iou: float) -> Any:
    try:
        ops = require("torchvision.ops")
    except ImportError as exc:
        msg = f"GPU NMS needs torchvision ({exc}); pip install torchvision matching your torch"
        raise InferenceError(msg) from exc
    return ops.nms(boxes, scores, iou)


def _decode_dfl(pred: Any, *, conf: float, iou: float, max_det: int, multi_label: bool) -> list[Detections]:
    """A batch's ``[B, 4 + nc, anchors]`` output -> detections, with few host round trips.

    Candidates of the whole batch are gathered at once (image-major, anchor-ascending, then class: the
    CPU decoder's order); only NMS runs per image, then one download of all kept rows.
    """
    torch = require("torch")
    x = pred.transpose(1, 2)  # [B, anchors, 4 + nc]
    b_idx, a_idx = torch.nonzero(x[..., 4:].amax(-1) > conf, as_tuple=True)
    rows = x[b_idx, a_idx]
    cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    box = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
    cls = rows[:, 4:]
    if multi_label and cls.shape[1] > 1:
        i, j = torch.nonzero(cls > conf, as_tuple=True)  # row-major, like np.nonzero
    else:  # every candidate row's best score is above conf by construction
        j = cls.argmax(1)
        i = torch.arange(rows.shape[0], device=rows.device)
    boxes, scores, classes = box[i], cls[i, j], j
    counts = torch.bincount(b_idx[i], minlength=pred.shape[0]).tolist()
    keep_all = []
    start = 0
    for n in counts:
        idx = torch.arange(start, start + n, device=rows.device)
        start += n
        if n > MAX_NMS:
            idx = idx[torch.sort(scores[idx], descending=True, stable=True).indices[:MAX_NMS]]
        offset = classes[idx].to(boxes.dtype)[:, None] * float(MAX_WH)
        keep_all.append(idx[_nms(boxes[idx] + offset, scores[idx], iou)[:max_det]])
    keep = torch.cat(keep_all)
    table = torch.cat([boxes[keep], scores[keep, None], classes[keep, None].to(boxes.dtype)], 1).cpu().numpy()
    out, start = [], 0
    for part in keep_all:
        t = table[start : start + part.shape[0]]
        start += part.shape[0]
        out.append(Detections(np.ascontiguousarray(t[:, :4]), np.ascontiguousarray(t[:, 4]), t[:, 5].astype(np.int64)))
    return out


def decode_torch(
    pred: Any,
    info: ModelInfo,
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    multi_label: bool = True,
) -> list[Detections]:
    """Decode a batch of raw outputs held in a ``torch.Tensor`` (any device) into per-image detections.

    Same arguments and results as :func:`yoloquant.postprocess.decode.decode`, for the detect task only.

    Raises:
        ConfigError: The model's task decodes differently (its decoder is not the detect task's).
    """
    if task_spec(info.task).decode is not decode_boxes:
        msg = f"GPU decode is the detect task's; decode a {info.task!r} model's outputs with postprocess.decode()"
        raise ConfigError(msg)
    end2end = info.head is HeadType.END2END
    if pred.ndim != 3 or (end2end and pred.shape[2] < 6) or (not end2end and pred.shape[1] < 5):
        want = "[B, N, 6]" if end2end else "[B, 4 + nc, anchors]"
        msg = f"a {info.head.value} head should output {want}, got shape {tuple(pred.shape)}"
        raise InferenceError(msg)
    pred = pred.float()
    if end2end:  # [B, N<=300, 6]: tiny, nothing to gain on the device
        return [decode_end2end(p.cpu().numpy(), conf=conf, max_det=max_det) for p in pred]
    return _decode_dfl(pred, conf=conf, iou=iou, max_det=max_det, multi_label=multi_label)


def decode_pending(
    pending: PendingOutputs,
    engine: CudaEngine,
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    multi_label: bool = True,
) -> list[Detections]:
    """Decode a :class:`CudaEngine` call's outputs on the GPU, on the engine's stream.

    Must run before the engine's next call with the same batch size is queued (that call reuses the
    device buffers; work on the engine's stream is ordered, so decoding first is enough).
    """
    torch = require("torch")
    ptr, shape, dtype = pending.device_outputs[0]
    with torch.cuda.stream(torch.cuda.ExternalStream(engine.stream)):
        pred = as_tensor(ptr, shape, dtype)
        return decode_torch(pred, engine.info, conf=conf, iou=iou, max_det=max_det, multi_label=multi_label)
