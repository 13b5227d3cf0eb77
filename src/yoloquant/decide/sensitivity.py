"""Per-group INT8 sensitivity of a float YOLO ONNX model, ranked.

For each group of quantizable nodes (see :mod:`yoloquant.decide.groups`) two models are made with
ONNX Runtime static INT8 from one shared calibration:

- *only this group INT8* (every other quantizable node float): the damage this group alone does;
- *only this group float* (everything else INT8), the cross-check: what keeping it float buys back.

Both are scored by a fast proxy, the SQNR (dB) and cosine of each raw model output against FP32 on
a few calibration images. Groups are ranked by the first (lowest SQNR = most sensitive), and the
top-k are then evaluated for real mAP50-95 on an evaluation set. How far the ranking can be trusted
is measured on bootstrap resamples of the proxy images (:mod:`yoloquant.decide.stability`): the
report's ``stability`` gives the mean rank correlation with the full ranking, each group its top-k share.

Example:
    >>> report = analyze_sensitivity(model, calib, eval_data=val, out_dir=Path("runs/sens"))  # doctest: +SKIP
    >>> report.ranked_names()[:3]  # doctest: +SKIP
    ['/model.22/cv3.2/cv3.2.2', ...]
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from yoloquant._io import atomic_write_text
from yoloquant._optional import require
from yoloquant.artifacts import CalibrationSet, OnnxModel
from yoloquant.config import EvalConfig, HeadType, _Serializable
from yoloquant.decide._files import new_figure, save_figure
from yoloquant.decide._ortcache import SharedCalibration
from yoloquant.decide.evaluator import ModelEvaluator
from yoloquant.decide.executor import Executor, closing_map
from yoloquant.decide.groups import Granularity, LayerGroup, find_groups
from yoloquant.decide.proxy import Proxy
from yoloquant.decide.report import render_sensitivity
from yoloquant.decide.stability import rank_stability
from yoloquant.errors import ConfigError
from yoloquant.quantize.ort_static import OrtQuantConfig

if TYPE_CHECKING:
    from yoloquant.data.datasets import Dataset

__all__ = ["GroupSensitivity", "SensitivityConfig", "SensitivityReport", "analyze_sensitivity", "sensitivity_section"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SensitivityConfig(_Serializable):
    """Options of :func:`analyze_sensitivity`.

    Attributes:
        granularity: ``conv`` (a Conv and its SiLU) or ``block`` (a ``/model.N/`` module).
        proxy_images: Calibration images the SQNR / cosine proxy runs on.
        top_k: Most sensitive groups whose mAP50-95 is measured (needs ``eval_data``); 0 for none.
        cross_check: Also measure each group kept float with everything else INT8.
        max_groups: Analyze only the first N groups in graph order (None: all); for quick looks and tests.
        rank_by: ``quantized``: lowest SQNR with only the group INT8 first; ``float``: highest SQNR with
            only the group float first (what returning it to float buys back; needs ``cross_check``).
        float_mode: How a node is kept float: ``exclude`` (ORT ``nodes_to_exclude``; its inputs stay
            Q/DQ'd by quantized producers) or ``dequantize`` (rewired to float inputs; truly float).
        stability_resamples: Bootstrap resamples of the proxy images that measure the ranking's stability
            (0: none; needs at least 2 proxy images).
        seed: Seed of those resamples.
    """

    granularity: Granularity = Granularity.BLOCK
    proxy_images: int = 8
    top_k: int = 10
    cross_check: bool = True
    max_groups: int | None = None
    rank_by: str = "quantized"
    float_mode: str = "exclude"
    stability_resamples: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "granularity", Granularity(self.granularity))
        if self.stability_resamples < 0:
            msg = f"stability_resamples is >= 0 (0: no stability estimate), got {self.stability_resamples}"
            raise ConfigError(msg)
        if self.rank_by not in ("quantized", "float") or (self.rank_by == "float" and not self.cross_check):
            msg = f"rank_by is 'quantized' or 'float' (which needs cross_check=True), got {self.rank_by!r}"
            raise ConfigError(msg)
        if self.float_mode not in ("exclude", "dequantize"):
            msg = f"float_mode is 'exclude' or 'dequantize', got {self.float_mode!r}"
            raise ConfigError(msg)
        if self.proxy_images < 1 or self.top_k < 0 or (self.max_groups is not None and self.max_groups < 1):
            msg = (
                f"need proxy_images >= 1, top_k >= 0 and max_groups >= 1 or None, got "
                f"{self.proxy_images}, {self.top_k}, {self.max_groups}"
            )
            raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class GroupSensitivity:
    """How much INT8 in one group hurts.

    Attributes:
        group: The nodes.
        rank: 1 = most sensitive.
        sqnr_db / cosine: Per model output, with only this group INT8 (higher = less damage).
        float_sqnr_db / float_cosine: Per output, with only this group float (cross-check), or empty.
        map50_95: mAP50-95 with only this group INT8 (top-k only).
        float_map50_95: mAP50-95 with only this group float (top-k only).
        top_k_share: Fraction of proxy-image resamples in which the group ranks among the top k.
        rank_ci95: 2.5 and 97.5 percentiles of its rank over those resamples.
    """

    group: LayerGroup
    rank: int
    sqnr_db: tuple[float, ...]
    cosine: tuple[float, ...]
    float_sqnr_db: tuple[float, ...] = ()
    float_cosine: tuple[float, ...] = ()
    map50_95: float | None = None
    float_map50_95: float | None = None
    top_k_share: float | None = None
    rank_ci95: tuple[float, float] | None = None

    @property
    def score(self) -> float:
        """The worst output's SQNR with only this group INT8: the ranking key (lower = more sensitive)."""
        return min(self.sqnr_db)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "group": self.group.to_dict(),
            "score_sqnr_db": round(self.score, 3),
            "sqnr_db": [round(v, 3) for v in self.sqnr_db],
            "cosine": [round(v, 6) for v in self.cosine],
            "float_sqnr_db": [round(v, 3) for v in self.float_sqnr_db],
            "float_cosine": [round(v, 6) for v in self.float_cosine],
            "map50_95": self.map50_95,
            "float_map50_95": self.float_map50_95,
            "top_k_share": self.top_k_share,
            "rank_ci95": list(self.rank_ci95) if self.rank_ci95 is not None else None,
        }


