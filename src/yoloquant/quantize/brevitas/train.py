"""A short quantization-aware fine-tune of an Ultralytics detector with its own detection loss.

The model trains as Ultralytics trains it (``v8DetectionLoss`` with the default box / cls / dfl gains,
the head in training mode, DFL frozen, gradients clipped at norm 10), on letterboxed labeled images
without augmentation beyond an optional horizontal flip. Brevitas quant layers train through their
straight-through estimators. Unfold the BatchNorms first (:func:`~.unfold.unfold_batchnorm`) so that
BN scale and shift train in float.

Example:
    >>> stats = finetune(unfold_batchnorm(model), load_dataset("coco128.yaml"), QatConfig(steps=200))  # doctest: +SKIP
    >>> stats.loss[-1] < stats.loss[0]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from yoloquant._optional import require
from yoloquant.config import _Serializable, parse_enum
from yoloquant.data.datasets import Dataset
from yoloquant.data.images import read_image
from yoloquant.data.labels import GroundTruth
from yoloquant.data.letterbox import preprocess
from yoloquant.errors import ConfigError, DataError, QuantizationError
from yoloquant.quantize.brevitas.augment import augmented_batches, write_yolo_layout

__all__ = ["Optimizer", "QatConfig", "QatStats", "Trainable", "finetune"]

_DEVICE = re.compile(r"cpu|cuda(:\d+)?")
_MAX_GRAD_NORM = 10.0  # Ultralytics' trainer clips here too
_BN_STATS_IMAGES = 32  # images measured to re-estimate BatchNorm statistics when they train


class Trainable(StrEnum):
    """Which parameters the fine-tune updates."""

    ALL = "all"  # conv weights and biases, BatchNorm scale and shift
    NORM = "norm"  # BatchNorm scale and shift and the head's biases: per-channel, few parameters to overfit


class Optimizer(StrEnum):
    """The optimizer of the fine-tune."""

    ADAMW = "adamw"
    SGD = "sgd"  # momentum 0.9, Nesterov


@dataclass(frozen=True, kw_only=True)
class QatConfig(_Serializable):
    """Options of :func:`finetune`.

    Attributes:
        steps: Optimizer steps.
        batch_size: Images per step (drawn without replacement, reshuffled each pass over the data).
        lr: Peak learning rate; it decays to ``lr / 100`` on a cosine.
        imgsz: Square training input size (a multiple of 32).
        optimizer: ``adamw`` or ``sgd``.
        freeze_bn_stats: Keep BatchNorm statistics fixed (BN in eval mode, its affine parameters still
            train). False re-estimates them on the first images, then BN normalizes with batch statistics.
        augment: Ultralytics' training augmentation (mosaic, random affine, HSV, flips, the ``yolo train``
            defaults) instead of plain letterboxed images (:mod:`~yoloquant.quantize.brevitas.augment`).
        hflip: Without ``augment``: flip each image horizontally with probability 0.5.
        distill: Weight of a distillation loss from ``teacher`` (the float model): the student's class
            logits against the teacher's class probabilities (BCE) and its box distributions against the
            teacher's (KL), added to the detection loss. 0 turns it off. It regularizes a fine-tune on few images.
        trainable: ``all`` parameters, or ``norm``: only per-channel ones, the BatchNorms' scale and shift
            and the biases of convs without one (unfold first). Weights keep their integer values.
        labels: Train on the detection loss against the labels; False trains on the distillation loss alone
            (needs ``distill`` > 0; the detection loss is still logged).
        learn_scales: Also train Brevitas' quantization scales (off: they keep their calibrated values;
            measured: on at lr 1e-4 made W4A8 worse than PTQ alone).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        seed: Seeds the image order and flips.

    Example:
        >>> QatConfig(steps=50, lr=5e-5).optimizer
        <Optimizer.ADAMW: 'adamw'>
    """

    steps: int = 200
    batch_size: int = 8
    lr: float = 3e-5  # measured best for W4A8 on 64 images (docs/brevitas.md); 1e-4 did worse than PTQ
    imgsz: int = 640
    optimizer: Optimizer = Optimizer.ADAMW
    freeze_bn_stats: bool = True
    augment: bool = False
    hflip: bool = True
    trainable: Trainable = Trainable.ALL
    learn_scales: bool = False
    distill: float = 0.0
    labels: bool = True
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            msg = f"steps and batch_size must be >= 1, got steps={self.steps}, batch_size={self.batch_size}"
            raise ConfigError(msg)
        if not (math.isfinite(self.lr) and self.lr > 0):
            msg = f"lr must be a positive finite number, got {self.lr!r}"
            raise ConfigError(msg)
        if self.imgsz <= 0 or self.imgsz % 32:
            msg = f"imgsz must be a positive multiple of 32 (the YOLO stride), got {self.imgsz}"
            raise ConfigError(msg)
        if not (math.isfinite(self.distill) and self.distill >= 0):
            msg = f"distill must be a finite weight >= 0, got {self.distill!r}"
            raise ConfigError(msg)
        if not self.labels and self.distill <= 0:
            msg = "QatConfig(labels=False) trains on distillation alone: set distill > 0 (e.g. distill=1)"
            raise ConfigError(msg)
        if not _DEVICE.fullmatch(self.device):
            msg = f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            raise ConfigError(msg)
        object.__setattr__(self, "optimizer", parse_enum(Optimizer, self.optimizer, option="optimizer"))
        object.__setattr__(self, "trainable", parse_enum(Trainable, self.trainable, option="trainable"))


@dataclass(frozen=True)
class QatStats:
    """What a fine-tune did.

    Attributes:
        steps: Optimizer steps taken.
        images: Images seen (steps x batch size).
        seconds: Wall time of the training loop.
        device: Where it ran.
        losses: Per-step loss components by the criterion's names (``box_loss``, ``cls_loss``,
            ``dfl_loss``), gains applied, averaged over the batch.
    """

    steps: int
    images: int
    seconds: float
    device: str
    losses: dict[str, tuple[float, ...]]

    @property
    def loss(self) -> tuple[float, ...]:
        """The total loss of each step (sum of the components)."""
        return tuple(sum(parts) for parts in zip(*self.losses.values(), strict=True))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return {
            "steps": self.steps,
            "images": self.images,
            "seconds": self.seconds,
            "device": self.device,
            "losses": {k: list(v) for k, v in self.losses.items()},
        }

    def __repr__(self) -> str:
        first, last = (f"{self.loss[i]:.3f}" if self.loss else "-" for i in (0, -1))
        return (
            f"QatStats(steps={self.steps}, images={self.images}, seconds={self.seconds:.1f}, "
            f"device={self.device!r}, loss {first} -> {last})"
        )


def finetune(
    model: Any, data: Dataset, config: QatConfig | None = None, *, teacher: Any = None, progress: bool = True
) -> QatStats:
    """Fine-tune ``model`` in place on labeled images with the Ultralytics detection loss.

    Args:
        model: An Ultralytics ``DetectionModel`` (float or with Brevitas quant layers), best unfolded
            with :func:`~yoloquant.quantize.brevitas.unfold.unfold_batchnorm`.
        data: A labeled dataset (:func:`~yoloquant.data.load_dataset` of a yaml or an image folder
            with a ``labels/`` sibling).
        config: The options; :class:`QatConfig` defaults when None.
        teacher: The float model to distill from (needed when ``config.distill`` > 0).
        progress: Show a tqdm bar with the running loss.

    Returns:
        The step count, time and loss history. The model ends in eval mode, on the device it came
        from, with its parameters' ``requires_grad`` flags as they were.

    Raises:
        DataError: If ``data`` has no labels or a class id the model does not have.
        ConfigError: If ``device`` names a GPU this machine does not have.
        QuantizationError: If the loss stops being finite (lower ``lr``).

    Example:
        >>> qat = unfold_batchnorm(load_detector(Path("yolov8n.pt")))  # doctest: +SKIP
        >>> finetune(qat, load_dataset("assets/coco64.yaml"), QatConfig(steps=100))  # doctest: +SKIP
        QatStats(steps=100, images=800, seconds=..., device='cpu', loss ... -> ...)
    """
    cfg = config or QatConfig()
    if cfg.distill > 0 and teacher is None:
        msg = f"QatConfig(distill={cfg.distill}) needs teacher=<the float model>; pass it or set distill=0"
        raise ConfigError(msg)
    labels = _check_labels(data, int(model.model[-1].nc))
    device = _device(cfg.device)
    with ExitStack() as stack:
        batches = _augmented(stack, model, data, labels, cfg) if cfg.augment else _batches(data, labels, cfg)
        seconds, losses = _run(
            model, batches, cfg, progress=progress, teacher=teacher, device=device, num_images=len(data)
        )
    return QatStats(
        steps=cfg.steps, images=cfg.steps * cfg.batch_size, seconds=seconds, device=str(device), losses=losses
    )


def _augmented(
    stack: ExitStack, model: Any, data: Dataset, labels: tuple[GroundTruth, ...], cfg: QatConfig
) -> Iterator[dict[str, Any]]:
    """Ultralytics-augmented batches from a scratch layout that ``stack`` removes after the loader stops."""
    layout = write_yolo_layout(data, labels, Path(stack.enter_context(tempfile.TemporaryDirectory())))
    names = dict(getattr(model, "names", None) or data.names or {})
    workers = 0 if _device(cfg.device).type == "cpu" else min(4, (os.cpu_count() or 1) - 1)
    batches = augmented_batches(
        layout, names, imgsz=cfg.imgsz, batch_size=cfg.batch_size, seed=cfg.seed, workers=workers
    )
    stack.callback(batches.close)  # workers stop before the scratch folder goes
    return batches


def _run(
    model: Any,
    batches: Iterator[dict[str, Any]],
    cfg: QatConfig,
    *,
    progress: bool,
    teacher: Any,
    device: Any,
    num_images: int,
) -> tuple[float, dict[str, tuple[float, ...]]]:
    """Train; the model ends in eval mode on its own device with its requires_grad flags restored."""
    home = next(model.parameters()).device
    flags = {p: p.requires_grad for p in model.parameters()}
    model.to(device)
    try:
        if not cfg.freeze_bn_stats:
            _reestimate_bn_stats(model, batches, math.ceil(min(num_images, _BN_STATS_IMAGES) / cfg.batch_size))
        start = time.perf_counter()
        losses = _train(model, batches, cfg, progress, teacher.to(device).eval() if cfg.distill > 0 else None)
        return time.perf_counter() - start, losses
    finally:
        model.eval().to(home)
        for param, flag in flags.items():
            param.requires_grad_(flag)


def _check_labels(data: Dataset, num_classes: int) -> tuple[GroundTruth, ...]:
    name = data.source or "the dataset"
    if data.labels is None:
        msg = (
            f"QAT needs labeled images, but {name} has no labels; pass a dataset yaml, or an image folder "
            "with a sibling labels/ folder of YOLO .txt files, to load_dataset(..., labels=True)"
        )
        raise DataError(msg)
    top = max((int(gt.classes.max()) for gt in data.labels if len(gt)), default=-1)
    if top >= num_classes:
        msg = f"{name} has class id {top}, but the model has {num_classes} classes; fix the labels or the model"
        raise DataError(msg)
    return data.labels


def _device(spec: str) -> Any:
    torch = require("torch")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        msg = f"device {spec!r} asked for, but PyTorch sees no CUDA GPU; use device='cpu'"
        raise ConfigError(msg)
    return device


def _criterion(model: Any) -> Any:
    """The model's own loss, with Ultralytics' default hyperparameters under the checkpoint's own."""
    utils = require("ultralytics.utils")
    saved = getattr(model, "args", None)
    own = saved if isinstance(saved, dict) else vars(saved) if saved is not None else {}
    model.args = utils.IterableSimpleNamespace(**(utils.DEFAULT_CFG_DICT | own))
    try:
        return model.init_criterion()
    finally:
        model.args = saved


