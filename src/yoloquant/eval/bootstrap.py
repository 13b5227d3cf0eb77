"""Bootstrap intervals for COCO mAP from cached per-image matching, and paired deltas between variants.

pycocotools' ``evaluateImg`` matches each image's detections to its ground truth once; ``accumulate``
then sorts all detections of a class by score and reads precision at 101 recall points. A bootstrap
resample draws images with replacement, so it only changes how often each image's detections and
ground truth count. :class:`MatchTable` keeps, for every class and IoU threshold, the per-image counts of
true and false positives up to each true positive (where the interpolated precision is decided), so one
matrix product per resample batch gives every resample's cumulative counts, exactly as ``accumulate``
would compute them on the resampled image list (checked against it in tests/unit/test_bootstrap.py).

Example:
    >>> rng_weights = resample_weights(num_images=3, resamples=2, seed=0)
    >>> rng_weights.shape, rng_weights.sum(axis=1).tolist()
    ((2, 3), [3.0, 3.0])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MatchTable", "Metric", "interval", "paired_delta", "probability_at_least", "resample_weights"]

LEVEL = 0.95
_CHUNK = 250  # resamples per matrix product: bounds memory at (chunk x true positives) float64


@dataclass(frozen=True, kw_only=True)
class Metric:
    """A measured value with its 95% bootstrap interval (``low``/``high`` None when not resampled).

    ``se`` is the bootstrap standard error. For a delta, all four are in mAP points.

    Example:
        >>> Metric(value=-0.71, low=-1.32, high=-0.10, se=0.31)
        -0.71 [-1.32, -0.10]
    """

    value: float
    low: float | None = None
    high: float | None = None
    se: float | None = None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2

    def contains(self, x: float) -> bool:
        """Whether ``x`` lies inside the interval (False without one)."""
        return self.low is not None and self.high is not None and self.low <= x <= self.high

    def format(self, fmt: str = ".2f") -> str:
        if self.low is None or self.high is None:
            return format(self.value, fmt)
        return f"{self.value:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"

    def __repr__(self) -> str:
        return self.format()

    def to_dict(self) -> dict[str, Any]:
        ci = None if self.low is None or self.high is None else [self.low, self.high]
        return {"value": self.value, "ci95": ci, "se": self.se}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metric:
        ci = data.get("ci95") or (None, None)
        return cls(value=float(data["value"]), low=ci[0], high=ci[1], se=data.get("se"))


def resample_weights(num_images: int, resamples: int, seed: int) -> np.ndarray:
    """``[resamples, num_images]`` draw counts: each row resamples the images with replacement.

    The same ``(num_images, resamples, seed)`` always gives the same rows, which is what pairs two
    variants' resamples: both are scored on the same resampled image lists.
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num_images, size=(resamples, num_images))
    weights = np.zeros((resamples, num_images), np.float64)
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1.0)
    return weights


def interval(samples: np.ndarray, value: float, *, scale: float = 1.0) -> Metric:
    """The 95% interval of bootstrap ``samples`` around ``value`` (all multiplied by ``scale``).

    The replicates are first shifted so that their mean is ``value`` (bias-corrected percentile interval):
    a resample that draws none of a rare class's images drops that class from the class mean, which on
    ~250 COCO images lifts the replicates' mean mAP about 2 points above the measured one (rare classes score
    low). Paired deltas carry almost no such bias; they are shifted the same way for one rule.
    """
    tail = (1 - LEVEL) / 2 * 100
    centred = samples - (float(np.mean(samples)) - value)
    low, high = np.percentile(centred, [tail, 100 - tail])
    return Metric(
        value=float(value * scale),
        low=float(low * scale),
        high=float(high * scale),
        se=float(np.std(samples, ddof=1) * scale) if len(samples) > 1 else None,
    )


