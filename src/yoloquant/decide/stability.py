"""How stable a sensitivity ranking is: rank agreement across bootstrap resamples of the proxy images.

The proxy SQNR of a group is ``10 log10(sum(signal) / sum(noise))`` over the proxy images, and both sums
are sums over images. So keeping each image's signal (FP32 output energy) and each group's noise
(squared error) per image, a resample of the images is a weighted sum: no model runs again. Each
resample ranks the groups anew; the report gives the mean Spearman and Kendall rank correlation with
the full ranking, and per group the fraction of resamples in which it stays in the top k and the 95%
range of its rank.

Example:
    >>> signal = np.ones((1, 4))
    >>> noise = np.stack([np.full((1, 4), 10.0**-g) for g in range(3)])  # well separated groups
    >>> s = rank_stability(signal, noise, top_k=1, resamples=50)
    >>> s.spearman_mean, s.top_k_share.tolist()
    (1.0, [1.0, 0.0, 0.0])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from yoloquant.eval.bootstrap import resample_weights

__all__ = ["RankStability", "rank_stability", "weighted_sqnr"]

_MAX_DB = 200.0  # as decide.metrics.sqnr_db


def weighted_sqnr(signal: np.ndarray, noise: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[rows, groups, outputs]`` SQNR in dB for each row of image weights.

    Args:
        signal: ``[outputs, images]`` sum of squares of the FP32 output per image.
        noise: ``[groups, outputs, images]`` sum of squared errors per image.
        weights: ``[rows, images]`` image draw counts (a row of ones is the full set).
    """
    s = weights @ signal.T  # [rows, outputs]
    n = np.einsum("ri,goi->rgo", weights, noise)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10.0 * np.log10(s[:, None, :] / n)
    db = np.where(n == 0, _MAX_DB, np.where(s[:, None, :] == 0, -_MAX_DB, db))
    return np.clip(db, -_MAX_DB, _MAX_DB)


@dataclass(frozen=True, kw_only=True)
class RankStability:
    """Agreement of resampled rankings with the full one (groups in the order given to :func:`rank_stability`).

    Attributes:
        spearman_mean / kendall_mean: Mean rank correlation (tau-b) with the full ranking; 1 = always
            the same order, about 0 = the order is noise.
        spearman_ci95 / kendall_ci95: 2.5 and 97.5 percentiles over the resamples.
        top_k: The k of ``top_k_share``.
        top_k_share: ``[groups]`` fraction of resamples in which the group is among the k most sensitive.
        rank_ci95: ``[groups, 2]`` 2.5 and 97.5 percentiles of its rank (1 = most sensitive).
    """

    resamples: int
    seed: int
    images: int
    top_k: int
    spearman_mean: float
    spearman_ci95: tuple[float, float]
    kendall_mean: float
    kendall_ci95: tuple[float, float]
    top_k_share: np.ndarray
    rank_ci95: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "resamples": self.resamples,
            "seed": self.seed,
            "images": self.images,
            "top_k": self.top_k,
            "spearman_mean": round(self.spearman_mean, 4),
            "spearman_ci95": [round(v, 4) for v in self.spearman_ci95],
            "kendall_mean": round(self.kendall_mean, 4),
            "kendall_ci95": [round(v, 4) for v in self.kendall_ci95],
        }


def rank_stability(
    signal: np.ndarray,
    noise: np.ndarray,
    *,
    top_k: int,
    resamples: int = 200,
    seed: int = 0,
    descending: bool = False,
) -> RankStability:
    """Resample the proxy images, re-rank the groups by their worst output's SQNR, compare with the full ranking.

    Args:
        signal: ``[outputs, images]`` FP32 output energy per image.
        noise: ``[groups, outputs, images]`` squared error per image of each group's model.
        top_k: k of the top-k share (clipped to the number of groups).
        resamples: Bootstrap resamples of the images.
        seed: Seed of the resamples (and of the tie-breaking among equal scores).
        descending: Highest SQNR first (``rank_by="float"``) instead of lowest first.

    Ties: the correlations use average ranks (a resample where every group scores the same correlates 0);
    the top-k share and the rank range break ties at random, so k groups that are truly the same share
    the top k by chance instead of keeping their input order.
    """
    groups, images = noise.shape[0], signal.shape[1]
    k = max(1, min(top_k, groups))
    sign = -1.0 if descending else 1.0
    full = sign * weighted_sqnr(signal, noise, np.ones((1, images))).min(axis=2)[0]  # [groups], low = sensitive
    keys = sign * weighted_sqnr(signal, noise, resample_weights(images, resamples, seed)).min(axis=2)
    rng = np.random.default_rng(seed)
    order = np.array([np.lexsort((rng.random(groups), row)) for row in keys])  # [resamples, groups]
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.arange(1, groups + 1)[None, :].repeat(len(order), 0), axis=1)
    full_ranks = _average_ranks(full)
    rho = np.array([_pearson(_average_ranks(row), full_ranks) for row in keys])
    tau = _kendall(keys, full)
    return RankStability(
        resamples=resamples,
        seed=seed,
        images=images,
        top_k=k,
        spearman_mean=float(rho.mean()),
        spearman_ci95=_pct(rho),
        kendall_mean=float(tau.mean()),
        kendall_ci95=_pct(tau),
        top_k_share=(position <= k).mean(axis=0),
        rank_ci95=np.percentile(position, [2.5, 97.5], axis=0).T,
    )


def _pct(x: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(x, [2.5, 97.5])
    return float(low), float(high)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="mergesort")] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    out: np.ndarray = (sums / counts)[inverse]
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def _kendall(keys: np.ndarray, full: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row of ``keys`` with ``full`` (0 where either has no untied pair)."""
    i, j = np.triu_indices(len(full), k=1)
    sf = np.sign(full[i] - full[j])  # [pairs]
    sk = np.sign(keys[:, i] - keys[:, j])  # [rows, pairs]
    denom = np.sqrt((sk * sk).sum(axis=1) * (sf * sf).sum())
    tau: np.ndarray = np.divide((sk * sf).sum(axis=1), denom, out=np.zeros(len(keys)), where=denom > 0)
    return tau
