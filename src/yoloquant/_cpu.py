"""What the CPU's integer instructions mean for ONNX Runtime's uint8 x int8 kernels.

On x86 without VNNI, ONNX Runtime multiplies uint8 activations by int8 weights with ``vpmaddubsw``, which adds
pairs of products in int16 and saturates when both operands are large; VNNI (``vpdpbusd``) accumulates in
int32 and cannot. Measured here: full-range weights lost 3.25 mAP50-95 points on an AVX2-only AMD EPYC and
0.84 on an AVX-512 VNNI Xeon for the same model and images (docs/quantizers.md).

Example:
    >>> isinstance(saturates_u8s8(), bool)
    True
"""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

__all__ = ["cpu_flags", "saturates_u8s8"]

_VNNI = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


@cache
def cpu_flags() -> frozenset[str]:
    """The x86 feature flags of this machine's CPU (empty where /proc/cpuinfo is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def saturates_u8s8() -> bool:
    """Whether ONNX Runtime's uint8 x int8 kernels can saturate here: an x86 CPU without VNNI."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
        return False
    flags = cpu_flags()
    return bool(flags) and not flags & _VNNI
