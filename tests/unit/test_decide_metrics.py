"""SQNR / cosine proxies and the Pareto front against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from yoloquant.decide.metrics import cosine, output_errors, sqnr_db
from yoloquant.decide.pareto import Point, pareto_front, recommend


def test_sqnr_hand_computed() -> None:
    # signal 3^2 + 4^2 = 25, noise 0^2 + 1^2 = 1 -> 10 log10(25) = 13.979 dB
    assert sqnr_db(np.array([3.0, 4.0]), np.array([3.0, 3.0])) == pytest.approx(10 * math.log10(25))
    # noise equal to the signal: 0 dB; the order of the arguments matters (the first is the reference)
    assert sqnr_db(np.array([1.0, 1.0]), np.array([0.0, 0.0])) == pytest.approx(0.0)
    assert sqnr_db(np.array([2.0]), np.array([1.0])) == pytest.approx(10 * math.log10(4))


def test_sqnr_exact_match_is_capped_and_finite() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert sqnr_db(x, x.copy()) == 200.0


def test_cosine_hand_computed() -> None:
    # (3*4 + 4*3) / (5 * 5) = 24 / 25
    assert cosine(np.array([3.0, 4.0]), np.array([4.0, 3.0])) == pytest.approx(0.96)
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == pytest.approx(0.0)
    assert cosine(np.array([1.0, 2.0]), np.array([-2.0, -4.0])) == pytest.approx(-1.0)
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0


def test_output_errors_are_per_output() -> None:
    ref = [np.array([3.0, 4.0]), np.array([1.0, 1.0])]
    sq, cos = output_errors(ref, [np.array([3.0, 3.0]), np.array([2.0, 2.0])])
    assert sq == pytest.approx((10 * math.log10(25), 10 * math.log10(2 / 2)))
    assert cos[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="outputs"):
        output_errors(ref, ref[:1])


def test_pareto_front_hand_computed() -> None:
    pts = [
        Point("fp32", 10.0, 0.50),
        Point("a", 6.0, 0.48),
        Point("b", 7.0, 0.47),  # dominated by a (slower and worse)
        Point("c", 8.0, 0.49),
        Point("d", 5.0, 0.40),
        Point("e", 8.0, 0.49),  # equal to c: neither dominates the other
    ]
    assert [p.name for p in pareto_front(pts)] == ["d", "a", "c", "e", "fp32"]


def test_recommend_fastest_within_constraints() -> None:
    base = Point("fp32", 10.0, 0.50)
    pts = [base, Point("a", 6.0, 0.48), Point("c", 8.0, 0.497), Point("d", 5.0, 0.40)]
    assert recommend(pts, base, max_map_drop=0.5).name == "c"  # type: ignore[union-attr]
    assert recommend(pts, base, max_map_drop=2.0).name == "a"  # type: ignore[union-attr]
    assert recommend(pts, base, max_map_drop=2.0, min_speedup=1.6).name == "a"  # type: ignore[union-attr]
    assert recommend(pts, base, max_map_drop=2.0, min_speedup=1.7) is None  # 10 / 6 = 1.67x
    assert recommend(pts, base, max_map_drop=0.5, min_speedup=1.5) is None
    assert recommend(pts, base).name == "d"  # type: ignore[union-attr]
