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

import dataclasses
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from yoloquant._optional import require
from yoloquant.artifacts import ModelInfo
from yoloquant.config import HeadType
from yoloquant.detections import Detections
from yoloquant.errors import ConfigError, InferenceError
from yoloquant.postprocess.decode import MAX_NMS, MAX_WH, decode_boxes, decode_end2end
from yoloquant.postprocess.masks import decode_segments
from yoloquant.postprocess.pose import as_keypoints, check_pose_output, decode_keypoints_end2end, decode_pose
from yoloquant.tasks import task_spec

if TYPE_CHECKING:
    from yoloquant.backends.ort.cuda import CudaEngine, PendingOutputs

__all__ = [
    "as_tensor",
    "decode_outputs_torch",
    "decode_pending",
    "decode_pose_torch",
    "decode_segments_torch",
    "decode_torch",
]

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


def _decode_dfl(
    pred: Any, *, nc: int, conf: float, iou: float, max_det: int, multi_label: bool
) -> tuple[list[Detections], list[np.ndarray]]:
    """A batch's ``[B, 4 + nc + E, anchors]`` output -> detections, with a fixed handful of host round trips.

    Candidates of the whole batch are gathered at once (image-major, anchor-ascending, then class: the
    CPU decoder's order) and go through **one** NMS call: each box is offset by its class (``class * 7680``,
    in float32 as the CPU decoder does) and then by its image (in float64, so the offsets keep the
    coordinates' precision), so boxes of different images or classes never overlap. The per-image caps
    (:data:`MAX_NMS` candidates by score, ``max_det`` kept) are applied by rank within each image on the
    device; one download of all kept rows. Also returns, per image, each kept detection's ``E`` channels after
    the class scores (a pose head's keypoints, a seg head's mask coefficients), taken from its anchor as
    :func:`~yoloquant.postprocess.decode.dfl_candidates` takes them.
    """
    torch = require("torch")
    n_img = int(pred.shape[0])
    x = pred.transpose(1, 2)  # [B, anchors, 4 + nc + E]
    b_idx, a_idx = torch.nonzero(x[..., 4 : 4 + nc].amax(-1) > conf, as_tuple=True)
    rows = x[b_idx, a_idx]
    cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    box = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
    cls = rows[:, 4 : 4 + nc]
    if multi_label and nc > 1:
        i, j = torch.nonzero(cls > conf, as_tuple=True)  # row-major, like np.nonzero
    else:  # every candidate row's best score is above conf by construction
        j = cls.argmax(1)
        i = torch.arange(rows.shape[0], device=rows.device)
    boxes, scores, classes, image = box[i], cls[i, j], j, b_idx[i]
    if scores.shape[0] > MAX_NMS:  # shapes are known on the host after nonzero: the cap binds somewhere
        cand = _first_per_image(image, scores, n_img, MAX_NMS)
    else:
        cand = torch.arange(scores.shape[0], device=scores.device)
    span = float(MAX_WH) * (nc + 1)  # wider than any class-offset box
    shifted = (boxes[cand] + classes[cand].to(boxes.dtype)[:, None] * float(MAX_WH)).double()
    shifted += image[cand].double()[:, None] * span
    keep = cand[_nms(shifted, scores[cand].double(), iou)]  # by descending score over the whole batch
    keep = keep[torch.sort(image[keep], stable=True).indices]  # grouped by image, by score within each
    keep = keep[_rank_in_group(image[keep], n_img) < max_det]
    columns = [boxes[keep], scores[keep, None], classes[keep, None].to(boxes.dtype), image[keep, None].to(boxes.dtype)]
    table = torch.cat([*columns, rows[i[keep], 4 + nc :]], 1).cpu().numpy()  # one download
    owner = table[:, 6].astype(np.int64)
    bounds = list(itertools.pairwise(np.searchsorted(owner, np.arange(n_img + 1)).tolist()))
    dets = [
        Detections(
            np.ascontiguousarray(table[a:b, :4]), np.ascontiguousarray(table[a:b, 4]), table[a:b, 5].astype(np.int64)
        )
        for a, b in bounds
    ]
    return dets, [np.ascontiguousarray(table[a:b, 7:]) for a, b in bounds]


def _rank_in_group(group: Any, n_groups: int) -> Any:
    """Each element's position within its run of equal ``group`` values (``group`` sorted ascending)."""
    torch = require("torch")
    counts = torch.bincount(group, minlength=n_groups)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(group.shape[0], device=group.device) - starts[group]


