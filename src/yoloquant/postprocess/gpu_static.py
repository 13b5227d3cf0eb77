"""Decode + NMS + scaling back to frame pixels in fixed shapes, so that a CUDA graph can capture them.

:func:`yoloquant.postprocess.gpu.decode_torch` filters with ``nonzero`` and calls torchvision's NMS, whose
output sizes are only known on the host: every call waits for the GPU several times. Here every tensor has a
shape fixed by the batch size and two limits, so the whole decode is captured with the model in one graph
(:class:`~yoloquant.backends.torch.predictor.TorchPredictor`) and a batch costs one download:

* **Candidates**: the ``candidates`` best (box, class) pairs above ``conf`` (one per box unless
  ``multi_label``), in the CPU decoder's order: by score, ties by anchor then class.
* **NMS**: the CPU decoder's class-offset IoU (float32, ``class * 7680``) between every pair of candidates,
  and greedy suppression solved as a fixed point: a candidate is kept when no kept, better candidate overlaps
  it by more than ``iou``. Each round settles at least one more step of every suppression chain;
  ``nms_rounds`` rounds and a check that the last round changed nothing.
* **Scaling**: boxes from model-input pixels to frame pixels (:func:`yoloquant.data.letterbox.scale_boxes`'
  float32 arithmetic), clipped to the frame.

Each image gets an ``exact`` flag: False when it had more candidates than ``candidates`` or its suppression
chains were longer than ``nms_rounds``. The caller decodes those images again with the exact, dynamic-shape
decoder (rare at ``yolo predict``'s ``conf=0.25``; the usual case at ``yolo val``'s 0.001).

Example:
    >>> out = decode_static(pred, params, StaticDecode(end2end=False, conf=0.25))  # doctest: +SKIP
    >>> out.table.shape, out.count.shape, out.exact.shape  # [B, max_det, 6], [B], [B]  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from yoloquant._optional import require
from yoloquant.data.letterbox import LetterboxMeta
from yoloquant.errors import ConfigError
from yoloquant.postprocess.decode import MAX_NMS, MAX_WH

__all__ = ["PARAMS", "StaticDecode", "StaticOutputs", "decode_static", "letterbox_params"]

PARAMS = 6  # per image: left, top, gain_x, gain_y, frame width, frame height


@dataclass(frozen=True)
class StaticDecode:
    """What :func:`decode_static` keeps: ``decode()``'s settings plus the two fixed sizes.

    Attributes:
        end2end: The head is end to end (``[B, N, 6]``, no NMS) rather than DFL (``[B, 4 + nc, anchors]``).
        conf: Score threshold.
        iou: NMS IoU threshold (DFL head).
        max_det: Most detections per image (the table's rows).
        multi_label: One candidate per class above ``conf`` (``yolo val``) instead of the best class only.
        candidates: Candidates per image that go through NMS (DFL head); more marks the image not exact.
        nms_rounds: Suppression rounds; a longer chain marks the image not exact.
    """

    end2end: bool
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    multi_label: bool = False
    candidates: int = 1024
    nms_rounds: int = 12

    def __post_init__(self) -> None:
        if not 1 <= self.candidates <= MAX_NMS:
            msg = f"candidates must be in [1, {MAX_NMS}], got {self.candidates}"
            raise ConfigError(msg)
        if self.max_det < 1 or self.nms_rounds < 1:
            msg = f"max_det and nms_rounds must be >= 1, got {self.max_det} and {self.nms_rounds}"
            raise ConfigError(msg)


@dataclass(frozen=True)
class StaticOutputs:
    """Fixed-shape results, on the decode's device.

    Attributes:
        table: float32 ``[B, max_det, 6]``: x1, y1, x2, y2 in frame pixels, score, class; rows past ``count``
            are zeros.
        count: int32 ``[B]`` rows in use.
        exact: bool ``[B]``: the image's rows are the exact decoder's (see the module docstring).
    """

    table: Any
    count: Any
    exact: Any


def letterbox_params(metas: list[LetterboxMeta], batch_size: int) -> np.ndarray:
    """The float32 ``[batch_size, PARAMS]`` scaling rows of ``metas`` (rows past them: identity, 1x1 frame)."""
    out = np.zeros((batch_size, PARAMS), np.float32)
    out[:, 2:] = 1.0
    for row, m in zip(out, metas, strict=False):
        row[:] = (m.pad[0], m.pad[1], m.gain[1], m.gain[0], m.shape[1], m.shape[0])
    return out


def decode_static(pred: Any, params: Any, spec: StaticDecode) -> StaticOutputs:
    """Decode a batch of raw outputs (a ``torch.Tensor``, any device) in fixed shapes; see the module docstring.

    Args:
        pred: ``[B, 4 + nc, anchors]`` (DFL) or ``[B, N, >= 6]`` (end to end) model outputs.
        params: float32 ``[B, PARAMS]`` from :func:`letterbox_params`, on ``pred``'s device.
        spec: Settings and sizes.
    """
    torch = require("torch")
    pred = pred.float()
    if spec.end2end:
        rows = pred[..., :6]
        keep = rows[..., 4] > spec.conf
        exact = torch.ones(pred.shape[0], dtype=torch.bool, device=pred.device)
    else:
        rows, keep, exact = _nms_static(pred, spec)
    rank = torch.cumsum(keep.to(torch.int32), 1) - 1
    keep = keep & (rank < spec.max_det)
    slot = torch.where(keep, rank, spec.max_det).to(torch.int64)  # dropped rows go to a spare last row
    table = torch.zeros((pred.shape[0], spec.max_det + 1, 6), dtype=torch.float32, device=pred.device)
    table.scatter_(1, slot[..., None].expand(-1, -1, 6), rows)
    table = table[:, : spec.max_det]
    count = keep.sum(1, dtype=torch.int32)
    return StaticOutputs(_to_frame(table, params), count, exact)  # unused rows stay 0 (clipped to the frame)


def _nms_static(pred: Any, spec: StaticDecode) -> tuple[Any, Any, Any]:
    """The DFL head's candidates (rows x1, y1, x2, y2, score, class, best first) and which NMS keeps."""
    torch = require("torch")
    n_img, channels, anchors = (int(v) for v in pred.shape)
    nc = channels - 4
    x = pred.transpose(1, 2)  # [B, anchors, 4 + nc]
    cls_scores = x[..., 4:]
    multi = spec.multi_label and nc > 1
    # multi-label: index anchor * nc + class, np.nonzero's order; else the best class per anchor
    flat = cls_scores.reshape(n_img, anchors * nc) if multi else cls_scores.amax(-1)
    above = flat > spec.conf
    k = min(spec.candidates, int(flat.shape[1]))
    score = torch.where(above, flat, torch.full_like(flat, -1.0))
    top_score, top_index = score.topk(k, dim=1, sorted=False)
    by_index = torch.sort(top_index, dim=1).values  # then by score, stably: ties stay in index order
    top_score = torch.gather(score, 1, by_index)
    order = torch.sort(top_score, dim=1, descending=True, stable=True).indices
    index, top_score = torch.gather(by_index, 1, order), torch.gather(top_score, 1, order)
    if multi:
        anchor, cls = index // nc, index % nc
    else:
        anchor, cls = index, torch.gather(cls_scores.argmax(-1), 1, index)
    xywh = torch.gather(x[..., :4], 1, anchor[..., None].expand(-1, -1, 4))
    cx, cy, w, h = xywh.unbind(-1)
    box = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    valid = top_score > spec.conf
    kept, converged = _suppress(box + cls.to(box.dtype)[..., None] * float(MAX_WH), valid, spec)
    rows = torch.cat([box, top_score[..., None], cls.to(box.dtype)[..., None]], -1)
    return rows, kept, (above.sum(1) <= k) & converged


def _suppress(boxes: Any, valid: Any, spec: StaticDecode) -> tuple[Any, Any]:
    """Greedy NMS over score-sorted ``boxes`` [B, K, 4] as a fixed point; (kept [B, K], converged [B])."""
    torch = require("torch")
    x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
    # the CPU decoder's box_iou, as float32, between every earlier (row) and later (column) candidate
    iw = (torch.minimum(x2[:, :, None], x2[:, None, :]) - torch.maximum(x1[:, :, None], x1[:, None, :])).clamp_(0)
    ih = (torch.minimum(y2[:, :, None], y2[:, None, :]) - torch.maximum(y1[:, :, None], y1[:, None, :])).clamp_(0)
    inter = iw * ih
    area = (x2 - x1) * (y2 - y1)
    iou = inter / (area[:, :, None] + area[:, None, :] - inter)
    k = int(boxes.shape[1])
    earlier = torch.ones((k, k), dtype=torch.bool, device=boxes.device).triu(1)
    dtype = torch.float16 if boxes.is_cuda else torch.float32  # counts up to K are exact either way
    overlaps = ((iou > spec.iou) & earlier & valid[:, :, None]).to(dtype)  # [B, earlier, later]
    keep = valid
    changed = torch.zeros_like(valid)
    for _ in range(spec.nms_rounds):
        suppressed = torch.bmm(keep.to(dtype)[:, None, :], overlaps)[:, 0] > 0
        new = valid & ~suppressed
        changed = new != keep
        keep = new
    return keep, ~changed.any(1)


def _to_frame(table: Any, params: Any) -> Any:
    """Rows' boxes from model-input to frame pixels (``scale_boxes``), clipped to the frame; score, class kept."""
    torch = require("torch")
    left, top, gain_x, gain_y, w0, h0 = (params[:, i, None] for i in range(PARAMS))
    x1 = ((table[..., 0] - left) / gain_x).clamp(min=0).minimum(w0)
    y1 = ((table[..., 1] - top) / gain_y).clamp(min=0).minimum(h0)
    x2 = ((table[..., 2] - left) / gain_x).clamp(min=0).minimum(w0)
    y2 = ((table[..., 3] - top) / gain_y).clamp(min=0).minimum(h0)
    return torch.stack([x1, y1, x2, y2, table[..., 4], table[..., 5]], -1)
