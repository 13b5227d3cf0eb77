"""Decisions that respect the noise: P(drop <= budget), the sweep's 'same as best' rule, ranking stability.

Every case is hand-built (replicate arrays, latency samples, per-image noise) so the expected answer is
known without running the code under test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yoloquant import QuantPipeline
from yoloquant.bench.latency import LatencyResult
from yoloquant.decide.pareto import Candidate, recommend_within_noise, resolved_steps, same_accuracy, same_speed
from yoloquant.decide.stability import rank_stability, weighted_sqnr
from yoloquant.decide.sweep import Sweep
from yoloquant.decide.verification import budget_verification
from yoloquant.eval.bootstrap import Metric, interval, probability_at_least
from yoloquant.report.result import VariantResult

RNG = np.random.default_rng(7)
NOISE = RNG.normal(size=1000)  # the images' shared difficulty: common to every variant's replicates
OWN = RNG.normal(size=(6, 1000))  # each variant's own resampling noise


def box_metrics(map50_95: float, map50: float) -> dict[str, Metric]:
    """A detection variant's metrics, plain values."""
    return {"map50_95": Metric(value=map50_95), "map50": Metric(value=map50)}


def reps(value: float, own: int, spread: float = 0.002) -> np.ndarray:
    """Replicates around ``value``: shared noise (cancels in a paired difference) plus a variant's own."""
    r = value + 0.01 * NOISE + spread * OWN[own]
    return r - r.mean() + value


# -- P(drop <= budget) -------------------------------------------------------------------------------


def test_probability_at_least_counts_replicates_at_or_above() -> None:
    samples = np.array([-1.0, -0.4, -0.3, -0.2, 0.5])
    assert probability_at_least(samples, -0.3) == 0.6  # -0.3, -0.2 and 0.5
    assert probability_at_least(samples, 1.0) == 0.0 and probability_at_least(samples, -5.0) == 1.0
    # centred on a value 1 higher than the samples' mean (-0.28): every sample moves up by 1
    assert probability_at_least(samples, 0.65, value=0.72) == 0.6  # 0.7, 0.8 and 1.5
    with pytest.raises(ValueError, match="no bootstrap samples"):
        probability_at_least(np.array([]), 0.0)


def test_budget_verification_reports_drop_interval_verdict_and_probability() -> None:
    delta_samples = np.linspace(-0.8, 0.0, 101)  # points; mean -0.4, so the centred samples are these
    delta = interval(delta_samples, -0.4)
    found = {"max_map_drop": 0.3, "drop_points": 0.1, "search_delta": {"value": -0.1, "ci95": [-0.5, 0.3]}}
    v = budget_verification(found, delta, delta_samples, held_out=True, images=64)
    assert v["verified_drop_points"] == pytest.approx(0.4) and not v["within_budget"]
    # drops 0.0 .. 0.3 are the samples -0.3 .. 0.0: 38 of the 101
    assert v["p_within_budget"] == pytest.approx(38 / 101)
    assert v["verified_drop_ci95"] == pytest.approx([-delta.high, -delta.low])  # type: ignore[operator]
    assert v["resolved"] is False  # 0.3 lies inside [0.02, 0.78]
    assert v["searched_drop_points"] == 0.1 and v["searched_delta"] == found["search_delta"]
    assert v["held_out"] and v["eval_images"] == 64
    easy = budget_verification({**found, "max_map_drop": 1.0}, delta, delta_samples, held_out=True, images=64)
    assert easy["within_budget"] and easy["p_within_budget"] == 1.0 and easy["resolved"] is True
    plain = budget_verification(found, Metric(value=-0.2), None, held_out=False, images=8)
    assert plain["within_budget"] and plain["p_within_budget"] is None and plain["resolved"] is None


def test_runner_verifies_a_budget_on_the_evaluation_replicates() -> None:
    from yoloquant.config import Precision
    from yoloquant.decide.budget_plan import _verification_warnings, _with_verification
    from yoloquant.eval.coco import EvalResult, delta
    from yoloquant.pipeline import VariantPlan

    def result(value: float, replicates: np.ndarray) -> EvalResult:
        m = interval(replicates, value)
        return EvalResult(num_images=32, num_instances=100, seconds=1.0,
                          metrics={"map50_95": m, "map50": m}, replicates={"map50_95": replicates},
                          resampling={"resamples": 1000, "seed": 0, "images": "x"})  # fmt: skip

    fp32 = result(0.5, reps(0.5, 0))
    int8 = result(0.496, reps(0.496, 1))  # 0.4 points lost
    plan = VariantPlan(precision=Precision.INT8, max_map_drop=0.3, budget_data="calibration")
    found = {"max_map_drop": 0.3, "drop_points": 0.1, "search_delta": None}
    quant = {"quantizer": "ort-budget", "config": {"result": found}}
    d = delta(int8, fp32)
    out = _with_verification(plan, quant, int8, fp32, {"map50_95": d})
    assert out is not None
    check = out["budget_verification"]
    diff = (int8.replicates["map50_95"] - fp32.replicates["map50_95"]) * 100
    expected = np.mean(diff - diff.mean() + d.value >= -0.3)
    assert 0.0 < expected < 0.5 and check["p_within_budget"] == pytest.approx(expected)
    assert check["verified_drop_points"] == pytest.approx(0.4) and not check["within_budget"]
    [warning] = _verification_warnings(plan, out)
    assert "held on the search images (drop +0.10) but not on the 32 evaluation images: drop +0.40" in warning
    unbudgeted = VariantPlan(precision=Precision.INT8)
    assert _with_verification(unbudgeted, quant, int8, fp32, {"map50_95": d}) is quant