def _first_per_image(image: Any, scores: Any, n_img: int, limit: int) -> Any:
    """Indices of the candidates to keep: per image, the ``limit`` best by score (the CPU decoder's cap),
    in their original order."""
    torch = require("torch")
    by_score = torch.sort(scores, descending=True, stable=True).indices
    order = by_score[torch.sort(image[by_score], stable=True).indices]  # per image, best first
    kept = order[_rank_in_group(image[order], n_img) < limit]
    return torch.sort(kept).values


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
    nc = int(pred.shape[1]) - 4
    if info.source_task != "detect" and info.num_classes and nc > info.num_classes:
        nc = info.num_classes  # a seg / pose head run as a detector: coefficients or keypoints follow the scores
    if nc != info.num_classes and info.num_classes:
        msg = f"model output has {nc} class channels but the model names {info.num_classes} classes"
        raise InferenceError(msg)
    return _decode_dfl(pred, nc=nc, conf=conf, iou=iou, max_det=max_det, multi_label=multi_label)[0]


def decode_segments_torch(
    outputs: Sequence[Any], info: ModelInfo, *, conf: float = 0.25, max_det: int = 300
) -> list[Detections]:
    """Decode a YOLO26 end-to-end segmentation head's outputs held in ``torch.Tensor`` s (any device).

    :func:`yoloquant.postprocess.masks.decode_segments`' results, with the mask work on the device: each kept
    detection's coefficients times the prototypes, the bilinear upsample to the model input (half-pixel centres,
    as OpenCV's ``INTER_LINEAR`` on float32), the threshold at 0 and the crop to the box; only the kept rows and
    their boolean masks come back. A logit within float rounding of 0 can land on the other side than OpenCV's
    (tests/gpu/test_gpu_postprocess.py bounds it).

    Args:
        outputs: ``[B, N, 6 + C]`` detections with mask coefficients and ``[B, C, H/4, W/4]`` prototypes.
        info: The model's metadata (task ``segment``, end-to-end head).

    Raises:
        InferenceError: A DFL segmentation head, or outputs whose shapes do not fit (as the CPU decoder).

    Example:
        >>> dets = decode_segments_torch(engine.infer_gpu(pixels), engine.info, conf=0.25)  # doctest: +SKIP
    """
    torch = require("torch")
    f = require("torch.nn.functional")
    if info.head is not HeadType.END2END:
        msg = (
            f"decode_segments_torch decodes the end-to-end head only (YOLO26); this model's head is {info.head.value}: "
            "decode it on the CPU with decode_segments([o.cpu().numpy() for o in outputs], info)"
        )
        raise InferenceError(msg)
    if len(outputs) < 2 or outputs[0].ndim != 3 or outputs[1].ndim != 4:
        # the CPU decoder's checks and messages, on arrays of the same shapes (no data is copied)
        decode_segments([np.empty(tuple(o.shape), np.float32) for o in outputs], info, conf=conf, iou=0.0,
                        max_det=max_det, multi_label=False)  # fmt: skip
    pred, protos = outputs[0].float(), outputs[1].float()
    if pred.shape[2] != 6 + protos.shape[1] or pred.shape[0] != protos.shape[0]:
        decode_segments([np.empty(tuple(pred.shape), np.float32), np.empty(tuple(protos.shape), np.float32)], info,
                        conf=conf, iou=0.0, max_det=max_det, multi_label=False)  # fmt: skip
    c, mh, mw = (int(v) for v in protos.shape[1:])
    shape = (4 * mh, 4 * mw)
    out = []
    for p, m in zip(pred, protos, strict=True):
        rows = p[p[:, 4] > conf][:max_det]
        dets = decode_end2end(rows[:, :6].cpu().numpy(), conf=conf, max_det=max_det)
        if rows.shape[0] == 0:
            out.append(dataclasses.replace(dets, masks=np.zeros((0, *shape), bool)))
            continue
        logits = (rows[:, 6:] @ m.reshape(c, -1)).reshape(-1, 1, mh, mw)
        up = f.interpolate(logits, size=shape, mode="bilinear", align_corners=False)[:, 0] > 0
        x1, y1, x2, y2 = (rows[:, i, None, None] for i in range(4))
        cols = torch.arange(shape[1], device=up.device, dtype=torch.float32)[None, None, :]
        lines = torch.arange(shape[0], device=up.device, dtype=torch.float32)[None, :, None]
        masks = up & (cols >= x1) & (cols < x2) & (lines >= y1) & (lines < y2)
        out.append(dataclasses.replace(dets, masks=masks.cpu().numpy()))
    return out


