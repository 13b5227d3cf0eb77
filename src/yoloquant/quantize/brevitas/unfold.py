"""BatchNorm back into a fused Ultralytics detector for QAT, and folded again for export.

Ultralytics checkpoints ship fused: every ``Conv`` / ``DWConv`` block's BatchNorm is folded into its
conv (the conv gains a bias, ``forward`` becomes ``forward_fuse``). QAT wants the BN separate, so that
the per-channel weight quantizer sees the conv's own weights and BN's scale and shift train in float.
:func:`unfold_batchnorm` gives each folded block an identity BatchNorm carrying the conv's bias (same
outputs); :func:`fold_batchnorm` folds it back (same outputs) before export.

Only ``Conv`` and ``DWConv`` blocks are touched: they hold every BatchNorm of YOLOv8 and YOLO11. The
Detect head's output convs (plain biased ``nn.Conv2d``) and other fused blocks (``RepConv``,
``ConvTranspose``, ``Conv2``) stay as they are: biased convs, still trainable.

Example:
    >>> qat_model = unfold_batchnorm(model)  # doctest: +SKIP
    >>> export_model = fold_batchnorm(qat_model)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from typing import Any

from yoloquant._optional import require
from yoloquant.errors import QuantizationError

__all__ = ["fold_batchnorm", "unfold_batchnorm"]

# Ultralytics' BatchNorm settings (torch_utils.initialize_weights); with eps = 1e-3, the identity
# running_var 1 - eps makes sqrt(var + eps) exactly 1.0 in float32.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def _conv_blocks(model: Any) -> list[tuple[str, Any]]:
    conv = require("ultralytics.nn.modules.conv")
    return [(name, m) for name, m in model.named_modules() if type(m) in (conv.Conv, conv.DWConv)]


def unfold_batchnorm(model: Any) -> Any:
    """A copy of ``model`` whose folded ``Conv`` / ``DWConv`` blocks have a BatchNorm again.

    The new BatchNorm is an identity (mean 0, ``sqrt(var + eps) == 1``, weight 1) whose bias is the
    conv's bias; the conv (an ``nn.Conv2d`` or a Brevitas ``QuantConv2d``, kept as is) loses its bias,
    and the block's forward is ``act(bn(conv(x)))`` again. Blocks that already have a BN are left alone.

    Args:
        model: An Ultralytics detection model (``DetectionModel``), fused or not; not modified.

    Returns:
        The unfolded copy, with the same outputs.

    Example:
        >>> unfolded = unfold_batchnorm(load_detector(Path("yolov8n.pt")))  # doctest: +SKIP
    """
    out = copy.deepcopy(model)
    for _, block in _conv_blocks(out):
        if not hasattr(block, "bn"):
            _unfold(block)
    return out


def _unfold(block: Any) -> None:
    torch = require("torch")
    conv = block.conv
    weight = conv.weight
    bn = torch.nn.BatchNorm2d(
        conv.out_channels, eps=BN_EPS, momentum=BN_MOMENTUM, device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        bn.running_var.fill_(1.0 - BN_EPS)
        if conv.bias is not None:
            bn.bias.copy_(conv.bias)
    bn.requires_grad_(weight.requires_grad).train(block.training)
    conv.bias = None
    block.bn = bn
    vars(block).pop("forward", None)  # fuse() set forward = forward_fuse on the instance


def fold_batchnorm(model: Any) -> Any:
    """A copy of ``model`` with each ``Conv`` / ``DWConv`` block's BatchNorm folded into its conv.

    The inverse of :func:`unfold_batchnorm`, with the arithmetic of Ultralytics' ``fuse()``. The conv
    object is kept and its weight updated in place. A Brevitas conv keeps its integer weights: its
    per-channel scale follows the folded weights (abs-max statistics by themselves; a learned scale,
    as MSE initialises, is multiplied by ``|gamma / sqrt(var + eps)|`` here).

    Args:
        model: An Ultralytics detection model, in any mode; not modified.

    Returns:
        The folded copy, its blocks' forward back to ``forward_fuse``.

    Raises:
        QuantizationError: If a learned weight scale cannot absorb the BN scale (per-tensor, or
            restricted to powers of two / log domain).

    Example:
        >>> export_model = fold_batchnorm(trained)  # doctest: +SKIP
    """
    out = copy.deepcopy(model)
    for name, block in _conv_blocks(out):
        if hasattr(block, "bn"):
            _fold(block, name)
    return out


def _fold(block: Any, name: str) -> None:
    torch = require("torch")
    fuse_conv_bn_weights = require("torch.nn.utils.fusion").fuse_conv_bn_weights
    conv, bn = block.conv, block.bn
    with torch.no_grad():
        factor = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight, bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
        )
        conv.weight.copy_(weight)  # in place: a Brevitas quantizer may track this Parameter object
        _rescale_learned_scales(conv, factor.abs(), name)
    conv.bias = torch.nn.Parameter(bias.detach(), requires_grad=conv.weight.requires_grad)
    del block.bn
    block.forward = block.forward_fuse


def _rescale_learned_scales(conv: Any, factor: Any, name: str) -> None:
    """Scale a learned per-channel weight scale with the weights, so the integer weights do not move."""
    weight_quant = getattr(conv, "weight_quant", None)
    if weight_quant is None:
        return
    standalone = require("brevitas.core.scaling.standalone")
    rv = require("brevitas.core.restrict_val")
    learned = (standalone.ParameterFromStatsFromParameterScaling, standalone.ParameterScaling)
    not_linear = (rv.LogFloatRestrictValue, rv.IntRestrictValue, rv.PowerOfTwoRestrictValue, rv.QuantRestrictValue)
    for scaling in weight_quant.modules():
        if not isinstance(scaling, learned) or not getattr(scaling, "init_done", True):
            continue  # statistics-based scales (or not yet initialised ones) follow the weights
        value = scaling.value
        restricted = sorted({type(m).__name__ for m in scaling.modules() if isinstance(m, not_linear)})
        if value.numel() != factor.numel() or restricted:
            msg = (
                f"cannot fold the BatchNorm of {name} into its conv: its learned weight scale (shape "
                f"{tuple(value.shape)}, restricted by {restricted or 'nothing'}) cannot absorb a per-channel "
                "factor; use per-channel float weight scales (Int8WeightPerChannelFloat or its MSE variant)"
            )
            raise QuantizationError(msg)
        value.mul_(factor.reshape(value.shape))
