"""AdaRound by block reconstruction: learn, for every weight, whether it rounds up or down.

Brevitas' learned-round weight quantizer (``FloatToIntImplType.LEARNED_ROUND``, hard-sigmoid
parametrisation, Nagel et al. 2020) replaces round-to-nearest in each conv; its rounding variables are
trained so that each unit of the quantized detector reproduces the float detector's output on the
calibration images (block-wise reconstruction as in BRECQ, Li et al. 2021). Units are the YOLO blocks
(``model.model[i]``) and, inside the head, each box / class branch. A unit reads its input from the
quantized model (earlier units already rounded, so their error is compensated) and its target from the
float model. A regulariser anneals every variable to 0 or 1, so the result is a plain integer grid.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from yoloquant._optional import require

__all__ = ["learn_rounding", "units"]

log = logging.getLogger(__name__)

_LR = 1e-3  # Adam on the rounding variables (AdaRound / BRECQ default)
_REG_WEIGHT = 0.01  # weight of the rounding regulariser
_WARMUP = 0.2  # share of the iterations without the regulariser
_BETA = (20.0, 2.0)  # annealing of the regulariser's exponent
_ZETA, _GAMMA = 1.1, -0.1  # hard-sigmoid stretch


class _Captured(Exception):
    pass


def units(model: Any) -> list[tuple[str, Any]]:
    """The reconstruction units of an Ultralytics detector: its blocks, the head split into branches."""
    detect = model.model[-1]
    out: list[tuple[str, Any]] = [(f"model.{i}", m) for i, m in enumerate(model.model) if m is not detect]
    for attr in ("cv2", "cv3", "one2one_cv2", "one2one_cv3"):
        for j, branch in enumerate(getattr(detect, attr, ())):
            out.append((f"model.{len(model.model) - 1}.{attr}.{j}", branch))
    return out


def _capture(model: Any, unit: Any, batch: Any, *, output: bool) -> Any:
    """The input (or output) of ``unit`` when ``model`` runs on ``batch``; the rest of the forward is skipped."""
    seen: list[Any] = []

    def hook(_module: Any, args: tuple[Any, ...], result: Any) -> None:
        seen.append(result if output else args[0])
        raise _Captured

    handle = unit.register_forward_hook(hook)
    try:
        model(batch)
    except _Captured:
        pass
    finally:
        handle.remove()
    return seen[0]


def _cat(values: Sequence[Any]) -> Any:
    """Per-batch unit inputs or outputs (a tensor, or a list of tensors) joined along the batch axis, once."""
    torch = require("torch")
    if isinstance(values[0], list):
        return [torch.cat([v[k].detach() for v in values]) for k in range(len(values[0]))]
    return torch.cat([v.detach() for v in values])


def _rows(data: Any, index: Any) -> Any:
    return [d[index] for d in data] if isinstance(data, list) else data[index]


def _count(data: Any) -> int:
    return len(data[0]) if isinstance(data, list) else len(data)


def _learned_round_convs(unit: Any) -> list[Any]:
    """Switch the unit's quant convs to Brevitas' learned rounding, initialised at the float weights."""
    torch = require("torch")
    qnn = require("brevitas.nn")
    enum = require("brevitas.inject.enum")
    convs = [m for m in unit.modules() if isinstance(m, qnn.QuantConv2d) and m.weight_quant.is_quant_enabled]
    for conv in convs:
        with torch.no_grad():
            scaled = conv.weight / conv.quant_weight().scale
            frac = (scaled - torch.floor(scaled)).clamp(0.01, 0.99)
            init = -torch.log((_ZETA - _GAMMA) / (frac - _GAMMA) - 1)  # hard sigmoid(init) == frac
        conv.weight_quant.quant_injector = conv.weight_quant.quant_injector.let(
            float_to_int_impl_type=enum.FloatToIntImplType.LEARNED_ROUND,
            learned_round_impl_type=enum.LearnedRoundImplType.HARD_SIGMOID,
            learned_round_init=init,
        )
        conv.weight_quant.init_tensor_quant(preserve_state_dict=True)
    return convs


def _rounders(unit: Any) -> list[Any]:
    ste = require("brevitas.core.function_wrapper").LearnedRoundSte
    return [m for m in unit.modules() if isinstance(m, ste)]


def _beta(step: int, iters: int) -> float:
    start = _WARMUP * iters
    rel = max(0.0, (step - start) / max(1.0, iters - start))
    return _BETA[1] + (_BETA[0] - _BETA[1]) * (1.0 - rel)


def _sum_squares(pred: Any, target: Any) -> Any:
    """Squared error summed over channels, averaged over images and positions (BRECQ's loss)."""
    return (pred - target).pow(2).sum(1).mean()


def _error(unit: Any, inputs: Any, targets: Any, batch: int) -> float:
    """The unit's mean reconstruction error over the cached samples, rounding hard (eval mode)."""
    unit.eval()
    chunks = [slice(i, i + batch) for i in range(0, _count(targets), batch)]
    return sum(float(_sum_squares(unit(_rows(inputs, c)), _rows(targets, c))) for c in chunks) / len(chunks)


def _reconstruct(unit: Any, inputs: Any, targets: Any, iters: int, batch: int) -> None:
    torch = require("torch")
    rounders = _rounders(unit)
    unit.eval()  # BatchNorms and activation quantizers stay fixed; only the rounding trains
    for r in rounders:
        r.train()
    params = [r.value for r in rounders]
    optimizer = torch.optim.Adam(params, lr=_LR)
    count = _count(targets)
    generator = torch.Generator().manual_seed(0)
    for step in range(iters):
        index = torch.randint(count, (min(batch, count),), generator=generator)
        loss = _sum_squares(unit(_rows(inputs, index)), _rows(targets, index))
        if step >= _WARMUP * iters:
            beta = _beta(step, iters)
            for r in rounders:
                h = r.learned_round_impl(r.value)
                loss = loss + _REG_WEIGHT * (1 - ((h - 0.5).abs() * 2).pow(beta)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    unit.eval()  # hard rounding from here on


def learn_rounding(
    model: Any, reference: Any, batches: Sequence[Any], *, iters: int, batch: int, progress: bool
) -> None:
    """Learn the rounding of every quantized conv of ``model``, unit by unit, against ``reference``.

    Args:
        model: The detector after :func:`~.ptq.quantize_convs`, activations calibrated, in eval mode.
        reference: The float detector it was made from, on the same device.
        batches: Calibration images, float32 ``[B, 3, H, W]`` in [0, 1].
        iters: Optimizer steps per unit.
        batch: Samples per step.
        progress: Show a bar over the units.
    """
    from tqdm import tqdm

    torch = require("torch")
    pairs = list(zip(units(model), units(reference), strict=True))
    for (name, unit), (_, ref_unit) in tqdm(pairs, desc="AdaRound", unit="block", disable=not progress, leave=False):
        if not _learned_round_convs(unit):
            continue
        with torch.no_grad():
            inputs = _cat([_capture(model, unit, b, output=False) for b in batches])
            targets = _cat([_capture(reference, ref_unit, b, output=True) for b in batches])
            nearest = _error(unit, inputs, targets, batch)
        with torch.enable_grad():
            _reconstruct(unit, inputs, targets, iters, batch)
        with torch.no_grad():
            learned = _error(unit, inputs, targets, batch)
        log.info("AdaRound %s: reconstruction error %.4g rounded to nearest, %.4g learned", name, nearest, learned)
