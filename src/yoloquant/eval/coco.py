"""COCO mAP of an engine on a dataset, scored by pycocotools with ``yolo val``'s decode settings.

Example:
    >>> with OrtEngineBuilder().build(OnnxModel.load("yolov8n.onnx")) as engine:  # doctest: +SKIP
    ...     result = evaluate(engine, load_dataset("assets/coco64.yaml"), EvalConfig())
    >>> result.map50_95  # doctest: +SKIP
    0.45
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from yoloquant._optional import require
from yoloquant.config import EvalConfig
from yoloquant.data.datasets import Dataset
from yoloquant.data.images import read_image
from yoloquant.data.letterbox import VAL_MASK_THRESHOLD, LetterboxMeta, normalize_pixels, preprocess, scale_detections
from yoloquant.detections import Detections
from yoloquant.errors import ConfigError, DataError
from yoloquant.eval.bootstrap import MatchTable, Metric, interval, paired_delta, resample_weights
from yoloquant.postprocess.decode import decode
from yoloquant.protocols import Engine
from yoloquant.tasks import TaskSpec, task_spec

__all__ = ["COCO_OKS_SIGMAS", "KEYPOINT_AREA_FACTOR", "EvalResult", "delta", "evaluate", "oks_sigmas"]

log = logging.getLogger(__name__)

# COCO's keypoint OKS sigmas (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles): pycocotools'
# Params.kpt_oks_sigmas and Ultralytics' OKS_SIGMA
COCO_OKS_SIGMAS = (
    np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89])
    / 10.0
)


@dataclass(frozen=True, kw_only=True)
class EvalResult:
    """COCO metrics of one evaluation, keyed by name, each with its 95% bootstrap interval over images.

    Attributes:
        num_images: Images evaluated.
        num_instances: Ground-truth boxes (crowd boxes excluded).
        seconds: Wall time of preprocessing, inference, decoding and scoring.
        metrics: The task's metrics by name (detect: ``{"map50_95": Metric, "map50": Metric}``): value and
            interval (none with ``resamples=0``).
        replicates: The bootstrap replicates of each metric, paired across variants evaluated on the same
            images with the same seed (see :func:`delta`).
        resampling: ``{"resamples", "seed", "images"}``: what makes two results' replicates paired.
        task: The task evaluated (see :mod:`yoloquant.tasks`).
        primary_metric: The metric budgets and Pareto fronts rank by (the task's).
    """

    num_images: int
    num_instances: int
    seconds: float
    metrics: dict[str, Metric] = field(default_factory=dict)
    replicates: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    resampling: dict[str, Any] = field(default_factory=dict)
    task: str = "detect"
    primary_metric: str = "map50_95"

    def value(self, metric: str) -> float:
        """The measured value of ``metric``.

        Raises:
            ConfigError: This evaluation has no metric of that name; names the ones it has.
        """
        if metric not in self.metrics:
            msg = f"no metric {metric!r} in this {self.task} evaluation; it has {sorted(self.metrics)}"
            raise ConfigError(msg)
        return self.metrics[metric].value

    @property
    def primary(self) -> float:
        """The value of :attr:`primary_metric`."""
        return self.value(self.primary_metric)

    @property
    def map50_95(self) -> float:
        """mAP over IoU 0.50:0.95 (COCO's primary box metric)."""
        return self.value("map50_95")

    @property
    def map50(self) -> float:
        """mAP at IoU 0.50."""
        return self.value("map50")

    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, float] = {k: self.metrics[k].value for k in ("map50_95", "map50") if k in self.metrics}
        return {
            **plain,
            "num_images": self.num_images,
            "num_instances": self.num_instances,
            "seconds": self.seconds,
            "task": self.task,
            "primary_metric": self.primary_metric,
            "metrics": {name: m.to_dict() for name, m in self.metrics.items()},
            "resampling": self.resampling,
        }

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={m.format('.4f')}" for k, m in self.metrics.items())
        return f"EvalResult({shown}, images={self.num_images}, instances={self.num_instances}, {self.seconds:.1f}s)"


def delta(result: EvalResult, baseline: EvalResult, metric: str | None = None) -> Metric:
    """``result - baseline`` of ``metric`` (default: the primary one) in mAP points, with the paired 95% interval.

    Raises:
        ConfigError: If the two were not evaluated on the same images with the same resampling
            (their replicates would not be paired).

    Example:
        >>> delta(int8_result, fp32_result)  # doctest: +SKIP
        -0.71 [-1.32, -0.10]
    """
    metric = metric or baseline.primary_metric
    value, base = result.value(metric), baseline.value(metric)
    if result.resampling != baseline.resampling:
        msg = (
            f"cannot pair resamples of evaluations on different images or seeds ({result.resampling} vs "
            f"{baseline.resampling}); evaluate both on the same dataset with the same EvalConfig.seed"
        )
        raise ConfigError(msg)
    if metric not in result.replicates or metric not in baseline.replicates:
        return Metric(value=(value - base) * 100)
    return paired_delta(result.replicates[metric], baseline.replicates[metric], value, base)


Preprocess = Callable[[np.ndarray, int], tuple[np.ndarray, LetterboxMeta]]


def _batches(
    dataset: Dataset, imgsz: int, size: int, prep: Preprocess = preprocess
) -> Iterator[tuple[np.ndarray, list[LetterboxMeta]]]:
    for start in range(0, len(dataset), size):
        items = [prep(read_image(f), imgsz) for f in dataset.images[start : start + size]]
        yield np.stack([x for x, _ in items]), [m for _, m in items]


@dataclass(frozen=True)
class _Prediction:
    """One image's detections in original-image pixels; its masks as COCO RLEs (kept small: 300 full-size
    masks of every image would not fit in memory) and dropped from ``dets``."""

    dets: Detections
    rles: list[dict[str, Any]] | None = None


def _encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """``[N, H, W]`` boolean masks -> pycocotools RLEs (``pycocotools.mask.encode``)."""
    mask_utils = require("pycocotools.mask")
    if not masks.shape[0]:
        return []
    rles: list[dict[str, Any]] = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return rles


def _scaled(dets: Detections, meta: LetterboxMeta) -> _Prediction:
    scaled = scale_detections(dets, meta, mask_threshold=VAL_MASK_THRESHOLD)  # masks as yolo val scales them
    if scaled.masks is None:
        return _Prediction(scaled)
    return _Prediction(dataclasses.replace(scaled, masks=None), _encode_masks(scaled.masks))


def _predict_all(
    engine: Engine, dataset: Dataset, config: EvalConfig, progress: bool, desc: str, *, prep: Preprocess = preprocess
) -> list[_Prediction]:
    from tqdm import tqdm

    imgsz = engine.info.imgsz[0]
    fixed = not engine.info.dynamic_batch
    out: list[_Prediction] = []
    total = -(-len(dataset) // config.batch)
    for batch, metas in tqdm(
        _batches(dataset, imgsz, config.batch, prep), total=total, desc=desc, disable=not progress
    ):
        n = batch.shape[0]
        full = batch
        if fixed and n < config.batch:  # a fixed-batch model needs a full final batch
            full = np.concatenate([batch, np.zeros((config.batch - n, *batch.shape[1:]), batch.dtype)])
        outputs = engine.infer(normalize_pixels(full))
        dets = decode(outputs, engine.info, conf=config.conf, iou=config.iou, max_det=config.max_det)[:n]
        out += [_scaled(d, m) for d, m in zip(dets, metas, strict=True)]
    return out


def _xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _segmentation(polygon: np.ndarray, box: list[float]) -> tuple[list[list[float]], float]:
    """A label polygon as a COCO ``segmentation`` and its area (shoelace); a degenerate one becomes its box."""
    if polygon.shape[0] < 3:
        x, y, w, h = box
        polygon = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32)
    xs, ys = polygon[:, 0].astype(np.float64), polygon[:, 1].astype(np.float64)
    area = 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))
    return [polygon.astype(np.float64).reshape(-1).tolist()], area


