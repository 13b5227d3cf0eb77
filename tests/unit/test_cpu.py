"""reduce_range=None resolves from the CPU: 7-bit weights only where uint8 x int8 kernels saturate."""

from __future__ import annotations

import pytest

from yoloquant import _cpu
from yoloquant.quantize import ort_static
from yoloquant.quantize.ort_static import OrtQuantConfig


@pytest.mark.parametrize(
    ("flags", "saturates"),
    [
        ({"avx2", "fma"}, True),
        ({"avx2", "avx512f", "avx512_vnni"}, False),
        ({"avx2", "avx_vnni"}, False),
        (set(), False),
    ],
)
def test_saturation_follows_the_vnni_flags(monkeypatch: pytest.MonkeyPatch, flags: set[str], saturates: bool) -> None:
    monkeypatch.setattr(_cpu, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(_cpu.platform, "machine", lambda: "x86_64")
    assert _cpu.saturates_u8s8() is saturates


def test_arm_never_saturates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cpu.platform, "machine", lambda: "aarch64")
    assert _cpu.saturates_u8s8() is False


@pytest.mark.parametrize("saturates", [True, False])
def test_auto_reduce_range_only_for_int8_weights_on_cpus_that_saturate(
    monkeypatch: pytest.MonkeyPatch, saturates: bool
) -> None:
    monkeypatch.setattr(ort_static, "saturates_u8s8", lambda: saturates)
    assert ort_static.reduce_range(OrtQuantConfig()) is saturates
    assert ort_static.reduce_range(OrtQuantConfig.openvino()) is saturates  # OpenVINO's CPU kernels saturate too
    assert ort_static.reduce_range(OrtQuantConfig(weight_type="uint8")) is False
    assert ort_static.reduce_range(OrtQuantConfig(reduce_range=False)) is False
    assert ort_static.reduce_range(OrtQuantConfig(reduce_range=True)) is True


def test_this_machine_reads_real_flags() -> None:
    flags = _cpu.cpu_flags()
    assert isinstance(flags, frozenset)
    if flags:
        assert "fpu" in flags or "sse2" in flags or "neon" in flags or "asimd" in flags
