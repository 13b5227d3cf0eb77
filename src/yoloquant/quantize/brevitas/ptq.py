"""Brevitas post-training quantization of an Ultralytics detector, in PyTorch.

Every ``nn.Conv2d`` of the detector becomes a ``brevitas.nn.QuantConv2d`` with the bit width its role
asks for (:func:`conv_bits`), then activations are calibrated and the weights rounded (GPTQ) and
their biases corrected on the calibration images (:func:`calibrate`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from yoloquant._optional import require
from yoloquant.errors import QuantizationError
from yoloquant.quantize.brevitas.adaround import learn_rounding
from yoloquant.quantize.brevitas.config import ActScale, BrevitasConfig, Protect, Rounding, WeightScale

__all__ = ["calibrate", "conv_bits", "load_detector", "quantize_convs"]

# box, class, and mask-coefficient (Segment) or keypoint (Pose) branches, one-to-many and one-to-one
_HEAD_OUTPUTS = ("cv2", "cv3", "cv4", "one2one_cv2", "one2one_cv3", "one2one_cv4")


def load_detector(checkpoint: Path) -> Any:
    """The float ``DetectionModel`` of an Ultralytics checkpoint, in eval mode, on the CPU."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    ultralytics = require("ultralytics")
    try:
        model = ultralytics.YOLO(str(checkpoint)).model
    except Exception as exc:  # Ultralytics raises many types; translate at the boundary
        msg = f"Ultralytics could not load {checkpoint}: {exc}; pass an Ultralytics .pt detection checkpoint"
        raise QuantizationError(msg, artifact=checkpoint) from exc
    return model.float().eval().cpu()


def _detect(model: Any) -> Any:
    return model.model[-1]


def head_output_convs(model: Any) -> list[Any]:
    """The head's output convs: box, class and mask-coefficient / keypoint (one per scale and branch, both heads of
    an end-to-end model)."""
    detect = _detect(model)
    # an end-to-end checkpoint without its one-to-many branch holds None where that head was
    branches = [getattr(detect, attr, None) for attr in _HEAD_OUTPUTS]
    return [branch[-1] for group in branches if group is not None for branch in group]


def _early_blocks(model: Any) -> set[int]:
    """Indices of the backbone blocks up to its first saved feature map (stride 8: model.0-4 in YOLOv8/11)."""
    first_saved = min(i for i in model.save if i >= 0)
    return set(range(first_saved + 1))


def conv_bits(model: Any, config: BrevitasConfig) -> dict[str, int | None]:
    """Weight bit width of every conv by module name; None keeps it float (the DFL projection always)."""
    nn = require("torch.nn")
    head = {id(c) for c in head_output_convs(model)}
    dfl = getattr(_detect(model), "dfl", None)
    float_ids = {id(m) for m in dfl.modules()} if dfl is not None else set()
    if config.keep_float.head_convs:
        float_ids |= head
    if config.keep_float.first_conv:
        float_ids.add(id(model.model[0].conv))
    proto = getattr(_detect(model), "proto", None)  # a segmentation head's prototype module
    if config.keep_float.proto_branch and proto is not None:
        float_ids |= {id(m) for m in proto.modules()}
    protected = _protected(model, config.protect, head) if config.weight_bits < 8 else set()
    bits: dict[str, int | None] = {}
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            key = id(conv)
            bits[name] = None if key in float_ids else 8 if key in protected else config.weight_bits
    return bits


def _protected(model: Any, protect: Protect, head: set[int]) -> set[int]:
    """ids of the convs that ``protect`` keeps at 8 bits."""
    if protect is Protect.NONE:
        return set()
    if protect is Protect.HEAD:
        return head
    if protect is Protect.HEAD_AND_FIRST:
        return head | {id(model.model[0].conv)}
    early = {id(m) for i in _early_blocks(model) for m in model.model[i].modules()}
    if protect is Protect.EARLY_AND_HEAD:
        early |= {id(m) for m in _detect(model).modules()}
    return head | early


def _quant_classes(config: BrevitasConfig) -> tuple[Any, Any]:
    quant = require("brevitas.quant")
    mse_weights = config.weight_scale is WeightScale.MSE
    if config.weight_zero_point:
        weight = quant.ShiftedUint8WeightPerChannelFloatMSE if mse_weights else quant.ShiftedUint8WeightPerChannelFloat
    else:
        weight = quant.Int8WeightPerChannelFloatMSE if mse_weights else quant.Int8WeightPerChannelFloat
    mse_acts = config.act_scale is ActScale.MSE
    if config.act_zero_point:
        act = quant.ShiftedUint8ActPerTensorFloatMSE if mse_acts else quant.ShiftedUint8ActPerTensorFloat
    else:
        act = quant.Int8ActPerTensorFloatMSE if mse_acts else quant.Int8ActPerTensorFloat
    return weight, (act if config.act_bits else None)