# yolo val's OKS object scale for ground truth from labels: box area x 0.53 (xtcocotools' rule; a COCO json's
# annotations carry their own segmentation area instead)
KEYPOINT_AREA_FACTOR = 0.53


def _gt_from_labels(
    dataset: Dataset, *, masks: bool = False, keypoints: bool = False
) -> tuple[dict[str, Any], list[int], dict[int, int]]:
    """An in-memory COCO ground truth: image ids 0..N-1, category id = class index + 1.

    With ``masks``, each object also gets its label polygon as ``segmentation`` (and the polygon's area).
    With ``keypoints``, its label keypoints (``x, y, v`` flattened), ``num_keypoints`` (those with v > 0: COCO
    ignores an object with none in keypoint scoring) and ``area`` = box area x :data:`KEYPOINT_AREA_FACTOR`,
    as ``yolo val`` scales OKS for label ground truth.

    Raises:
        DataError: ``masks`` (``keypoints``) is set and an image's labels have no polygons (keypoints).
    """
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    classes: set[int] = set(dataset.names or {})
    for image_id, gt in enumerate(dataset.labels or ()):
        images.append({"id": image_id, "height": gt.shape[0], "width": gt.shape[1]})
        _check_extras(dataset, image_id, masks=masks, keypoints=keypoints)
        for i, (box, cls) in enumerate(zip(_xywh(gt.boxes).tolist(), gt.classes.tolist(), strict=True)):
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": cls + 1, "bbox": box}
            ann |= {"area": box[2] * box[3], "iscrowd": 0}
            if masks and gt.polygons is not None:
                ann["segmentation"], ann["area"] = _segmentation(gt.polygons[i], box)
            if keypoints and gt.keypoints is not None:
                ann |= _keypoint_annotation(gt.keypoints[i], box)
            anns.append(ann)
            classes.add(cls)
    cats = [{"id": c + 1, "name": str(c)} for c in sorted(classes)]
    return (
        {"images": images, "annotations": anns, "categories": cats},
        list(range(len(images))),
        {c: c + 1 for c in classes},
    )


