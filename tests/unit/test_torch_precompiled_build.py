"""The torch builder's precompile steps on the CPU with a tiny module: a graph break falls back to the inductor
cache with the reason, and what was compiled is saved with metadata that lists every size on disk."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from yoloquant.backends.torch.compiled import ArtifactMeta, read_meta  # noqa: E402
from yoloquant.backends.torch.engine import _Clock, _precompiled, _save  # noqa: E402
from yoloquant.backends.torch.precompiled import PrecompiledModel, PrecompileError  # noqa: E402

META = ArtifactMeta(torch=str(torch.__version__), cuda=None, gpu="cpu", capability=(0, 0), checkpoint_sha256="-",
                    precision="fp32", batch_sizes=(1,), imgsz=(8, 8), kind="precompiled")  # fmt: skip


class _Tiny(torch.nn.Module):  # type: ignore[misc,name-defined]
    def __init__(self, *, graph_break: bool = False) -> None:
        super().__init__()
        self.conv, self.graph_break = torch.nn.Conv2d(3, 2, 3), graph_break

    def forward(self, x: Any) -> Any:
        y = self.conv(x.float() / 255)
        if self.graph_break:
            torch._dynamo.graph_break()
        return y.relu()


def test_a_graph_break_falls_back_to_the_inductor_cache_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(PrecompileError, match="precompiling batch 1 failed"):
        PrecompiledModel(_Tiny(graph_break=True), (8, 8)).compile(1)
    fn, meta = _precompiled(_Tiny(graph_break=True), (8, 8), META, None, folder=tmp_path, clock=_Clock())
    assert fn is None and meta.kind == "inductor-cache" and meta.fallback and "batch 1" in meta.fallback


def test_new_sizes_are_saved_beside_the_ones_on_disk(tmp_path: Path) -> None:
    module = _Tiny()
    fn, meta = _precompiled(module, (8, 8), META, None, folder=tmp_path, clock=(clock := _Clock()))
    assert isinstance(fn, PrecompiledModel) and "precompile_b1" in clock.phases
    _save(fn, tmp_path, None, meta)
    assert read_meta(tmp_path) == META and not fn.unsaved
    wanted = dataclasses.replace(META, batch_sizes=(2,))  # a later build asks for another size
    again, meta2 = _precompiled(module, (8, 8), wanted, META, folder=tmp_path, clock=(clock := _Clock()))
    assert isinstance(again, PrecompiledModel) and "precompile_b2" in clock.phases
    _save(again, tmp_path, META, meta2)
    found = read_meta(tmp_path)
    assert found is not None and found.batch_sizes == (1, 2)  # batch 1 stays listed: its file is still there
    x = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(again(x), module(x))  # batch 1 loaded from its file on first use
    assert 1 in again.by_batch and 1 not in again.unsaved


class _Grid(torch.nn.Module):  # type: ignore[misc,name-defined]
    """A head that keeps a grid for the last input shape it saw, as an Ultralytics head keeps its anchors."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.shape, self.anchors = torch.nn.Conv2d(3, 2, 3), None, torch.empty(0)

    def forward(self, x: Any) -> Any:
        y = self.conv(x.float() / 255)
        if self.shape != y.shape:
            self.anchors, self.shape = torch.arange(y.shape[-1], dtype=y.dtype).expand_as(y).clone(), y.shape
        return y + self.anchors


def test_each_size_computes_its_own_grid_instead_of_reading_the_one_another_size_left() -> None:
    module = _Grid()
    x = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = module(x)  # leaves the batch-1 shape behind, as a YOLOv8n checkpoint's head holds
        fn = PrecompiledModel(module, (8, 8))
        fn.compile(1)
        fn.compile(2)
        fn(x.expand(2, -1, -1, -1).contiguous())  # the other size replaces the grid at each call
        module.anchors = module.anchors + 1000  # (in a CUDA-graph capture, with memory holding garbage)
        torch.testing.assert_close(fn(x), want)