# -- the sweep's rule ---------------------------------------------------------------------------------


def cand(name: str, value: float, own: int, ms: float, simplicity: float = 0.0, **kw: Any) -> Candidate:
    latency = tuple(ms * (1 + 0.01 * np.sin(np.arange(40) + own)))
    return Candidate(name=name, accuracy=value, replicates=reps(value, own), latency_ms=latency,
                     simplicity=(simplicity,), **kw)  # fmt: skip


def test_indistinguishable_when_the_paired_interval_holds_zero() -> None:
    best = cand("best", 0.500, 0, 12.0)
    close = cand("close", 0.499, 1, 10.0)  # 0.1 point below, own noise 0.2 points: interval holds 0
    far = cand("far", 0.490, 2, 8.0)  # 1 point below: resolved
    assert same_accuracy(close, best) and not same_accuracy(far, best)
    # unpaired intervals would overlap for 'far' too: the shared noise is 1 point wide
    assert interval(far.replicates, far.accuracy).high > interval(best.replicates, best.accuracy).low  # type: ignore[arg-type,operator]
    assert not same_accuracy(
        Candidate(name="a", accuracy=0.5, replicates=None, latency_ms=(1.0,)),
        Candidate(name="b", accuracy=0.49, replicates=None, latency_ms=(1.0,)),
    )


def test_recommend_the_fastest_indistinguishable_from_the_best_not_the_noisiest_winner() -> None:
    fp32 = cand("fp32", 0.502, 5, 20.0, baseline=True)
    best = cand("best", 0.500, 0, 12.0)
    close = cand("close", 0.499, 1, 10.0)
    far = cand("far", 0.490, 2, 8.0)
    rec = recommend_within_noise([fp32, best, close, far], lambda c: True)
    assert rec.best == "best"  # FP32 is the reference, not a candidate, while a quantized variant qualifies
    assert rec.same_as_best == ("close", "best") and rec.pick == "close"  # 'far' is faster but resolved worse
    only_fp32 = recommend_within_noise([fp32, far], lambda c: c.accuracy > 0.495)
    assert only_fp32.pick == "fp32"  # nothing quantized qualifies: the baseline is the answer
    assert recommend_within_noise([best], lambda c: False).pick is None


def test_speed_ties_go_to_the_simpler_config() -> None:
    best = cand("best", 0.500, 0, 12.0, simplicity=0.0)
    fussy = cand("fussy", 0.499, 1, 10.0, simplicity=2.0)
    plain = cand("plain", 0.4995, 3, 10.05, simplicity=0.0)  # 0.5% slower: within the round-to-round noise
    assert same_speed(plain, fussy) and not same_speed(best, fussy)
    rec = recommend_within_noise([best, fussy, plain], lambda c: True)
    assert rec.same_speed == ("fussy", "plain") and rec.pick == "plain"
    timed_apart = Candidate(name="x", accuracy=0.5, replicates=None, latency_ms=(10.0, 10.0, 10.0))
    assert not same_speed(timed_apart, fussy)  # different round counts: not paired, no tie


def test_pareto_steps_within_noise_are_marked() -> None:
    front = [cand("far", 0.490, 2, 8.0), cand("close", 0.499, 1, 10.0), cand("best", 0.500, 0, 12.0)]
    assert resolved_steps(front) == [True, True, False]  # best's 0.1-point gain over 'close' is noise


def _entry(name: str, value: float, own: int, float_nodes: int = 3) -> dict[str, Any]:
    quant = {"float_counts": {"Conv": float_nodes}} if name != "fp32" else None
    v = VariantResult(name=name, precision="int8", backend="ort-cpu", model_path=f"{name}.onnx",
                      size_bytes=1, metrics=box_metrics(value, value + 0.2), quantization=quant)  # fmt: skip
    r = reps(value, own)
    return {"name": name, "map50_95": value, "map50": value + 0.2, "model_path": v.model_path, "variant": v.to_dict(),
            "inputs": {}, "replicates": {"map50_95": r.tolist(), "map50": (r + 0.2).tolist()}}  # fmt: skip