def _check_extras(dataset: Dataset, image_id: int, *, masks: bool, keypoints: bool) -> None:
    gt = (dataset.labels or ())[image_id]
    if not len(gt):
        return
    if masks and gt.polygons is None:
        msg = f"{dataset.images[image_id]}: its labels have boxes but no segment polygons to score masks against"
        raise DataError(msg)
    if keypoints and gt.keypoints is None:
        msg = (
            f"{dataset.images[image_id]}: its labels were read without keypoints, so pose cannot be scored; load a "
            "pose dataset yaml with 'kpt_shape' (e.g. kpt_shape: [17, 3]) or a COCO person_keypoints json"
        )
        raise DataError(msg)


def _keypoint_annotation(points: np.ndarray, box: list[float]) -> dict[str, Any]:
    """COCO keypoint fields of one label object: ``[K, 3]`` pixel x, y and visibility (0, 1, 2)."""
    flat = np.asarray(points, np.float64).copy()
    flat[:, 2] = np.rint(flat[:, 2])
    return {
        "keypoints": flat.reshape(-1).tolist(),
        "num_keypoints": int(np.count_nonzero(flat[:, 2] > 0)),
        "area": box[2] * box[3] * KEYPOINT_AREA_FACTOR,
    }


def _box_results(preds: list[_Prediction], image_ids: list[int], cat_ids: dict[int, int]) -> list[dict[str, Any]]:
    out = []
    for image_id, p in zip(image_ids, preds, strict=True):
        d = p.dets
        for box, score, cls in zip(_xywh(d.boxes).tolist(), d.scores.tolist(), d.classes.tolist(), strict=True):
            if cls in cat_ids:  # a class the ground truth's categories lack cannot be scored
                out.append({"image_id": image_id, "category_id": cat_ids[cls], "bbox": box, "score": score})
    return out