@dataclass(frozen=True, kw_only=True)
class SensitivityReport:
    """Groups ranked by INT8 sensitivity, with the reference numbers they are read against.

    Attributes:
        groups: Most sensitive first.
        outputs: Model output names (the order of every per-output tuple).
        int8_sqnr_db / int8_cosine: The proxy for the whole model INT8 (every group quantized).
        fp32_map50_95 / int8_map50_95: mAP50-95 of the float and the fully quantized model (with eval data).
        seconds / proxy_seconds: Wall time of the whole analysis / of the proxy part alone.
        stability: The ranking's agreement across resamples of the proxy images
            (:meth:`~yoloquant.decide.stability.RankStability.to_dict`), None when not measured.
    """

    model: str
    config: SensitivityConfig
    quant_config: dict[str, Any]
    outputs: tuple[str, ...]
    groups: tuple[GroupSensitivity, ...]
    int8_sqnr_db: tuple[float, ...]
    int8_cosine: tuple[float, ...]
    fp32_map50_95: float | None = None
    int8_map50_95: float | None = None
    eval_images: int = 0
    seconds: float = 0.0
    proxy_seconds: float = 0.0
    stability: dict[str, Any] | None = None

    @classmethod
    def from_order(
        cls, model: OnnxModel, groups: Sequence[LayerGroup], quant_config: dict[str, Any]
    ) -> SensitivityReport:
        """A ranking given in advance, most sensitive first, instead of measured (the budget search then runs
        without the proxy); its proxy numbers are placeholders (0 dB SQNR, cosine 1)."""
        ranked = tuple(
            GroupSensitivity(group=g, rank=i + 1, sqnr_db=(0.0,), cosine=(1.0,)) for i, g in enumerate(groups)
        )
        return cls(model=str(model.path), config=SensitivityConfig(), quant_config=dict(quant_config), outputs=("out",),
                   groups=ranked, int8_sqnr_db=(0.0,), int8_cosine=(1.0,))  # fmt: skip

    def ranked_names(self) -> list[str]:
        return [g.group.name for g in self.groups]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "config": self.config.to_dict(),
            "quant_config": self.quant_config,
            "outputs": list(self.outputs),
            "int8_sqnr_db": [round(v, 3) for v in self.int8_sqnr_db],
            "int8_cosine": [round(v, 6) for v in self.int8_cosine],
            "fp32_map50_95": self.fp32_map50_95,
            "int8_map50_95": self.int8_map50_95,
            "eval_images": self.eval_images,
            "seconds": round(self.seconds, 2),
            "proxy_seconds": round(self.proxy_seconds, 2),
            "stability": self.stability,
            "groups": [g.to_dict() for g in self.groups],
        }

    def to_markdown(self, top: int | None = None) -> str:
        return render_sensitivity(self.to_dict(), top)

    def plot(self, path: Path, top: int = 30) -> None:
        """Bar chart of the proxy SQNR of the ``top`` most sensitive groups (PNG)."""
        shown = list(self.groups[:top])[::-1]
        fig, ax = new_figure((8, 0.28 * len(shown) + 1.2))
        ax.barh([g.group.name for g in shown], [g.score for g in shown], color="tab:red")
        if self.int8_sqnr_db:
            ax.axvline(min(self.int8_sqnr_db), color="k", ls="--", lw=1, label="whole model INT8")
            ax.legend(loc="lower right")
        ax.set_xlabel("SQNR of the output with only this group INT8 (dB, lower = more sensitive)")
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(f"INT8 sensitivity, {Path(self.model).name}")
        save_figure(fig, path)

    def save(self, out_dir: Path | str) -> tuple[Path, ...]:
        """Write ``sensitivity.json``, ``sensitivity.md`` and ``sensitivity.png`` atomically."""
        folder = Path(out_dir)
        paths = (folder / "sensitivity.png", folder / "sensitivity.md", folder / "sensitivity.json")
        self.plot(paths[0])
        atomic_write_text(paths[1], self.to_markdown())
        atomic_write_text(paths[2], json.dumps(self.to_dict(), indent=2) + "\n")
        return paths