def _set_train_mode(model: Any, freeze_bn_stats: bool) -> None:
    nn = require("torch.nn")
    model.train()
    if freeze_bn_stats:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _trainable(model: Any, learn_scales: bool, trainable: Trainable) -> list[Any]:
    """Weights, biases and BatchNorm affines; the DFL projection stays fixed (Ultralytics freezes it too).

    Brevitas' learned quantization scales (``*_quant.*scaling_impl.value``) train only with ``learn_scales``:
    an optimizer step of ``lr`` is a large relative change of a scale of ~1e-3, which undoes the calibration.
    """
    nn = require("torch.nn")
    norms = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    if trainable is Trainable.NORM and not norms:
        msg = "QatConfig(trainable='norm') trains BatchNorms, but the model has none: unfold_batchnorm(model) first"
        raise ConfigError(msg)
    params = []
    for name, param in model.named_parameters():
        frozen = ".dfl" in name or (not learn_scales and "_quant." in name)
        affine = id(param) in norms or name.endswith(".bias") or "_quant." in name
        if frozen or (trainable is Trainable.NORM and not affine):
            param.requires_grad_(False)
        else:
            params.append(param)
    for param in params:
        param.requires_grad_(True)
    return params


def _optimizer(params: list[Any], cfg: QatConfig) -> tuple[Any, Any]:
    optim = require("torch.optim")
    if cfg.optimizer is Optimizer.SGD:
        opt = optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True)
    else:
        opt = optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    return opt, optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.lr / 100)