def _mask_results(preds: list[_Prediction], image_ids: list[int], cat_ids: dict[int, int]) -> list[dict[str, Any]]:
    out = []
    for image_id, p in zip(image_ids, preds, strict=True):
        if p.rles is None:
            msg = "a segm evaluation needs masks; the model's decoder produced none"
            raise ConfigError(msg)
        for rle, score, cls in zip(p.rles, p.dets.scores.tolist(), p.dets.classes.tolist(), strict=True):
            if cls in cat_ids:
                out.append({"image_id": image_id, "category_id": cat_ids[cls], "segmentation": rle, "score": score})
    return out


def _keypoint_results(preds: list[_Prediction], image_ids: list[int], cat_ids: dict[int, int]) -> list[dict[str, Any]]:
    """Box records with each detection's ``keypoints`` (x, y, visibility score flattened), as ``yolo val`` writes."""
    out = []
    for image_id, p in zip(image_ids, preds, strict=True):
        d = p.dets
        if d.keypoints is None:
            msg = "a keypoints evaluation needs keypoints; the model's decoder produced none"
            raise ConfigError(msg)
        points = d.keypoints.reshape(len(d), -1).astype(np.float64).tolist()
        rows = zip(_xywh(d.boxes).tolist(), points, d.scores.tolist(), d.classes.tolist(), strict=True)
        for box, kpts, score, cls in rows:
            if cls in cat_ids:
                record = {"image_id": image_id, "category_id": cat_ids[cls], "bbox": box, "score": score}
                out.append(record | {"keypoints": kpts})
    return out


_Results = Callable[[list[_Prediction], list[int], dict[int, int]], list[dict[str, Any]]]

# pycocotools iouType -> the detections as its result records
_RESULTS: dict[str, _Results] = {"bbox": _box_results, "segm": _mask_results, "keypoints": _keypoint_results}


def _results_for(iou_type: str) -> _Results:
    if iou_type not in _RESULTS:
        msg = f"pycocotools iouType {iou_type!r} is not supported yet; supported: {sorted(_RESULTS)}"
        raise ConfigError(msg)
    return _RESULTS[iou_type]


@dataclass(frozen=True)
class _Scored:
    maps: np.ndarray  # [IoU thresholds] mAP at each threshold
    replicates: np.ndarray | None  # [resamples, IoU thresholds]


