"""AdaRound block reconstruction on the real YOLOv8n (CPU, 4 coco64 images at 320, a few steps per block)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from yoloquant.quantize.brevitas import BrevitasConfig

torch = pytest.importorskip("torch")
pytest.importorskip("brevitas")

from yoloquant.quantize.brevitas import adaround, ptq  # noqa: E402  (needs torch)


@pytest.fixture(scope="module")
def images(coco64_images: Path) -> list[Any]:
    from yoloquant.artifacts import ModelInfo
    from yoloquant.data.calibration import ImageCalibrator

    info = ModelInfo(names={})
    batch = ImageCalibrator(source=coco64_images, num_images=4, progress=False).calibrate(info).batches(4)[0]
    return [torch.nn.functional.interpolate(torch.from_numpy(batch), size=(320, 320), mode="bilinear")]


def _quantized(pt: Path, images: list[Any], rounding: str) -> tuple[Any, Any]:
    config = BrevitasConfig.w4a16(rounding=rounding, protect="none", rounding_iters=40)
    reference = ptq.load_detector(pt)
    model = copy.deepcopy(reference)
    ptq.quantize_convs(model, config)
    ptq.calibrate(model, images, config, reference=reference, progress=False)
    return model, reference


def _quant_convs(model: Any) -> dict[str, Any]:
    from brevitas.nn import QuantConv2d

    return {name: m for name, m in model.named_modules() if isinstance(m, QuantConv2d)}


def test_units_hold_every_conv_once(yolov8n_pt: Path) -> None:
    model = ptq.load_detector(yolov8n_pt)
    seen = [id(m) for _, unit in adaround.units(model) for m in unit.modules() if isinstance(m, torch.nn.Conv2d)]
    convs = {id(m) for m in model.modules() if isinstance(m, torch.nn.Conv2d)} - {id(model.model[-1].dfl.conv)}
    assert len(seen) == len(set(seen)) and set(seen) == convs


@pytest.mark.slow  # ~35 s on 2 cores: `make test-all`
def test_learned_rounding_rounds_up_or_down_and_beats_nearest(yolov8n_pt: Path, images: list[Any]) -> None:
    learned, reference = _quantized(yolov8n_pt, images, "adaround")
    nearest, _ = _quantized(yolov8n_pt, images, "nearest")
    changed = total = 0
    with torch.no_grad():
        for name, conv in _quant_convs(learned).items():
            q = conv.quant_weight()
            ints = torch.round(q.value / q.scale)  # the exported integers
            scaled = conv.weight / q.scale
            down, up = (torch.clamp(f(scaled), -7, 7) for f in (torch.floor, torch.ceil))  # MSE scales clip
            assert torch.all((ints == down) | (ints == up)), name
            ref = _quant_convs(nearest)[name].quant_weight()
            changed += int((ints != torch.round(ref.value / ref.scale)).sum())
            total += ints.numel()
        errors = [float((m(images[0])[0] - reference(images[0])[0]).pow(2).mean()) for m in (learned, nearest)]
    assert 0.001 < changed / total < 0.5  # some weights rounded the other way (0.7% in 40 steps), most not
    assert errors[0] < errors[1], errors  # and the detector's output moved closer to the float model's
