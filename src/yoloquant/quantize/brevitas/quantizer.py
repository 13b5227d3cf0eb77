"""The Brevitas quantizer strategy: Ultralytics checkpoint -> quantized PyTorch model -> QCDQ ONNX."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Self

from yoloquant._optional import require
from yoloquant.artifacts import CalibrationSet, OnnxModel, QdqModel
from yoloquant.config import Precision, parse_enum
from yoloquant.errors import ConfigError
from yoloquant.quantize.brevitas import ptq
from yoloquant.quantize.brevitas.config import BrevitasConfig, Rounding
from yoloquant.quantize.brevitas.export import export_qcdq
from yoloquant.quantize.brevitas.train import QatConfig, QatStats, finetune
from yoloquant.quantize.brevitas.unfold import fold_batchnorm, unfold_batchnorm
from yoloquant.quantize.graph import classify_qdq_nodes
from yoloquant.quantize.registry import register

__all__ = ["BrevitasQuantizer"]


@dataclass(frozen=True)
class BrevitasQuantizer:
    """W8 / W4 weights with int8 or float activations, made by Brevitas from the PyTorch model.

    It quantizes the Ultralytics checkpoint the float ONNX was exported from (``OnnxModel.checkpoint``:
    start the pipeline with ``QuantPipeline.from_ultralytics``), calibrates on the calibration set and
    writes a QCDQ ONNX that ONNX Runtime runs. Accuracy research for W4 and A16: see docs/brevitas.md for
    what TensorRT can accelerate.

    With ``qat``, the PTQ model is then fine-tuned (quantization-aware training) with the Ultralytics loss
    on ``qat_data`` (a labeled folder / yaml / json; default: the calibration images and their labels),
    with the folded BatchNorms restored as trainable layers, and folded back before export.

    Example:
        >>> BrevitasQuantizer(BrevitasConfig.w4a16()).name
        'brevitas'
    """

    config: BrevitasConfig = field(default_factory=BrevitasConfig)
    qat: QatConfig | None = None
    qat_data: str | None = None
    progress: bool = field(default=True, compare=False)  # display only: equal quantizers share one model

    def __post_init__(self) -> None:
        if self.qat is not None and self.config.rounding is Rounding.ADAROUND:
            msg = (
                "rounding='adaround' learns the rounding of the PTQ weights, which QAT then trains away (and its soft "
                "rounding is not an integer grid in training mode); use rounding='qronos' (the preset) with qat"
            )
            raise ConfigError(msg)

    needs_calibration: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return "brevitas"

    def with_progress(self, enabled: bool) -> Self:
        """This quantizer with its calibration / QAT progress bars on or off."""
        return replace(self, progress=enabled)

    def quantize(self, model: OnnxModel, data: CalibrationSet, out_dir: Path) -> QdqModel:
        if model.checkpoint is None:
            msg = (
                f"Brevitas quantizes the PyTorch model, but {model.path} came without its Ultralytics checkpoint; "
                "start from the .pt (QuantPipeline.from_ultralytics / --model x.pt)"
            )
            raise ConfigError(msg)
        start = time.perf_counter()
        torch = require("torch")
        detector = ptq.load_detector(model.checkpoint)
        if self.qat is not None:
            detector = unfold_batchnorm(detector)
        device = self.config.calibration_device
        adaround = self.config.rounding is Rounding.ADAROUND
        reference = copy.deepcopy(detector).to(device) if adaround else None  # the float model, AdaRound's target
        bits = ptq.quantize_convs(detector, self.config)
        # big batches on a GPU: GPTQ runs the model once per conv, and small kernels are launch-bound there
        batch = 8 if device == "cpu" else 32
        batches = [torch.from_numpy(b).to(device) for b in data.batches(batch)]
        ptq.calibrate(detector.to(device), batches, self.config, reference=reference, progress=self.progress)
        del reference
        extra: dict[str, Any] = {}
        if self.qat is not None:
            stats = self._finetune(self.qat, detector, data, model)
            detector = fold_batchnorm(detector)
            extra["qat"] = {**self.qat.to_dict(), "data": self.qat_data or "calibration images", **_summary(stats)}
        detector.cpu()
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / f"{model.path.stem.removesuffix('-fp32')}-{self.config.name}.onnx"
        exported = export_qcdq(detector, model.info, model.path, target, opset=self.config.opset, cleanup=True)
        quantized, floats = classify_qdq_nodes(exported, weight_only=self.config.act_bits is None)
        return QdqModel(
            path=target,
            info=model.info,
            precision=Precision(self.config.name),
            source=model,
            quantizer=self.name,
            format="qcdq",
            config={
                **self.config.to_dict(),
                "weight_bits_by_conv": _bit_counts(bits),
                "tensorrt": _tensorrt_note(self.config),
                **extra,
            },
            quantized_nodes=quantized,
            float_nodes=floats,
            seconds=time.perf_counter() - start,
        )

    def _finetune(self, qat: QatConfig, detector: Any, data: CalibrationSet, model: OnnxModel) -> QatStats:
        from yoloquant.data.datasets import dataset_of_files, load_dataset

        names = model.info.names
        labeled = load_dataset(self.qat_data, names=names) if self.qat_data else dataset_of_files(data.files, names)
        teacher = ptq.load_detector(model.checkpoint) if qat.distill > 0 and model.checkpoint else None
        return finetune(detector, labeled, qat, teacher=teacher, progress=self.progress)


def _tensorrt_note(config: BrevitasConfig) -> str:
    """What TensorRT can accelerate in this variant's layout, for the report (docs/brevitas.md)."""
    if config.weight_zero_point or config.act_zero_point:
        return (
            "no TensorRT: it takes symmetric int8 only (zero points must be 0); this asymmetric layout is for "
            "ONNX Runtime / OpenVINO on a CPU"
        )
    if config.weight_bits == 8 and config.act_bits == 8:
        return "int8 Q/DQ on conv inputs + per-channel int8 weights: TensorRT's INT8 conv kernels (not run here)"
    return (
        "no GPU speedup: TensorRT has no int4 or weight-only conv kernels, it dequantizes and runs float convs "
        "(accuracy research)"
    )


def _summary(stats: QatStats) -> dict[str, Any]:
    """The fine-tune's effort and its first / last total loss, for the report."""
    loss = stats.loss
    return {
        "images_seen": stats.images,
        "seconds": round(stats.seconds, 1),
        "device": stats.device,
        "loss_first": loss[0] if loss else None,
        "loss_last": loss[-1] if loss else None,
    }


def _bit_counts(bits: dict[str, int | None]) -> dict[str, int]:
    """How many convs got each weight bit width (``float`` for the unquantized ones)."""
    counts: dict[str, int] = {}
    for width in bits.values():
        key = "float" if width is None else f"{width}-bit"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _precision(config: BrevitasConfig) -> Precision:
    """``w8a16`` etc.: the precision named by the config's weight / activation bits."""
    return parse_enum(Precision, config.name, option="Brevitas precision (weight_bits / act_bits)")


register(BrevitasConfig, BrevitasQuantizer, precision=_precision)