def _score(gt: Any, results: list[dict[str, Any]], image_ids: list[int], config: EvalConfig, iou_type: str) -> _Scored:
    cocoeval = require("pycocotools.cocoeval")
    if not results:
        return _Scored(np.zeros(10), np.zeros((config.resamples, 10)) if config.resamples else None)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        dt = gt.loadRes([dict(r) for r in results])  # loadRes adds keys to the records it is given
        ev = cocoeval.COCOeval(gt, dt, iou_type)
        ev.params.imgIds = image_ids
        # every max_det detection is scored, as yolo val's own metric does (COCO's keypoint default is 20)
        ev.params.maxDets = [1, 10, config.max_det]
        if iou_type == "keypoints":
            ev.params.kpt_oks_sigmas = oks_sigmas(len(results[0]["keypoints"]) // 3)
        ev.evaluate()
    # accumulate() on the cached matching: one row of ones is pycocotools' own number (tests check it)
    table = MatchTable.from_cocoeval(ev)
    maps = table.maps(np.ones((1, table.num_images)))[0]
    if not config.resamples:
        return _Scored(maps, None)
    return _Scored(maps, table.maps(resample_weights(table.num_images, config.resamples, config.seed)))


def oks_sigmas(num_keypoints: int) -> np.ndarray:
    """OKS per-keypoint sigmas: COCO's 17 (pycocotools' own) for 17 keypoints, else ``1 / K`` each, as ``yolo val``.

    Example:
        >>> oks_sigmas(17)[:3].round(3).tolist(), oks_sigmas(4).tolist()
        ([0.026, 0.025, 0.025], [0.25, 0.25, 0.25, 0.25])
    """
    if num_keypoints == len(COCO_OKS_SIGMAS):
        return COCO_OKS_SIGMAS.copy()
    return np.ones(num_keypoints) / num_keypoints


def _metrics(scored: _Scored, names: tuple[str, str]) -> tuple[dict[str, Metric], dict[str, np.ndarray]]:
    """``names`` (mAP50-95, mAP50) -> their values and intervals, and their replicates."""
    over, at50 = names
    values = {over: float(scored.maps.mean()), at50: float(scored.maps[0])}
    if scored.replicates is None:
        return {k: Metric(value=v) for k, v in values.items()}, {}
    reps = {over: scored.replicates.mean(axis=1), at50: scored.replicates[:, 0]}
    return {k: interval(reps[k], v) for k, v in values.items()}, reps


def _score_task(
    spec: TaskSpec, gt: Any, dets: list[_Prediction], ids: tuple[list[int], dict[int, int]], config: EvalConfig
) -> tuple[dict[str, Metric], dict[str, np.ndarray]]:
    """Every metric of the task: one pycocotools evaluation per :class:`~yoloquant.tasks.Scoring`."""
    image_ids, cat_ids = ids
    metrics: dict[str, Metric] = {}
    replicates: dict[str, np.ndarray] = {}
    for scoring in spec.scoring:
        results = _results_for(scoring.iou_type)(dets, image_ids, cat_ids)
        m, r = _metrics(_score(gt, results, image_ids, config, scoring.iou_type), scoring.metric_names)
        metrics |= m
        replicates |= r
    return metrics, replicates


def _coco_gt(
    dataset: Dataset, names: dict[int, str], *, masks: bool = False, keypoints: bool = False
) -> tuple[Any, list[int], dict[int, int]]:
    """(pycocotools ground truth, image ids, model class -> category id); ``masks`` / ``keypoints`` add label
    polygons / keypoints (a json must have its own)."""
    coco_mod = require("pycocotools.coco")
    with contextlib.redirect_stdout(io.StringIO()):
        if dataset.coco_json is not None:
            gt = coco_mod.COCO(str(dataset.coco_json))
            by_name = {str(c["name"]): int(c["id"]) for c in gt.dataset["categories"]}
            cat_ids = {i: by_name[n] for i, n in names.items() if n in by_name}  # the engine's names decide
            image_ids = list(dataset.image_ids or ())
            if keypoints:
                _require_json_keypoints(gt, image_ids, dataset.coco_json)
            return gt, image_ids, cat_ids or dict(dataset.category_ids or {})
        data, image_ids, cat_ids = _gt_from_labels(dataset, masks=masks, keypoints=keypoints)
        gt = coco_mod.COCO()
        gt.dataset = data
        gt.createIndex()
    return gt, image_ids, cat_ids


def _require_json_keypoints(gt: Any, image_ids: list[int], path: Any) -> None:
    """Every annotation of the evaluated images has ``keypoints`` (pycocotools' OKS would fail on one without)."""
    for ann in gt.loadAnns(gt.getAnnIds(imgIds=image_ids)):
        if "keypoints" not in ann:
            msg = (
                f"{path}: annotation id {ann.get('id')} has no 'keypoints', so pose cannot be scored against this "
                "json; use a COCO person_keypoints_*.json"
            )
            raise DataError(msg)


def _max_det(config: EvalConfig, dataset: Dataset) -> int:
    """Like ``yolo val``: a default max_det below the most objects in one image is raised to that count."""
    most = max((len(gt) for gt in dataset.labels or ()), default=0)
    if most > config.max_det == EvalConfig().max_det:
        log.warning("an image has %d objects, more than max_det=%d; using max_det=%d", most, config.max_det, most)
        return most
    return config.max_det


def evaluate(
    engine: Engine,
    dataset: Dataset,
    config: EvalConfig | None = None,
    *,
    progress: bool = True,
    desc: str = "eval",
    preprocess: Preprocess = preprocess,
) -> EvalResult:
    """COCO mAP50-95 / mAP50 of ``engine`` on ``dataset``, and the other metrics of the model's task.

    Each image is letterboxed exactly as ``yolo val`` does, run through the engine, decoded with
    ``config``'s conf / iou / max_det, mapped back to original pixels and scored with pycocotools
    (``maxDets`` raised to ``max_det``), with each iouType of the model's task (``engine.info.task``, see
    :mod:`yoloquant.tasks`; detection: ``"bbox"``; segmentation: ``"bbox"`` and ``"segm"``, the masks
    RLE-encoded at original size and scored against the label polygons or the json's segmentations; pose:
    ``"bbox"`` and ``"keypoints"``, OKS with COCO's sigmas, against the label keypoints (object area = box
    area x 0.53, as ``yolo val``) or the json's keypoints and areas). A
    dataset loaded from a COCO json is scored against that json directly (crowd regions handled by
    pycocotools); yolo labels become an in-memory COCO set.

    Args:
        engine: A built engine.
        dataset: A dataset with labels (see :func:`~yoloquant.data.datasets.load_dataset`).
        config: Decode and subset settings; the default is ``yolo val``'s.
        progress: Show a progress bar.
        desc: Progress bar label.
        preprocess: The letterbox (default: ``yolo val``'s, on the CPU); e.g.
            :func:`yoloquant.data.letterbox_gpu.preprocess_via_torch` to measure the GPU letterbox's accuracy.

    Raises:
        DataError: If the selected images have no labels, no box at all, or a class id the model lacks.
        ConfigError: If the model input is not square, or its task is not supported.

    Example:
        >>> evaluate(engine, load_dataset("assets/coco64.yaml"), EvalConfig(num_images=16))  # doctest: +SKIP
        EvalResult(map50_95=0.4632 [...], map50=0.6170 [...], images=16, instances=..., 2.1s)
    """
    config = config or EvalConfig()
    spec = task_spec(engine.info.task)
    if engine.info.imgsz[0] != engine.info.imgsz[1]:
        msg = f"evaluation letterboxes to a square input; the model's imgsz is {engine.info.imgsz}"
        raise ConfigError(msg)
    start = time.perf_counter()
    dataset = dataset.select(config.num_images) if config.num_images is not None else dataset
    dataset.require_boxes(engine.info.names)  # no labels, no boxes, or a class the model does not have
    config = dataclasses.replace(config, max_det=_max_det(config, dataset))
    dets = _predict_all(engine, dataset, config, progress, desc, prep=preprocess)
    kinds = {s.iou_type for s in spec.scoring}
    gt, image_ids, cat_ids = _coco_gt(dataset, engine.info.names, masks="segm" in kinds, keypoints="keypoints" in kinds)
    metrics, replicates = _score_task(spec, gt, dets, (image_ids, cat_ids), config)
    return EvalResult(
        num_images=len(dataset),
        num_instances=sum(len(gt) for gt in dataset.labels or ()),
        seconds=time.perf_counter() - start,
        metrics=metrics,
        replicates=replicates,
        resampling={"resamples": config.resamples, "seed": config.seed, "images": _images_digest(dataset)},
        task=spec.name,
        primary_metric=spec.primary_metric,
    )


def _images_digest(dataset: Dataset) -> str:
    """A digest of the evaluated image list: equal digests mean the same images in the same order."""
    names = "\n".join(str(p.resolve()) for p in dataset.images)
    return hashlib.sha256(names.encode()).hexdigest()[:16]
