"""Bootstrap intervals: the cached re-accumulation against pycocotools' own accumulate() on resampled lists."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest

from yoloquant.errors import ConfigError
from yoloquant.eval.bootstrap import MatchTable, Metric, interval, paired_delta, resample_weights

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def _synthetic(seed: int, images: int = 7) -> tuple[COCO, list[dict[str, object]]]:
    """Ground truth with 3 classes (one crowd box) and noisy detections with distinct scores."""
    rng = np.random.default_rng(seed)
    gt: dict[str, list[dict[str, object]]] = {"images": [], "annotations": [], "categories": []}
    gt["categories"] = [{"id": c, "name": str(c)} for c in (1, 2, 3)]
    dets: list[dict[str, object]] = []
    for i in range(1, images + 1):
        gt["images"].append({"id": i, "width": 640, "height": 480})
        for _ in range(rng.integers(0, 5)):
            x, y, w, h = rng.uniform(0, 400), rng.uniform(0, 300), rng.uniform(8, 200), rng.uniform(8, 150)
            cat = int(rng.integers(1, 4))
            crowd = int(rng.random() < 0.08)
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": i,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": crowd,
                }
            )
            if rng.random() < 0.8:  # a detection near the box, sometimes with the wrong class
                jitter = rng.normal(0, 0.15 * min(w, h), 4)
                dets.append(
                    {
                        "image_id": i,
                        "category_id": cat if rng.random() < 0.85 else int(rng.integers(1, 4)),
                        "bbox": [x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]],
                        "score": float(rng.uniform(0.05, 1.0)),
                    }
                )
        for _ in range(rng.integers(0, 4)):  # false positives
            dets.append(
                {
                    "image_id": i,
                    "category_id": int(rng.integers(1, 4)),
                    "bbox": [*rng.uniform(0, 400, 2).tolist(), 30.0, 30.0],
                    "score": float(rng.uniform(0, 0.6)),
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
    return coco, dets


def _evaluated(gt: COCO, dets: list[dict[str, object]]) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
    return ev


def _accumulated_maps(ev: COCOeval, picks: list[int]) -> np.ndarray:
    """Brute force: pycocotools' accumulate() on the image list ``picks`` (indices, repeats allowed)."""
    ev = copy.deepcopy(ev)
    num_images, num_areas = len(ev.params.imgIds), len(ev.params.areaRng)
    ids = [ev.params.imgIds[i] for i in picks]
    ev.evalImgs = [
        ev.evalImgs[k * num_areas * num_images + a * num_images + i]
        for k in range(len(ev.params.catIds))
        for a in range(num_areas)
        for i in picks
    ]
    ev.params.imgIds = ids
    ev._paramsEval.imgIds = ids
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, -1]
    return np.array([p[p > -1].mean() if (p > -1).any() else 0.0 for p in precision])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resampled_maps_equal_pycocotools_accumulate_on_the_resampled_image_list(seed: int) -> None:
    gt, dets = _synthetic(seed)
    ev = _evaluated(gt, dets)
    table = MatchTable.from_cocoeval(ev)
    weights = resample_weights(table.num_images, resamples=25, seed=seed)
    fast = table.maps(weights)
    for row, w in zip(fast, weights, strict=True):
        picks = [i for i, n in enumerate(w.astype(int)) for _ in range(n)]
        np.testing.assert_allclose(row, _accumulated_maps(ev, picks), atol=1e-12)


def test_a_row_of_ones_is_the_plain_coco_map() -> None:
    gt, dets = _synthetic(5, images=12)
    ev = _evaluated(gt, dets)
    table = MatchTable.from_cocoeval(ev)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate()
        ev.summarize()
    assert table.maps(np.ones((1, table.num_images)))[0].mean() == pytest.approx(ev.stats[0], abs=1e-12)
    assert table.maps(np.ones((1, table.num_images)))[0][0] == pytest.approx(ev.stats[1], abs=1e-12)


def test_resample_weights_are_seeded_draw_counts() -> None:
    a, b = resample_weights(9, 200, seed=3), resample_weights(9, 200, seed=3)
    np.testing.assert_array_equal(a, b)
    assert (a.sum(axis=1) == 9).all()
    assert not np.array_equal(a, resample_weights(9, 200, seed=4))


def test_paired_interval_is_narrower_than_the_unpaired_one() -> None:
    rng = np.random.default_rng(0)
    shared = rng.normal(0.45, 0.03, 1000)  # image difficulty both variants share
    base, variant = shared, shared - 0.005 + rng.normal(0, 0.002, 1000)
    d = paired_delta(variant, base, 0.445, 0.45)
    assert d.value == pytest.approx(-0.5)
    assert d.low is not None and d.high is not None and d.low < -0.5 < d.high
    assert d.half_width is not None and d.half_width < 0.6  # unpaired would be ~ 2 * 1.96 * 3 points
    assert not d.contains(0.0)


def test_hand_computed_interval() -> None:
    samples = np.arange(1, 101, dtype=float) / 100  # percentiles 2.5 / 97.5 interpolate linearly
    m = interval(samples, 0.5)  # the replicates' mean is 0.505: shifted by -0.005 onto the value
    assert m.low == pytest.approx(0.03475 - 0.005) and m.high == pytest.approx(0.97525 - 0.005)
    assert Metric.from_dict(m.to_dict()) == m
    assert repr(Metric(value=-0.71, low=-1.32, high=-0.1)) == "-0.71 [-1.32, -0.10]"


def test_eval_config_rejects_too_few_resamples() -> None:
    from yoloquant.config import EvalConfig

    with pytest.raises(ConfigError, match="resamples"):
        EvalConfig(resamples=20)
    assert EvalConfig(resamples=0).resamples == 0
