"""unfold_batchnorm / fold_batchnorm on the real fused YOLOv8n checkpoint (float and Brevitas convs) and YOLO11n."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from yoloquant.errors import QuantizationError
from yoloquant.quantize.brevitas.unfold import fold_batchnorm, unfold_batchnorm

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")
from ultralytics.nn.modules import Conv  # noqa: E402

# Outputs are boxes in pixels (up to ~600) and class scores; moving the bias add from the conv to the BN
# (or folding a changed BN) changes float rounding only: measured <= 2e-6 of the largest output.
REL_TOL = 1e-5


@pytest.fixture(scope="module")
def fused(yolov8n_pt: Path) -> Any:
    from ultralytics import YOLO

    return YOLO(str(yolov8n_pt)).model.float().eval()


@pytest.fixture(scope="module")
def images() -> Any:
    return torch.rand(2, 3, 320, 320, generator=torch.Generator().manual_seed(0))


def _run(model: Any, x: Any) -> Any:
    with torch.no_grad():
        return model(x)[0]


def _assert_same_outputs(a: Any, b: Any, x: Any) -> None:
    ya, yb = _run(a, x), _run(b, x)
    assert (ya - yb).abs().max().item() <= REL_TOL * ya.abs().max().item()


def _blocks(model: Any) -> list[Any]:
    return [m for m in model.modules() if isinstance(m, Conv)]


def _randomize_bn(model: Any, seed: int = 0) -> None:
    """Trained-looking BN: gammas of both signs, non-zero means, variances away from 1."""
    gen = torch.Generator().manual_seed(seed)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        c = bn.num_features
        with torch.no_grad():
            bn.weight.copy_(torch.randn(c, generator=gen) * 0.4 + 0.8)
            bn.bias.add_(torch.randn(c, generator=gen) * 0.1)
            bn.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
            bn.running_var.copy_(torch.rand(c, generator=gen) + 0.5)


def _quantize_weights(model: Any, weight_quant: Any) -> Any:
    """A copy whose Conv blocks hold Brevitas QuantConv2d (8-bit per-channel weights, float activations)."""
    qnn = pytest.importorskip("brevitas.nn")
    out = copy.deepcopy(model)
    for block in _blocks(out):
        c = block.conv
        q = qnn.QuantConv2d(
            c.in_channels,
            c.out_channels,
            c.kernel_size,
            stride=c.stride,
            padding=c.padding,
            groups=c.groups,
            bias=c.bias is not None,
            weight_quant=weight_quant,
            weight_bit_width=8,
            return_quant_tensor=False,
        )
        q.weight.data.copy_(c.weight.data)
        if c.bias is not None:
            q.bias.data.copy_(c.bias.data)
        block.conv = q
    return out


def test_unfold_adds_identity_bn_and_keeps_outputs(fused: Any, images: Any) -> None:
    unfolded = unfold_batchnorm(fused)
    _assert_same_outputs(fused, unfolded, images)
    assert all(not hasattr(b, "bn") and b.conv.bias is not None for b in _blocks(fused)), "input was modified"
    blocks = _blocks(unfolded)
    assert len(blocks) == 57
    for block, original in zip(blocks, _blocks(fused), strict=True):
        bn = block.bn
        assert block.conv.bias is None and "forward" not in vars(block)
        assert torch.equal(torch.sqrt(bn.running_var + bn.eps), torch.ones_like(bn.running_var))
        assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert torch.equal(bn.bias, original.conv.bias)
    # the Detect head's output convs are plain biased convs and stay so
    detect = unfolded.model[-1]
    assert all(seq[-1].bias is not None for seq in (*detect.cv2, *detect.cv3))


def test_fold_of_unfold_is_the_checkpoint(fused: Any, images: Any) -> None:
    folded = fold_batchnorm(unfold_batchnorm(fused))
    ref, got = fused.state_dict(), folded.state_dict()
    assert list(ref) == list(got)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert all(not hasattr(b, "bn") and b.forward == b.forward_fuse for b in _blocks(folded))
    assert torch.equal(_run(fused, images), _run(folded, images))


def test_fold_after_bn_changes_matches_ultralytics_fuse(fused: Any, images: Any) -> None:
    unfolded = unfold_batchnorm(fused)
    _randomize_bn(unfolded)
    folded = fold_batchnorm(unfolded)
    _assert_same_outputs(unfolded, folded, images)
    reference = copy.deepcopy(unfolded).fuse(verbose=False)  # Ultralytics' own BN folding
    ref, got = reference.state_dict(), folded.state_dict()
    assert list(ref) == list(got)
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_yolo11n_blocks_round_trip(images: Any) -> None:
    """YOLO11's DWConv head and C2PSA attention convs fold and unfold too (random weights, from the yaml)."""
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolo11n.yaml", verbose=False).eval()
    _randomize_bn(model)
    fused = model.fuse(verbose=False)
    unfolded = unfold_batchnorm(fused)
    assert all(hasattr(b, "bn") for b in _blocks(unfolded))
    _assert_same_outputs(fused, unfolded, images)
    ref, got = fused.state_dict(), fold_batchnorm(unfolded).state_dict()
    assert list(ref) == list(got)
    assert all(torch.equal(ref[k], got[k]) for k in ref)


@pytest.mark.parametrize("scale", ["Int8WeightPerChannelFloat", "Int8WeightPerChannelFloatMSE"])
def test_brevitas_convs_keep_their_integer_weights(fused: Any, images: Any, scale: str) -> None:
    """Per-channel scales follow a folded BN: abs-max statistics by themselves, a learned (MSE) scale by rescaling."""
    quant = pytest.importorskip("brevitas.quant")
    qmodel = _quantize_weights(fused, getattr(quant, scale)).eval()
    y0 = _run(qmodel, images)  # initialises the MSE scales from the folded weights
    unfolded = unfold_batchnorm(qmodel)
    assert all(type(b.conv).__name__ == "QuantConv2d" for b in _blocks(unfolded))
    assert (y0 - _run(unfolded, images)).abs().max().item() <= REL_TOL * y0.abs().max().item()

    _randomize_bn(unfolded)
    folded = fold_batchnorm(unfolded)
    _assert_same_outputs(unfolded, folded, images)
    for before, after in zip(_blocks(unfolded), _blocks(folded), strict=True):
        sign = torch.sign(before.bn.weight).view(-1, 1, 1, 1).to(torch.int32)
        assert torch.equal(before.conv.quant_weight().int() * sign, after.conv.quant_weight().int())


def test_per_tensor_learned_scale_cannot_absorb_bn() -> None:
    qnn = pytest.importorskip("brevitas.nn")
    quant = pytest.importorskip("brevitas.quant")
    block = Conv(3, 8, 3)
    block.conv = qnn.QuantConv2d(3, 8, 3, padding=1, bias=False, weight_quant=quant.Int8WeightPerTensorFloatMSE)
    model = torch.nn.Sequential(block).eval()
    model(torch.rand(1, 3, 16, 16))
    with pytest.raises(QuantizationError, match=r"cannot fold the BatchNorm of 0 .*per-channel"):
        fold_batchnorm(model)