def test_sweep_report_marks_same_as_best_and_recommends_by_the_rule() -> None:
    base = QuantPipeline.from_onnx("m.onnx").calibrate("imgs", num_images=8).evaluate("coco.yaml", num_images=4)
    sweep = Sweep(base).grid(calibration_method=["minmax", "entropy"], keep_float=["decode", "head"])
    a, b, c, d = (v.name for v in sweep.variants)  # minmax-none, minmax-head, entropy-none, entropy-head
    maps = {"fp32": (0.502, 5), a: (0.490, 2), b: (0.500, 0), c: (0.499, 1), d: (0.4995, 3)}
    ms = {"fp32": 20.0, a: 8.0, b: 12.0, c: 10.0, d: 10.05}
    entries = {n: _entry(n, m, own, float_nodes=6 if "head" in n else 3) for n, (m, own) in maps.items()}
    latency = {n: LatencyResult(1, cand(n, 0.5, maps[n][1], t).latency_ms).to_dict() for n, t in ms.items()}
    res = sweep.result(entries, latency, recommend_max_drop=2.0, recommend_min_speedup=None, out_dir=Path("x"))
    section = res.report.sweep
    assert section is not None and section["best"] == b
    assert section["same_as_best"] == [c, d, b] and section["same_speed"] == [c, d]
    # c and d tie in speed; c is the ORT default (entropy, keep_float decode), d changes one option (head)
    # and keeps more nodes float: c is the simpler
    assert sweep.simplicity(sweep.variants[2], entries[c]) == (0.0, 3.0)
    assert sweep.simplicity(sweep.variants[3], entries[d]) == (1.0, 6.0)
    assert res.recommended == c and res.same_as_best == (c, d, b)
    assert res.row(c).delta_vs_fp32 is not None and res.row(c).delta_vs_fp32.contains(-0.3)
    assert res.report.variant(c).delta_vs_fp32["map50_95"].value == pytest.approx(-0.3)
    assert section["vs_best"][a]["ci95"][1] < 0  # a is resolved worse than the best
    md = res.report.to_markdown()
    table = md.split("## Sweep")[1].splitlines()
    row = next(line for line in table if line.startswith(f"| {c} |"))
    assert row.endswith("| = |") and "-0.30 [" in row
    assert next(line for line in table if line.startswith(f"| {b} |")).endswith("| *~ | best |")
    assert "=: meets them and its mAP is indistinguishable from best's" in md


# -- ranking stability --------------------------------------------------------------------------------


def test_weighted_sqnr_with_unit_weights_is_the_plain_sqnr() -> None:
    from yoloquant.decide.metrics import sqnr_db

    ref = RNG.normal(size=(4, 10))
    test = ref + 0.1 * RNG.normal(size=(4, 10))
    signal = (ref**2).sum(axis=1)[None]  # [outputs=1, images=4]
    noise = ((ref - test) ** 2).sum(axis=1)[None, None]  # [groups=1, outputs=1, images=4]
    assert weighted_sqnr(signal, noise, np.ones((1, 4)))[0, 0, 0] == pytest.approx(sqnr_db(ref, test))
    twice_first = np.array([[2.0, 0.0, 1.0, 1.0]])
    resampled = np.concatenate([ref[:1], ref[:1], ref[2:]]), np.concatenate([test[:1], test[:1], test[2:]])
    assert weighted_sqnr(signal, noise, twice_first)[0, 0, 0] == pytest.approx(sqnr_db(*resampled))


def test_identical_groups_rank_unstably_and_separated_groups_stably() -> None:
    signal = np.ones((2, 8))
    same = np.ones((6, 2, 8))  # six groups with exactly the same noise on every image
    s = rank_stability(signal, same, top_k=2, resamples=400, seed=1)
    assert s.spearman_mean == 0.0 and s.kendall_mean == 0.0
    assert s.top_k_share == pytest.approx(np.full(6, 2 / 6), abs=0.08)  # ties broken at random: k/n each
    # same distribution, different draws: the resamples reshuffle the order (0.61-0.74 over six draws;
    # bootstrap resamples of the same 8 images agree with their own full ranking more than new images would)
    exchangeable = np.random.default_rng(0).exponential(size=(6, 2, 8))
    x = rank_stability(signal, exchangeable, top_k=2, resamples=400, seed=1)
    assert x.spearman_mean < 0.8 and max(x.top_k_share) < 0.95
    separated = np.stack([np.full((2, 8), 10.0**-g) * (1 + 0.1 * RNG.random((2, 8))) for g in range(6)])
    t = rank_stability(signal, separated, top_k=2, resamples=400, seed=1)
    assert t.spearman_mean == 1.0 and t.kendall_mean == 1.0
    assert t.top_k_share.tolist() == [1.0, 1.0, 0, 0, 0, 0]
    assert t.rank_ci95.tolist() == [[g, g] for g in range(1, 7)]
    flipped = rank_stability(signal, separated, top_k=2, resamples=50, descending=True)
    assert flipped.top_k_share.tolist() == [0, 0, 0, 0, 1.0, 1.0]  # highest SQNR first: the last two