def paired_delta(
    samples: np.ndarray, base_samples: np.ndarray, value: float, base_value: float, *, scale: float = 100.0
) -> Metric:
    """``value - base_value`` (in points by default) with the interval of the paired resample differences.

    Both sample arrays must come from the same resampled image lists (:func:`resample_weights` with the
    same images, count and seed); a per-resample difference cancels the images' shared difficulty, so the
    interval is much narrower than the two separate intervals suggest.
    """
    if samples.shape != base_samples.shape:
        msg = f"paired resamples differ in shape: {samples.shape} vs {base_samples.shape}"
        raise ValueError(msg)
    return interval(samples - base_samples, value - base_value, scale=scale)


def probability_at_least(samples: np.ndarray, threshold: float, *, value: float | None = None) -> float:
    """The fraction of bootstrap ``samples`` at or above ``threshold``.

    With ``value``, the samples are first centred on it as :func:`interval` does, so the probability
    agrees with the reported interval (a threshold at the interval's low end gives about 0.975).
    For an accuracy budget of B points on a delta in points, ``probability_at_least(delta_samples, -B)``
    is P(drop <= B) over the resampled image sets.

    Example:
        >>> probability_at_least(np.array([-1.0, -0.5, 0.0, 0.5]), -0.5)
        0.75
    """
    if len(samples) == 0:
        msg = "no bootstrap samples to count; evaluate with EvalConfig(resamples=...) > 0"
        raise ValueError(msg)
    centred = samples if value is None else samples - (float(np.mean(samples)) - value)
    return float(np.mean(centred >= threshold))


@dataclass(frozen=True)
class _Curve:
    """One (class, IoU threshold): counts per image up to each true positive, in score order."""

    category: int  # column of MatchTable.gt_counts
    threshold: int  # row of the IoU thresholds
    tp: np.ndarray  # [images, true positives] cumulative true positives of each image
    fp: np.ndarray  # [images, true positives] cumulative false positives of each image


class MatchTable:
    """The per-image matching of one COCOeval run, ready to be re-accumulated for any image weights.

    Build it with :meth:`from_cocoeval` after ``COCOeval.evaluate()``; :meth:`maps` gives the mAP at each
    IoU threshold for each row of image weights (a row of ones reproduces ``accumulate``'s mAP).
    """

    def __init__(
        self, curves: Sequence[_Curve], gt_counts: np.ndarray, recall_thresholds: np.ndarray, num_thresholds: int
    ) -> None:
        self.curves = tuple(curves)
        self.gt_counts = gt_counts  # [images, classes] non-ignored ground truth per image
        self.recall_thresholds = recall_thresholds
        self.num_thresholds = num_thresholds
        sizes = [c.tp.shape[1] for c in self.curves]
        self._bounds = np.cumsum([0, *sizes])
        empty = np.zeros((gt_counts.shape[0], 0))
        self._tp = np.concatenate([c.tp for c in self.curves], axis=1) if self.curves else empty
        self._fp = np.concatenate([c.fp for c in self.curves], axis=1) if self.curves else empty

    @property
    def num_images(self) -> int:
        return int(self.gt_counts.shape[0])

    @classmethod
    def from_cocoeval(cls, ev: Any) -> MatchTable:
        """From a ``COCOeval`` whose ``evaluate()`` has run (area range 'all', the last ``maxDets``)."""
        p = ev.params
        num_cats, num_areas, num_images = len(p.catIds), len(p.areaRng), len(p.imgIds)
        max_det = p.maxDets[-1]
        num_thr = len(p.iouThrs)
        gt_counts = np.zeros((num_images, num_cats))
        curves: list[_Curve] = []
        for k in range(num_cats):
            entries = [(i, ev.evalImgs[k * num_areas * num_images + i]) for i in range(num_images)]
            entries = [(i, e) for i, e in entries if e is not None]
            for i, e in entries:
                gt_counts[i, k] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
            if not entries:
                continue
            curves += _curves(k, entries, num_images, max_det, num_thr)
        return cls(curves, gt_counts, np.asarray(p.recThrs, np.float64), num_thr)

    def maps(self, weights: np.ndarray) -> np.ndarray:
        """``[rows, thresholds]`` mAP for each row of ``[rows, images]`` image weights (draw counts)."""
        out = [self._maps_chunk(weights[s : s + _CHUNK]) for s in range(0, len(weights), _CHUNK)]
        return np.concatenate(out) if out else np.zeros((0, self.num_thresholds))

    def _maps_chunk(self, w: np.ndarray) -> np.ndarray:
        npig = w @ self.gt_counts  # [rows, classes]
        tp_all, fp_all = w @ self._tp, w @ self._fp
        ap_sum = np.zeros((len(w), self.num_thresholds))
        valid = npig > 0  # pycocotools skips a class without (non-ignored) ground truth
        for c, lo, hi in zip(self.curves, self._bounds[:-1], self._bounds[1:], strict=True):
            ap = _average_precision(tp_all[:, lo:hi], fp_all[:, lo:hi], npig[:, c.category], self.recall_thresholds)
            ap_sum[:, c.threshold] += np.where(valid[:, c.category], ap, 0.0)
        classes = valid.sum(axis=1)[:, None]
        maps: np.ndarray = np.divide(ap_sum, classes, out=np.zeros_like(ap_sum), where=classes > 0)
        return maps


