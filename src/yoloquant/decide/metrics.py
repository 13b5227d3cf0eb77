"""Output-error proxies: how far a quantized model's raw outputs are from the float model's.

Example:
    >>> ref = np.array([3.0, 4.0])
    >>> round(sqnr_db(ref, np.array([3.0, 3.0])), 2), round(cosine(ref, np.array([4.0, 3.0])), 2)
    (13.98, 0.96)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["cosine", "output_errors", "sqnr_db"]

_MAX_DB = 200.0  # an exact match has infinite SQNR; cap it so JSON and sorting stay finite


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(sum(ref^2) / sum((ref - test)^2))`` in dB."""
    ref = np.asarray(reference, np.float64).ravel()
    noise = float(np.sum((ref - np.asarray(test, np.float64).ravel()) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return _MAX_DB
    if signal == 0.0:
        return -_MAX_DB
    return min(_MAX_DB, 10.0 * math.log10(signal / noise))


def cosine(reference: np.ndarray, test: np.ndarray) -> float:
    """Cosine similarity of the two flattened arrays (1.0 when both are zero)."""
    a = np.asarray(reference, np.float64).ravel()
    b = np.asarray(test, np.float64).ravel()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(np.dot(a, b) / norm)


def output_errors(
    reference: Sequence[np.ndarray], test: Sequence[np.ndarray]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-output (SQNR dB, cosine) of ``test`` against ``reference``, outputs in the same order."""
    if len(reference) != len(test):
        msg = f"got {len(test)} outputs to compare with {len(reference)} reference outputs"
        raise ValueError(msg)
    pairs = list(zip(reference, test, strict=True))
    return tuple(sqnr_db(r, t) for r, t in pairs), tuple(cosine(r, t) for r, t in pairs)