def _output_names(model: OnnxModel, names: Sequence[str]) -> tuple[str, ...]:
    if model.info.head is HeadType.DFL and names:
        return (f"{names[0]}:boxes", f"{names[0]}:scores", *names[1:])
    return tuple(names)


def _map(model: OnnxModel, data: Dataset, eval_config: EvalConfig) -> float:
    return ModelEvaluator(data, eval_config)(model).primary  # the task's (mAP50-95 for detection)


def _others(shared: SharedCalibration, keep: Iterable[str]) -> list[str]:
    kept = set(keep)
    return [n for n in shared.quantizable if n not in kept]


def analyze_sensitivity(
    model: OnnxModel,
    calib: CalibrationSet,
    out_dir: Path | str,
    *,
    config: SensitivityConfig | None = None,
    quant: OrtQuantConfig | None = None,
    eval_data: Dataset | None = None,
    eval_config: EvalConfig | None = None,
    shared: SharedCalibration | None = None,
    save: bool = True,
    progress: bool = False,
    executor: Executor | None = None,
) -> SensitivityReport:
    """Rank the quantizable groups of ``model`` by how much INT8 in each alone hurts.

    Args:
        model: The float ONNX model (exported by yoloquant or Ultralytics).
        calib: Calibration images: all of them set the activation ranges (once); the first
            ``config.proxy_images`` also drive the proxy.
        out_dir: Where the work files and ``sensitivity.{json,md,png}`` go.
        config: Granularity, proxy size, top-k.
        quant: The ORT INT8 layout analyzed (default: :class:`OrtQuantConfig` defaults).
        eval_data: Labelled images for the top-k mAP; None skips mAP.
        eval_config: COCO eval settings (default: ``yolo val``'s).
        shared: An existing shared calibration of the same model, to reuse.
        save: Write the report files.
        progress: Show a bar over the groups (the SQNR phase, minutes on a CPU) and one over the top-k mAPs.
        executor: Where the per-group SQNR work runs (``RayExecutor()``: one task per group; the same ranking
            as here). ``out_dir`` must then be a folder every worker reads and writes at the same path (the
            groups' models are made there from the shared calibration ranges); None: in this process.

    Example:
        >>> report = analyze_sensitivity(model, calib, "runs/sens", eval_data=val)  # doctest: +SKIP
        >>> print(report.to_markdown(top=10))  # doctest: +SKIP
    """
    start = time.perf_counter()
    config = config or SensitivityConfig()
    out = Path(out_dir)
    shared = shared or SharedCalibration(model, calib, quant or OrtQuantConfig(), out / "work")
    groups = find_groups(shared.proto, shared.quantizable, config.granularity)[: config.max_groups]
    proxy = Proxy(model, calib.images[: config.proxy_images])
    work = out / "work"
    full = shared.build([], work / "int8.onnx", metadata=False)
    int8_sqnr, int8_cos = proxy.errors(full)
    tqdm = require("tqdm").tqdm
    bar = tqdm(total=len(groups), desc="sensitivity (SQNR per group)", unit="group", disable=not progress)
    measured = _measure_all(groups, shared, proxy, config, work, executor=executor, bar=bar)
    bar.close()
    if config.rank_by == "float":
        measured.sort(key=lambda m: (-min(m[2]), -min(m[3])))
    else:
        measured.sort(key=lambda m: (min(m[0]), min(m[1])))
    proxy_seconds = time.perf_counter() - start
    ranked = [
        GroupSensitivity(group=g, rank=i + 1, sqnr_db=s, cosine=c, float_sqnr_db=fs, float_cosine=fc)
        for i, (s, c, fs, fc, g, _) in enumerate(measured)
    ]
    ranked, stability = _stability(ranked, [m[5] for m in measured], proxy.signal, config)
    fp32_map = int8_map = None
    if eval_data is not None:
        ec = eval_config or EvalConfig()
        fp32_map, int8_map = _map(model, eval_data, ec), _map(full, eval_data, ec)
        ranked = _top_k_maps(ranked, config, shared=shared, data=eval_data, ec=ec, work=work, progress=progress)
    report = SensitivityReport(
        model=str(model.path),
        config=config,
        quant_config=shared.config.to_dict(),
        outputs=_output_names(model, [o.name for o in shared.proto.graph.output])[: len(int8_sqnr)],
        groups=tuple(ranked),
        int8_sqnr_db=int8_sqnr,
        int8_cosine=int8_cos,
        fp32_map50_95=fp32_map,
        int8_map50_95=int8_map,
        eval_images=len(eval_data) if eval_data is not None else 0,
        seconds=time.perf_counter() - start,
        proxy_seconds=proxy_seconds,
        stability=stability,
    )
    if save:
        report.save(out)
    return report


