"""Brevitas W8 / W4 quantization of the PyTorch model, exported as QCDQ ONNX (extra: ``yoloquant[brevitas]``).

- ``config``: :class:`BrevitasConfig`, presets per precision (w8a16, w8a8, w4a16, w4a8).
- ``ptq``: conv replacement, activation calibration, GPTQ, bias correction.
- ``unfold`` / ``train``: trainable BatchNorms for the folded checkpoint, and the QAT fine-tune.
- ``export``: QCDQ ONNX with the float model's metadata.
- ``quantizer``: :class:`BrevitasQuantizer`, the pipeline strategy.
"""

from __future__ import annotations

from yoloquant.quantize.brevitas.config import ActScale, BrevitasConfig, Protect, Rounding, WeightScale
from yoloquant.quantize.brevitas.quantizer import BrevitasQuantizer
from yoloquant.quantize.brevitas.train import QatConfig, QatStats, Trainable, finetune
from yoloquant.quantize.brevitas.unfold import fold_batchnorm, unfold_batchnorm

__all__ = [
    "ActScale",
    "BrevitasConfig",
    "BrevitasQuantizer",
    "Protect",
    "QatConfig",
    "QatStats",
    "Rounding",
    "Trainable",
    "WeightScale",
    "finetune",
    "fold_batchnorm",
    "unfold_batchnorm",
]