def _curves(
    k: int, entries: list[tuple[int, dict[str, Any]]], num_images: int, max_det: int, num_thr: int
) -> list[_Curve]:
    """The true-positive curves of class ``k`` at each IoU threshold, in ``accumulate``'s score order."""
    scores = np.concatenate([np.asarray(e["dtScores"][:max_det], np.float64) for _, e in entries])
    if scores.size == 0:
        return [_Curve(k, t, np.zeros((num_images, 0)), np.zeros((num_images, 0))) for t in range(num_thr)]
    image = np.concatenate([np.full(min(len(e["dtScores"]), max_det), i) for i, e in entries])
    order = np.argsort(-scores, kind="mergesort")  # pycocotools' order, ties kept in image order
    matched = np.concatenate([np.asarray(e["dtMatches"])[:, :max_det] for _, e in entries], axis=1)[:, order]
    ignored = np.concatenate([np.asarray(e["dtIgnore"])[:, :max_det] for _, e in entries], axis=1)[:, order]
    image = image[order]
    out = []
    for t in range(num_thr):
        tp = (matched[t] != 0) & ~ignored[t].astype(bool)
        fp = (matched[t] == 0) & ~ignored[t].astype(bool)
        positions = np.flatnonzero(tp)
        out.append(
            _Curve(k, t, _counts_at(image, tp, positions, num_images), _counts_at(image, fp, positions, num_images))
        )
    return out


def _counts_at(image: np.ndarray, hits: np.ndarray, positions: np.ndarray, num_images: int) -> np.ndarray:
    """``[images, positions]``: how many ``hits`` of each image lie at or before each position."""
    onehot = np.zeros((num_images, len(image)))
    where = np.flatnonzero(hits)
    onehot[image[where], where] = 1.0
    return np.cumsum(onehot, axis=1)[:, positions]


def _average_precision(tp: np.ndarray, fp: np.ndarray, npig: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """COCO's 101-point interpolated AP per row, from the counts at each true positive.

    Only true positives matter: the interpolated precision at a recall level is the best precision at or
    after the first point that reaches it, and recall only rises at a true positive.
    """
    rows, points = tp.shape
    if points == 0:
        return np.zeros(rows)
    precision = tp / (tp + fp + np.spacing(1))
    best_after = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    # first point with tp / npig >= threshold, found on exact integer counts: the smallest count m with
    # m / npig >= threshold in float arithmetic (as pycocotools compares), then tp >= m
    denom = np.maximum(npig, 1.0)[:, None]
    need = np.ceil(thresholds[None, :] * denom)
    need -= (need - 1) / denom >= thresholds[None, :]
    need += need / denom < thresholds[None, :]
    stride = float(np.max(npig) + np.max(tp) + 2)
    offset = np.arange(rows)[:, None] * stride
    index = np.searchsorted((tp + offset).ravel(), (need + offset).ravel(), side="left").reshape(rows, -1)
    index -= np.arange(rows)[:, None] * points
    found = index < points
    q = np.where(found, np.take_along_axis(best_after, np.minimum(index, points - 1), axis=1), 0.0)
    ap: np.ndarray = q.mean(axis=1)
    return ap