def _train(
    model: Any, batches: Iterator[dict[str, Any]], cfg: QatConfig, progress: bool, teacher: Any
) -> dict[str, tuple[float, ...]]:
    torch = require("torch")
    tqdm = require("tqdm").tqdm
    device = next(model.parameters()).device
    criterion = _criterion(model)
    params = _trainable(model, cfg.learn_scales, cfg.trainable)
    opt, schedule = _optimizer(params, cfg)
    _set_train_mode(model, cfg.freeze_bn_stats)
    history: dict[str, list[float]] = {}
    with tqdm(total=cfg.steps, desc="QAT", unit="step", disable=not progress, leave=False) as bar:
        for step in range(cfg.steps):
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
            preds = model(batch["img"])
            loss, items = criterion(preds, batch)
            if teacher is not None:
                kd = _distill_loss(preds, teacher, batch["img"]) * cfg.distill
                labeled = loss.sum() if cfg.labels else 0.0  # without labels: logged, not trained on
                loss, items = labeled + kd * len(batch["img"]), {**items, "kd_loss": kd.detach()}
            if not torch.isfinite(loss).all():
                msg = f"QAT loss became {loss.tolist()} at step {step}; lower lr (got {cfg.lr})"
                raise QuantizationError(msg)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            torch.nn.utils.clip_grad_norm_(params, _MAX_GRAD_NORM)
            opt.step()
            schedule.step()
            for name, value in items.items():
                history.setdefault(name, []).append(float(value))
            bar.set_postfix(loss=f"{sum(v[-1] for v in history.values()):.3f}")
            bar.update()
    return {name: tuple(values) for name, values in history.items()}