def _stability(
    ranked: list[GroupSensitivity], noise: list[np.ndarray], signal: np.ndarray, config: SensitivityConfig
) -> tuple[list[GroupSensitivity], dict[str, Any] | None]:
    """The groups with their top-k share and rank range over proxy-image resamples, and the summary."""
    import dataclasses

    if config.stability_resamples == 0 or signal.shape[1] < 2 or len(ranked) < 2:
        return ranked, None  # one image resamples to itself: no estimate rather than a false "stable"
    s = rank_stability(
        signal,
        np.stack(noise),
        top_k=config.top_k or 10,
        resamples=config.stability_resamples,
        seed=config.seed,
        descending=config.rank_by == "float",
    )
    out = [
        dataclasses.replace(g, top_k_share=float(share), rank_ci95=(float(lo), float(hi)))
        for g, share, (lo, hi) in zip(ranked, s.top_k_share, s.rank_ci95, strict=True)
    ]
    return out, s.to_dict()


_Measured = tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...], tuple[float, ...], LayerGroup, np.ndarray]


def _measure_all(
    groups: Sequence[LayerGroup],
    shared: SharedCalibration,
    proxy: Proxy,
    config: SensitivityConfig,
    work: Path,
    *,
    executor: Executor | None,
    bar: Any,
) -> list[_Measured]:
    """Every group's measurement, in ``groups`` order: here one after the other, or one task per group."""
    if executor is None:
        out = []
        for g in groups:
            out.append(_measure(g, shared, proxy, config, work))
            bar.update()
        return out
    if config.float_mode == "dequantize":
        shared._full_int8()  # made once, here, before the workers read it
    got: dict[int, _Measured] = {}
    job = partial(_measure_group, shared, proxy, config, work)
    for (i, g), outcome in closing_map(executor, job, list(enumerate(groups))):
        if isinstance(outcome, Exception):
            outcome.add_note(f"while measuring the sensitivity of group {g.name}")
            raise outcome
        got[i] = outcome
        bar.update()
    return [got[i] for i in range(len(groups))]


