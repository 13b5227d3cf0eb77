"""Interleaved latency measurement and the statistics derived from raw samples."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yoloquant.config import BenchConfig
from yoloquant.errors import ConfigError
from yoloquant.protocols import Engine

__all__ = ["LatencyResult", "benchmark_interleaved", "real_input", "speedups"]


@dataclass(frozen=True, eq=False)
class LatencyResult:
    """Raw latency samples of one engine at one batch size, and statistics derived from them.

    Example:
        >>> r = LatencyResult(batch=1, samples_ms=(10.0, 11.0, 12.0, 13.0, 14.0))
        >>> r.p50, r.throughput
        (12.0, 83.33333333333333)
    """

    batch: int
    samples_ms: tuple[float, ...]
    noise_threshold: float = 0.10

    def _pct(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.samples_ms), q))

    @property
    def p50(self) -> float:
        return self._pct(50)

    @property
    def p90(self) -> float:
        return self._pct(90)

    @property
    def p99(self) -> float:
        return self._pct(99)

    @property
    def iqr(self) -> float:
        return self._pct(75) - self._pct(25)

    @property
    def noisy(self) -> bool:
        """IQR / median above the threshold: the numbers are not to be trusted to a few percent."""
        return self.iqr / self.p50 > self.noise_threshold

    @property
    def throughput(self) -> float:
        """Images per second at the median latency."""
        return self.batch * 1000.0 / self.p50

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "p50": round(self.p50, 4),
            "p90": round(self.p90, 4),
            "p99": round(self.p99, 4),
            "iqr": round(self.iqr, 4),
            "throughput_ips": round(self.throughput, 2),
            "iterations": len(self.samples_ms),
            "noisy": self.noisy,
            "samples_ms": [round(s, 4) for s in self.samples_ms],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyResult:
        return cls(batch=int(data["batch"]), samples_ms=tuple(float(s) for s in data["samples_ms"]))


def benchmark_interleaved(
    engines: Mapping[str, Engine],
    config: BenchConfig,
    *,
    inputs: np.ndarray | None = None,
    progress: bool = True,
) -> dict[str, list[LatencyResult]]:
    """Time every engine at every batch size, interleaved round by round.

    Each round runs every engine once, in an order that rotates from round to round, so slow
    drifts of a shared machine (other jobs, thermal state) hit all variants alike and their
    ratios stay meaningful even when absolute times move.

    Args:
        engines: Name -> engine; all must take the same input shape.
        config: Batch sizes, warm-up and iteration counts.
        inputs: One preprocessed float32 image ``[1, 3, H, W]`` tiled to each batch size; random if None.
        progress: Show a progress bar.

    Returns:
        Name -> one LatencyResult per batch size, in ``config.batch_sizes`` order.

    Example:
        >>> results = benchmark_interleaved({"fp32": e1, "int8": e2}, BenchConfig())  # doctest: +SKIP
        >>> results["int8"][0].p50 / results["fp32"][0].p50  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    names = list(engines)
    if not names:
        msg = "benchmark_interleaved needs at least one engine"
        raise ConfigError(msg)
    h, w = engines[names[0]].info.imgsz
    image = inputs if inputs is not None else np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    samples: dict[str, dict[int, list[float]]] = {n: {} for n in names}
    total = len(config.batch_sizes) * config.iterations
    with tqdm(total=total, desc="benchmark", disable=not progress, unit="round") as bar:
        for batch in config.batch_sizes:
            x = np.ascontiguousarray(np.repeat(image, batch, axis=0))
            for name in names:
                for _ in range(config.warmup):
                    engines[name].infer(x)
                samples[name][batch] = []
            for i in range(config.iterations):
                k = i % len(names)
                for name in names[k:] + names[:k]:
                    start = time.perf_counter()
                    engines[name].infer(x)
                    samples[name][batch].append((time.perf_counter() - start) * 1000.0)
                bar.update(1)
    results = {
        name: [LatencyResult(b, tuple(samples[name][b]), config.noise_threshold) for b in config.batch_sizes]
        for name in names
    }
    for name, per_batch in results.items():
        for r in per_batch:
            if r.noisy:
                warnings.warn(
                    f"latency of {name!r} at batch {r.batch} is noisy (IQR/median {r.iqr / r.p50:.0%}); "
                    "compare ratios only, or rerun on a quieter machine",
                    stacklevel=2,
                )
    return results


def real_input(image: Path, imgsz: int) -> np.ndarray:
    """``image`` letterboxed and normalized as the model reads it: realistic activations for timing."""
    from yoloquant.data.images import read_image
    from yoloquant.data.letterbox import normalize_pixels, preprocess

    chw, _ = preprocess(read_image(image), imgsz)
    return normalize_pixels(chw[None])


def speedups(latency: Sequence[LatencyResult], baseline: Sequence[LatencyResult]) -> dict[int, float]:
    """``batch -> baseline p50 / p50``, batch by batch (the two timed at the same batch sizes, in order)."""
    return {r.batch: b.p50 / r.p50 for r, b in zip(latency, baseline, strict=True)}