def decode_pose_torch(
    outputs: Sequence[Any],
    info: ModelInfo,
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    multi_label: bool = True,
) -> list[Detections]:
    """Decode a pose head's outputs held in ``torch.Tensor`` s (any device) into detections with keypoints.

    :func:`yoloquant.postprocess.pose.decode_pose`' results (boxes, scores, classes, ``[N, K, 3]`` keypoints).
    A DFL head (YOLOv8 / YOLO11 pose, ``[B, 4 + nc + K * D, anchors]``) is filtered and NMS'd on the device as
    :func:`decode_torch` does, each kept detection taking its anchor's keypoints, in the same single download;
    an end-to-end head (YOLO26 pose, ``[B, N, 6 + K * D]``) keeps the rows above ``conf`` on the device and
    downloads just those.

    Args:
        outputs: The engine's outputs (the first holds boxes, scores and keypoints).
        info: The model's metadata (task ``pose``; ``kpt_shape`` splits the keypoint channels).
        conf: Score threshold. iou: NMS IoU threshold (DFL head only). max_det: Most detections per image.
        multi_label: A box may yield one detection per class above ``conf`` (DFL head with several classes).

    Raises:
        InferenceError: The model has no ``kpt_shape``, or an output shape that does not fit it (as the CPU decoder).

    Example:
        >>> dets = decode_pose_torch(engine.infer_gpu(pixels), engine.info, conf=0.25)  # doctest: +SKIP
        >>> dets[0].keypoints.shape  # doctest: +SKIP
        (2, 17, 3)
    """
    pred = outputs[0].float()
    kpt_shape = check_pose_output(tuple(pred.shape), info)
    if info.head is HeadType.END2END:
        rows = [p[p[:, 4] > conf][:max_det].cpu().numpy() for p in pred]
        return [decode_keypoints_end2end(r, kpt_shape=kpt_shape, conf=conf, max_det=max_det) for r in rows]
    dets, extra = _decode_dfl(pred, nc=info.num_classes, conf=conf, iou=iou, max_det=max_det, multi_label=multi_label)
    return [dataclasses.replace(d, keypoints=as_keypoints(k, kpt_shape)) for d, k in zip(dets, extra, strict=True)]


def decode_outputs_torch(
    outputs: Sequence[Any],
    info: ModelInfo,
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    multi_label: bool = True,
) -> list[Detections]:
    """Decode all of an engine's outputs held in ``torch.Tensor`` s by the model's task, as
    :func:`yoloquant.postprocess.decode.decode` does on the host.

    Detect: :func:`decode_torch`; segment: :func:`decode_segments_torch` (end-to-end head; a DFL seg head's
    outputs are downloaded and decoded by :func:`~yoloquant.postprocess.masks.decode_segments`, which has no
    device twin yet); pose: :func:`decode_pose_torch`.

    Raises:
        ConfigError: A task with no torch decoder (one registered by a user).
        InferenceError: Outputs whose number or shapes do not fit the model (as the CPU decoders).

    Example:
        >>> dets = decode_outputs_torch(engine.infer_gpu(pixels), engine.info, conf=0.25)  # doctest: +SKIP
    """
    cpu = task_spec(info.task).decode
    if cpu is decode_boxes:
        return decode_torch(outputs[0], info, conf=conf, iou=iou, max_det=max_det, multi_label=multi_label)
    if cpu is decode_pose:
        return decode_pose_torch(outputs, info, conf=conf, iou=iou, max_det=max_det, multi_label=multi_label)
    if cpu is decode_segments and info.head is HeadType.END2END:
        return decode_segments_torch(outputs, info, conf=conf, max_det=max_det)
    if cpu is decode_segments:
        host = [o.cpu().numpy() for o in outputs]
        return decode_segments(host, info, conf=conf, iou=iou, max_det=max_det, multi_label=multi_label)
    msg = f"task {info.task!r} has no torch decoder; decode its outputs on the host with postprocess.decode()"
    raise ConfigError(msg)


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
