from __future__ import annotations

import time

import numpy as np
import pytest

from yoloquant.artifacts import ModelInfo
from yoloquant.bench import LatencyResult, benchmark_interleaved
from yoloquant.config import BenchConfig
from yoloquant.testing import CallbackEngine

INFO = ModelInfo(names={0: "person"}, imgsz=(64, 64))


def test_statistics_match_a_hand_computed_case() -> None:
    r = LatencyResult(batch=4, samples_ms=(10.0, 20.0, 30.0, 40.0, 50.0))
    assert r.p50 == 30.0
    assert r.p90 == pytest.approx(46.0)
    assert r.iqr == pytest.approx(20.0)  # 40 - 20
    assert r.throughput == pytest.approx(4 * 1000 / 30)
    assert r.noisy  # IQR/median = 0.67
    assert not LatencyResult(batch=1, samples_ms=(10.0, 10.1, 10.0, 9.9, 10.0)).noisy


def test_round_trip_keeps_raw_samples() -> None:
    r = LatencyResult(batch=2, samples_ms=(1.5, 2.5, 3.5, 4.5, 5.5))
    again = LatencyResult.from_dict(r.to_dict())
    assert again.samples_ms == r.samples_ms
    assert again.batch == 2


def test_interleaved_rounds_rotate_order_and_rank_engines_by_speed() -> None:
    order: list[str] = []

    def engine(name: str, seconds: float) -> CallbackEngine:
        def fn(x: np.ndarray) -> list[np.ndarray]:
            order.append(name)
            time.sleep(seconds)
            return [x]

        return CallbackEngine(fn, INFO)

    engines = {"slow": engine("slow", 0.004), "fast": engine("fast", 0.001)}
    config = BenchConfig(batch_sizes=(1, 2), warmup=1, iterations=6)
    results = benchmark_interleaved(engines, config, progress=False)
    assert [r.batch for r in results["slow"]] == [1, 2]
    assert all(len(r.samples_ms) == 6 for rs in results.values() for r in rs)
    assert results["fast"][0].p50 < results["slow"][0].p50
    timed = order[2:14]  # after one warm-up call per engine, batch 1
    assert timed[0:2] == ["slow", "fast"] and timed[2:4] == ["fast", "slow"]


def test_benchmark_feeds_the_given_image_tiled_to_the_batch() -> None:
    seen: list[tuple[int, ...]] = []
    image = np.full((1, 3, 64, 64), 0.5, np.float32)

    def fn(x: np.ndarray) -> list[np.ndarray]:
        seen.append(x.shape)
        assert np.all(x == 0.5)
        return [x]

    benchmark_interleaved(
        {"a": CallbackEngine(fn, INFO)},
        BenchConfig(batch_sizes=(3,), warmup=0, iterations=5, noise_threshold=100.0),
        inputs=image,
        progress=False,
    )
    assert set(seen) == {(3, 3, 64, 64)}


def test_speedups_are_the_baseline_median_over_the_variant_median_per_batch() -> None:
    from yoloquant.bench.latency import LatencyResult, speedups

    fp32 = (LatencyResult(1, (40.0,) * 5), LatencyResult(8, (200.0,) * 5))
    int8 = (LatencyResult(1, (20.0,) * 5), LatencyResult(8, (80.0,) * 5))
    assert speedups(int8, fp32) == {1: 2.0, 8: 2.5}
    assert speedups(fp32, fp32) == {1: 1.0, 8: 1.0}