def _measure_group(
    shared: SharedCalibration, proxy: Proxy, config: SensitivityConfig, work: Path, job: tuple[int, LayerGroup]
) -> _Measured:
    """One group's measurement as an executor task: its models in a folder of its own, removed after."""
    i, group = job
    folder = work / f"group-{i:04d}"
    try:
        return _measure(group, shared.in_folder(folder), proxy, config, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _measure(
    group: LayerGroup, shared: SharedCalibration, proxy: Proxy, config: SensitivityConfig, work: Path
) -> _Measured:
    mode = config.float_mode
    only = shared.build(_others(shared, group.nodes), work / "only-int8.onnx", metadata=False, float_mode=mode)
    sqnr, cos, noise = proxy.errors_and_noise(only)
    fsqnr: tuple[float, ...] = ()
    fcos: tuple[float, ...] = ()
    if config.cross_check:
        kept = shared.build(group.nodes, work / "only-float.onnx", metadata=False, float_mode=mode)
        fsqnr, fcos, fnoise = proxy.errors_and_noise(kept)
        noise = fnoise if config.rank_by == "float" else noise  # the noise of the model the ranking reads
    log.info("group %s: SQNR only-int8 %.2f dB", group.name, min(sqnr))
    return sqnr, cos, fsqnr, fcos, group, noise


def _top_k_maps(
    ranked: Sequence[GroupSensitivity],
    config: SensitivityConfig,
    *,
    shared: SharedCalibration,
    data: Dataset,
    ec: EvalConfig,
    work: Path,
    progress: bool = False,
) -> list[GroupSensitivity]:
    import dataclasses

    out = list(ranked)
    mode = config.float_mode
    tqdm = require("tqdm").tqdm
    top = tqdm(
        out[: config.top_k], desc=f"sensitivity (mAP of the top {config.top_k})", unit="group", disable=not progress
    )
    for i, g in enumerate(top):
        only = shared.build(_others(shared, g.group.nodes), work / "only-int8.onnx", metadata=False, float_mode=mode)
        kept = shared.build(g.group.nodes, work / "only-float.onnx", metadata=False, float_mode=mode)
        out[i] = dataclasses.replace(g, map50_95=_map(only, data, ec), float_map50_95=_map(kept, data, ec))
    return out


def sensitivity_section(
    model: OnnxModel,
    calib: CalibrationSet,
    out_dir: Path,
    *,
    config: SensitivityConfig,
    quant: OrtQuantConfig | None,
    eval_data: Dataset | None,
    eval_config: EvalConfig | None,
    progress: bool = False,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """The pipeline's sensitivity stage: ``report.json``'s ``sensitivity`` section.

    Analyzes ``model`` (see :func:`analyze_sensitivity`), writes ``sensitivity.{json,md,png}`` into
    ``out_dir`` and returns the report's dict plus the ``files`` written; ``executor``: where the groups are
    measured (see :func:`analyze_sensitivity`).
    """
    report = analyze_sensitivity(
        model,
        calib,
        out_dir,
        config=config,
        quant=quant,
        eval_data=eval_data,
        eval_config=eval_config,
        save=False,
        progress=progress,
        executor=executor,
    )
    files = report.save(out_dir)
    return {**report.to_dict(), "files": [str(f) for f in files]}