def _distill_loss(preds: Any, teacher: Any, images: Any) -> Any:
    """BCE of the student's class logits against the teacher's probabilities + KL of the box distributions."""
    torch = require("torch")
    functional = require("torch.nn.functional")
    with torch.no_grad():
        target = teacher(images)[1]
    cls = functional.binary_cross_entropy_with_logits(preds["scores"], target["scores"].sigmoid())
    b, channels, anchors = preds["boxes"].shape
    student = preds["boxes"].view(b, 4, channels // 4, anchors).log_softmax(2)
    reference = target["boxes"].view(b, 4, channels // 4, anchors).log_softmax(2)
    box = functional.kl_div(student, reference, log_target=True, reduction="none").sum(2).mean()
    return cls + box


def _reestimate_bn_stats(model: Any, batches: Iterator[dict[str, Any]], num_batches: int) -> None:
    """Give each BatchNorm the statistics of its input, keeping the eval-mode function.

    A folded checkpoint lost them (unfolding writes identity statistics), and BN in training mode
    normalizes with batch statistics: without this the first step would rescale every layer.
    The inputs are measured in eval mode, where every layer still computes the pretrained function.
    """
    torch = require("torch")
    nn = require("torch.nn")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    sums: dict[Any, list[Any]] = {bn: [0, 0, 0] for bn in norms}

    def record(bn: Any, inputs: tuple[Any, ...]) -> None:
        x = inputs[0].detach().double()
        acc = sums[bn]
        acc[0], acc[1], acc[2] = acc[0] + x.sum((0, 2, 3)), acc[1] + (x * x).sum((0, 2, 3)), acc[2] + x[:, 0].numel()

    handles = [bn.register_forward_pre_hook(record) for bn in norms]
    device = next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad():
            for _ in range(num_batches):
                model(next(batches)["img"].to(device))
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        for bn, (total, squares, count) in sums.items():
            mean = total / count
            _restat(bn, mean, squares / count - mean * mean)


def _restat(bn: Any, mean: Any, var: Any) -> None:
    """New running statistics, with weight and bias changed so that eval-mode outputs stay the same."""
    torch = require("torch")
    mean, var = mean.to(bn.running_mean), var.clamp(min=0).to(bn.running_var)
    old = torch.sqrt(bn.running_var + bn.eps)
    bn.bias.add_(bn.weight * (mean - bn.running_mean) / old)
    bn.weight.mul_(torch.sqrt(var + bn.eps) / old)
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)


def _batches(data: Dataset, labels: tuple[GroundTruth, ...], cfg: QatConfig) -> Iterator[dict[str, Any]]:
    """Endless batches in Ultralytics' training format: ``img`` float [0, 1], ``batch_idx``, ``cls``, ``bboxes``."""
    rng = np.random.default_rng(cfg.seed)
    pool: list[int] = []
    while True:
        while len(pool) < cfg.batch_size:
            pool += rng.permutation(len(data)).tolist()
        picked, pool = pool[: cfg.batch_size], pool[cfg.batch_size :]
        flips = rng.random(cfg.batch_size) < 0.5 if cfg.hflip else np.zeros(cfg.batch_size, bool)
        items = [_item(data.images[i], labels[i], cfg.imgsz, flip=bool(f)) for i, f in zip(picked, flips, strict=True)]
        yield _collate(items)


def _item(path: Any, gt: GroundTruth, imgsz: int, *, flip: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One letterboxed RGB CHW image, its classes, and its boxes as normalized xywh in the letterboxed frame."""
    image, meta = preprocess(read_image(path), imgsz)
    (gain_y, gain_x), (left, top) = meta.gain, meta.pad
    gain = np.asarray([gain_x, gain_y, gain_x, gain_y], np.float32)
    xyxy = gt.boxes * gain + np.asarray([left, top, left, top], np.float32)
    x1y1, x2y2 = np.split(xyxy.clip(0, imgsz) / imgsz, 2, axis=1)
    xywh = np.concatenate([(x1y1 + x2y2) / 2, x2y2 - x1y1], axis=1)
    keep = (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
    classes, xywh = gt.classes[keep], xywh[keep]
    if flip:
        image = image[:, :, ::-1]
        xywh[:, 0] = 1 - xywh[:, 0]
    return image, classes, xywh


def _collate(items: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    torch = require("torch")
    images = np.stack([image for image, _, _ in items])
    index = np.concatenate([np.full(len(cls), i, np.float32) for i, (_, cls, _) in enumerate(items)])
    return {
        "img": torch.from_numpy(images).float() / 255,
        "batch_idx": torch.from_numpy(index),
        "cls": torch.from_numpy(np.concatenate([cls for _, cls, _ in items]).astype(np.float32)[:, None]),
        "bboxes": torch.from_numpy(np.concatenate([box for _, _, box in items]).astype(np.float32)),
    }