def quantize_convs(model: Any, config: BrevitasConfig) -> dict[str, int | None]:
    """Swap the detector's convs for Brevitas ``QuantConv2d`` in place; returns :func:`conv_bits`."""
    qnn = require("brevitas.nn")
    bits = conv_bits(model, config)
    weight_quant, input_quant = _quant_classes(config)
    modules = dict(model.named_modules())
    for name, width in bits.items():
        if width is None:
            continue
        conv = modules[name]
        parent_name, _, attr = name.rpartition(".")
        qconv = qnn.QuantConv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            weight_quant=weight_quant,
            weight_bit_width=width,
            input_quant=input_quant,
            return_quant_tensor=False,
        )
        qconv.weight.data.copy_(conv.weight.data)
        if conv.bias is not None:
            qconv.bias.data.copy_(conv.bias.data)
        setattr(modules[parent_name], attr, qconv)
    return bits


def _bar(items: Sequence[Any], desc: str, progress: bool) -> Iterable[Any]:
    from tqdm import tqdm

    bar: Iterable[Any] = tqdm(items, desc=desc, unit="batch", disable=not progress, leave=False)
    return bar


def calibrate(
    model: Any, batches: Sequence[Any], config: BrevitasConfig, *, reference: Any = None, progress: bool = True
) -> None:
    """Calibrate activation scales, initialise weight scales, then round (GPTQ, AdaRound...) and correct biases.

    Args:
        model: A detector after :func:`quantize_convs`, in eval mode.
        reference: The float detector, on the same device: AdaRound's target (other roundings ignore it).
        batches: float32 ``[B, 3, H, W]`` tensors in [0, 1] (letterboxed calibration images).
        config: The quantizer options.
        progress: Show a bar per phase.
    """
    torch = require("torch")
    calib = require("brevitas.graph.calibrate")
    with torch.no_grad():
        if config.act_bits:
            with calib.calibration_mode(model):
                for batch in _bar(batches, "calibrating activations", progress):
                    model(batch)
        model(batches[0][:1])  # weight scales are computed on the first forward
        rounding_batches = _first_images(batches, config.rounding_images)
        if config.rounding is Rounding.ADAROUND:
            if reference is None:
                msg = "AdaRound needs the float detector as reference: pass calibrate(..., reference=float_model)"
                raise QuantizationError(msg)
            learn_rounding(model, reference, rounding_batches, iters=config.rounding_iters, batch=8, progress=progress)
        elif config.rounding is not Rounding.NEAREST:
            _round(model, rounding_batches, config, progress)
        if config.bias_correction:
            with calib.bias_correction_mode(model):
                for batch in _bar(batches, "bias correction", progress):
                    model(batch)
    model.eval()  # calibration_mode leaves the quant layers in training mode


def _first_images(batches: Sequence[Any], count: int) -> list[Any]:
    out: list[Any] = []
    seen = 0
    for batch in batches:
        if seen >= count:
            break
        out.append(batch[: count - seen])
        seen += len(out[-1])
    return out


def _round(model: Any, batches: Sequence[Any], config: BrevitasConfig, progress: bool) -> None:
    """GPTQ / GPFQ / Qronos, one conv at a time: each pass runs the images up to that conv and rounds it."""
    from tqdm import tqdm

    quant_acts = config.act_bits is not None
    device = config.calibration_device
    if config.rounding is Rounding.GPTQ:
        mode = require("brevitas.graph.gptq").gptq_mode(model, use_quant_activations=quant_acts, device=device)
    else:
        gpfq = require("brevitas.graph.gpfq")
        impl = require("brevitas.graph.qronos").Qronos if config.rounding is Rounding.QRONOS else gpfq.GPFQ
        mode = gpfq.gpfq_mode(model, use_quant_activations=quant_acts, algorithm_impl=impl, device=device)
    name = config.rounding.value.upper()
    with mode:
        for _ in tqdm(range(mode.num_layers), desc=name, unit="layer", disable=not progress, leave=False):
            for batch in batches:
                mode.model(batch)
            mode.update()
