"""QAT fine-tune of the real YOLOv8n on the bundled coco64 images (CPU, a few steps at imgsz 320)."""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yoloquant.data import Dataset, GroundTruth, load_dataset
from yoloquant.errors import ConfigError, DataError
from yoloquant.quantize.brevitas.train import QatConfig, _batches, _item, _reestimate_bn_stats, finetune
from yoloquant.quantize.brevitas.unfold import unfold_batchnorm

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")

FAST = {"batch_size": 2, "imgsz": 320}


@pytest.fixture(scope="module")
def fused(yolov8n_pt: Path) -> Any:
    from ultralytics import YOLO

    return YOLO(str(yolov8n_pt)).model.float().eval()


@pytest.fixture
def model(fused: Any) -> Any:
    return unfold_batchnorm(fused)


@pytest.fixture(scope="module")
def coco64(coco64_yaml: Path) -> Dataset:
    return load_dataset(coco64_yaml)


def _params(model: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_items_match_ultralytics_dataset(tmp_path: Path, coco64_images: Path) -> None:
    """Letterboxed pixels and normalized xywh boxes equal Ultralytics' own YOLODataset (augment=False)."""
    from ultralytics.data.dataset import YOLODataset

    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    for image in sorted(coco64_images.glob("*.jpg"))[:6]:
        shutil.copy(image, tmp_path / "images")
        shutil.copy(coco64_images.parent / "labels" / f"{image.stem}.txt", tmp_path / "labels")
    names = {i: str(i) for i in range(80)}
    ref = YOLODataset(img_path=str(tmp_path / "images"), imgsz=320, augment=False, data={"names": names, "channels": 3})
    ours = load_dataset(tmp_path / "images")
    assert ours.labels is not None
    for i, (path, gt) in enumerate(zip(ours.images, ours.labels, strict=True)):
        expected = ref[i]
        assert Path(expected["im_file"]).name == path.name
        image, classes, boxes = _item(path, gt, 320, flip=False)
        assert np.array_equal(image, expected["img"].numpy())
        ref_boxes, ref_cls = expected["bboxes"].numpy(), expected["cls"].numpy().ravel()
        a, b = np.lexsort(boxes.T), np.lexsort(ref_boxes.T)
        np.testing.assert_allclose(boxes[a], ref_boxes[b], atol=1e-6)
        assert np.array_equal(classes[a], ref_cls[b])
        flipped, _, flipped_boxes = _item(path, gt, 320, flip=True)
        assert np.array_equal(flipped, image[:, :, ::-1])
        np.testing.assert_allclose(flipped_boxes[:, 0], 1 - boxes[:, 0], atol=1e-6)


def test_finetune_steps_and_restores_the_model(model: Any, coco64: Dataset) -> None:
    before = _params(model)
    flags = [p.requires_grad for p in model.parameters()]
    bn_stats = [m.running_var.clone() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats = finetune(model, coco64, QatConfig(steps=3, **FAST), progress=False)

    assert (stats.steps, stats.images, stats.device) == (3, 6, "cpu")
    assert set(stats.losses) == {"box_loss", "cls_loss", "dfl_loss"}
    assert all(len(v) == 3 and np.isfinite(v).all() for v in stats.losses.values())
    assert 1.0 < stats.loss[0] < 6.0  # a pretrained detector on COCO images (Ultralytics' val: ~3)
    after = _params(model)
    frozen = {k for k in before if torch.equal(before[k], after[k])}
    assert frozen == {"model.22.dfl.conv.weight"}
    running = [m.running_var for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(bn_stats, running, strict=True)), "BN statistics moved"
    assert not model.training
    assert [p.requires_grad for p in model.parameters()] == flags


def test_finetune_is_deterministic(fused: Any, coco64: Dataset) -> None:
    runs = []
    for _ in range(2):
        model = unfold_batchnorm(fused)
        stats = finetune(model, coco64, QatConfig(steps=2, seed=3, **FAST), progress=False)
        runs.append((stats.losses, _params(model)))
    (losses_a, params_a), (losses_b, params_b) = runs
    assert losses_a == losses_b
    assert all(torch.equal(params_a[k], params_b[k]) for k in params_a)


def test_overfitting_one_batch_lowers_its_loss(model: Any, coco64: Dataset) -> None:
    config = QatConfig(steps=12, lr=3e-4, hflip=False, **FAST)
    stats = finetune(model, coco64.select(2), config, progress=False)
    assert stats.loss[-1] < 0.6 * stats.loss[0], stats.loss


def test_trainable_bn_statistics_are_reestimated_first(model: Any, coco64: Dataset) -> None:
    """BN gets its input's statistics (eval outputs unchanged), so batch statistics normalize like it did."""
    batch = next(_batches(coco64, coco64.labels or (), QatConfig(**FAST)))["img"]
    with torch.no_grad():
        before = model(batch)[0]
        _reestimate_bn_stats(model, iter([{"img": batch}]), 1)
        after = model(batch)[0]
        model.train()
        train_mode = model(batch)  # the raw head maps: compare with eval mode's
        model.eval()
        eval_mode = model(batch)[1]
    assert (before - after).abs().max() <= 1e-5 * before.abs().max()
    for key in ("boxes", "scores"):
        # measured 8e-4 (0.9 without the re-estimation)
        assert (train_mode[key] - eval_mode[key]).abs().max() <= 5e-3 * eval_mode[key].abs().max()
    stats = finetune(model, coco64, QatConfig(steps=2, freeze_bn_stats=False, **FAST), progress=False)
    assert np.isfinite(stats.loss).all()


def test_brevitas_w8a8_model_trains_through_ste(fused: Any, coco64: Dataset) -> None:
    qnn = pytest.importorskip("brevitas.nn")
    quant = pytest.importorskip("brevitas.quant")
    calibrate = pytest.importorskip("brevitas.graph.calibrate")
    from ultralytics.nn.modules import Conv

    model = unfold_batchnorm(fused)
    for block in (m for m in model.modules() if isinstance(m, Conv)):
        c = block.conv
        q = qnn.QuantConv2d(
            c.in_channels, c.out_channels, c.kernel_size, stride=c.stride, padding=c.padding, groups=c.groups,
            bias=False, weight_quant=quant.Int8WeightPerChannelFloat, input_quant=quant.Int8ActPerTensorFloat,
            return_quant_tensor=False,
        )  # fmt: skip
        q.weight.data.copy_(c.weight.data)
        block.conv = q
    config = QatConfig(steps=3, **FAST)
    with torch.no_grad(), calibrate.calibration_mode(model):
        model(next(_batches(coco64, coco64.labels or (), config))["img"])
    start = _params(model)
    stats = finetune(model, coco64, config, progress=False)
    assert np.isfinite(stats.loss).all()
    frozen_scales = _params(model)
    changed = {k for k in start if not torch.equal(start[k], frozen_scales[k])}
    assert {k for k in start if k.endswith("conv.weight") and ".dfl." not in k} <= changed
    assert not any("_quant." in k for k in changed), "calibrated scales moved without learn_scales"
    finetune(model, coco64, dataclasses.replace(config, learn_scales=True), progress=False)
    learned = _params(model)
    assert any("input_quant" in k for k in start if not torch.equal(frozen_scales[k], learned[k])), "no scale gradient"


def test_unlabeled_data_is_refused(model: Any, coco64_images: Path) -> None:
    data = load_dataset(coco64_images, labels=False)
    with pytest.raises(DataError, match=rf"{coco64_images} has no labels.*labels/"):
        finetune(model, data, QatConfig(steps=1, **FAST), progress=False)


def test_class_ids_beyond_the_model_are_refused(model: Any, coco64_images: Path) -> None:
    gt = GroundTruth(boxes=np.zeros((1, 4), np.float32), classes=np.array([80]), shape=(480, 640))
    data = Dataset(images=(coco64_images / "000000000009.jpg",), labels=(gt,), source="toy")
    with pytest.raises(DataError, match="class id 80, but the model has 80 classes"):
        finetune(model, data, QatConfig(steps=1, **FAST), progress=False)


# --- Ultralytics augmentation and norm-only training ---------------------------------------------


def test_yolo_layout_reproduces_the_label_files(tmp_path: Path, coco64: Dataset, coco64_images: Path) -> None:
    from yoloquant.quantize.brevitas.augment import write_yolo_layout

    images = write_yolo_layout(coco64.select(5), (coco64.labels or ())[:5], tmp_path / "layout")
    for i, original in enumerate(coco64.images[:5]):
        assert (images / f"{i:06d}.jpg").resolve() == original.resolve()
        ours = np.loadtxt(tmp_path / "layout" / "labels" / f"{i:06d}.txt", ndmin=2)
        theirs = np.loadtxt(coco64_images.parent / "labels" / f"{original.stem}.txt", ndmin=2)
        ours, theirs = (rows[np.lexsort(np.round(rows, 4).T[::-1])] for rows in (ours, theirs))
        np.testing.assert_allclose(ours, theirs, atol=2e-6)  # same class ids, same normalized xywh


def test_augmented_batches_are_mosaics_in_the_loss_format(tmp_path: Path, coco64: Dataset) -> None:
    from yoloquant.quantize.brevitas.augment import augmented_batches, write_yolo_layout

    images = write_yolo_layout(coco64, coco64.labels or (), tmp_path / "layout")
    names = {i: str(i) for i in range(80)}
    first = [next(augmented_batches(images, names, imgsz=320, batch_size=4, seed=1, workers=0)) for _ in range(2)]
    batch = first[0]
    assert set(batch) == {"img", "batch_idx", "cls", "bboxes"}
    assert batch["img"].shape == (4, 3, 320, 320) and batch["img"].dtype == torch.float32
    assert float(batch["img"].min()) >= 0.0 and float(batch["img"].max()) <= 1.0
    assert len(batch["cls"]) == len(batch["bboxes"]) == len(batch["batch_idx"]) > 4  # mosaics of 4 images
    assert float(batch["bboxes"].min()) >= 0.0 and float(batch["bboxes"].max()) <= 1.0
    assert all(torch.equal(batch[k], first[1][k]) for k in batch)  # seeded: the same batches again
    plain = next(_batches(coco64, coco64.labels or (), QatConfig(**FAST)))["img"]
    assert not torch.equal(batch["img"], plain[:4])


def test_augmented_norm_only_finetune_keeps_the_conv_weights(model: Any, coco64: Dataset) -> None:
    before = _params(model)
    stats = finetune(model, coco64, QatConfig(steps=2, augment=True, trainable="norm", **FAST), progress=False)
    assert np.isfinite(stats.loss).all() and stats.images == 4
    after = _params(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".bn." in k or k.endswith(".bias") for k in changed), changed
    assert any(".bn." in k for k in changed) and "model.22.cv3.0.2.bias" in changed


def test_norm_only_needs_batchnorms(fused: Any, coco64: Dataset) -> None:
    with pytest.raises(ConfigError, match="unfold_batchnorm"):
        finetune(copy.deepcopy(fused), coco64, QatConfig(steps=1, trainable="norm", **FAST), progress=False)


def test_distillation_alone_trains_on_the_teacher_only(fused: Any, coco64: Dataset) -> None:
    """A teacher identical to the student gives (float-rounding) zero gradients without labels; labels do not."""
    moved = []
    for labels in (False, True):
        model = unfold_batchnorm(fused)
        before = _params(model)
        config = QatConfig(steps=2, distill=1.0, labels=labels, optimizer="sgd", lr=1e-3, **FAST)
        stats = finetune(model, coco64, config, teacher=copy.deepcopy(model), progress=False)
        assert "kd_loss" in stats.losses and "box_loss" in stats.losses  # the detection loss is still logged
        after = _params(model)
        moved.append(max(float((before[k] - after[k]).abs().max()) for k in before))
    assert moved[0] < 1e-4 * moved[1], moved
