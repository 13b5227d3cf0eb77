"""Latency benchmarks: variants timed interleaved so their ratios hold on a noisy machine."""

from yoloquant.bench.latency import LatencyResult, benchmark_interleaved

__all__ = ["LatencyResult", "benchmark_interleaved"]
