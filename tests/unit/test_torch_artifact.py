"""Which saved torch-engine artifact serves which build (metadata only: nothing is compiled here)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from yoloquant.backends.torch.compiled import ArtifactMeta, load_artifact, read_meta
from yoloquant.errors import EngineBuildError

META = ArtifactMeta(torch="2.11.0", cuda="13.0", gpu="NVIDIA H200", capability=(9, 0), checkpoint_sha256="ab",
                    precision="fp16", batch_sizes=(1, 16), imgsz=(640, 640), kind="aoti", max_batch=32)  # fmt: skip


def _write(folder: Path, meta: ArtifactMeta, file: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / file).write_bytes(b"x")
    (folder / "engine.json").write_text(json.dumps(dataclasses.asdict(meta)))


def test_a_package_serves_every_batch_size_up_to_its_max(tmp_path: Path) -> None:
    _write(tmp_path, META, "model.pt2")
    assert read_meta(tmp_path) == META
    assert load_artifact(tmp_path, dataclasses.replace(META, batch_sizes=(3, 32), max_batch=None)) == META
    assert load_artifact(tmp_path, dataclasses.replace(META, batch_sizes=(64,))) is None  # built again, bigger
    assert load_artifact(tmp_path, dataclasses.replace(META, kind="inductor-cache")) is None  # other kind


def test_metadata_without_its_file_is_no_artifact_and_a_mismatch_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, META, "inductor-cache.bin")  # says aoti, holds no package: a half-written folder
    assert read_meta(tmp_path) is None and load_artifact(tmp_path, META) is None
    _write(tmp_path, META, "model.pt2")
    with pytest.raises(EngineBuildError, match=r"gpu: artifact 'NVIDIA H200', here 'NVIDIA A100'.*rebuild=True"):
        load_artifact(tmp_path, dataclasses.replace(META, gpu="NVIDIA A100"))


def test_metadata_of_the_earlier_format_reads_as_an_inductor_cache(tmp_path: Path) -> None:
    old = {k: v for k, v in dataclasses.asdict(META).items() if k not in {"kind", "max_batch"}}
    tmp_path.joinpath("inductor-cache.bin").write_bytes(b"x")
    tmp_path.joinpath("engine.json").write_text(json.dumps(old))
    found = read_meta(tmp_path)
    assert found is not None and found.kind == "inductor-cache" and found.max_batch is None


def test_a_package_that_does_not_load_in_a_new_process_is_refused_once_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child process's load fails (here: not a package at all); the answer is kept, so the next load
    refuses without starting another child, and a rebuilt package is checked again."""
    pytest.importorskip("torch")
    import subprocess

    from yoloquant.backends.torch.compiled import check_package_loads

    _write(tmp_path, META, "model.pt2")
    with pytest.raises(
        EngineBuildError, match=r"does not load in a new process.*CXX=/usr/bin/g\+\+.*artifact='precompiled'"
    ):
        check_package_loads(tmp_path)
    assert json.loads((tmp_path / "load-check.json").read_text())["status"] not in (0, None)

    def no_child(*args: object, **kwargs: object) -> None:
        msg = "the kept answer should have been used"
        raise AssertionError(msg)

    monkeypatch.setattr(subprocess, "run", no_child)
    with pytest.raises(EngineBuildError, match="does not load"):
        check_package_loads(tmp_path)


def test_a_precompiled_artifact_needs_a_file_per_batch_size_and_serves_some_sizes(tmp_path: Path) -> None:
    meta = dataclasses.replace(META, kind="precompiled", max_batch=None)
    _write(tmp_path, meta, "precompiled-b1.bin")
    assert read_meta(tmp_path) is None  # batch 16's file is missing: a half-written folder
    tmp_path.joinpath("precompiled-b16.bin").write_bytes(b"x")
    assert read_meta(tmp_path) == meta
    assert load_artifact(tmp_path, dataclasses.replace(meta, batch_sizes=(1, 4))) == meta  # 4 compiles on top
    assert load_artifact(tmp_path, dataclasses.replace(meta, kind="inductor-cache")) is None


def test_an_inductor_cache_saved_as_a_precompile_fallback_serves_a_precompiled_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dynamo could not trace the model as one graph: the next build takes the saved inductor cache instead of
    trying to precompile again; an inductor cache saved without that reason does not serve it."""
    torch = pytest.importorskip("torch")
    primed: list[bytes] = []
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", primed.append)
    plain = dataclasses.replace(META, kind="inductor-cache", max_batch=None)
    _write(tmp_path, plain, "inductor-cache.bin")
    wanted = dataclasses.replace(META, kind="precompiled", max_batch=None)
    assert load_artifact(tmp_path, wanted) is None and not primed
    _write(tmp_path, dataclasses.replace(plain, fallback="graph break"), "inductor-cache.bin")
    found = load_artifact(tmp_path, wanted)
    assert found is not None and found.fallback == "graph break" and primed == [b"x"]


def test_a_precompiled_artifact_of_format_1_is_refused_and_other_kinds_of_it_still_load(tmp_path: Path) -> None:
    """Format 1's precompiled batch-1 function could read another size's anchor grid: such a folder is refused
    with the fix; an inductor cache or a package of format 1 has no such fault and still serves."""
    old = dataclasses.replace(META, kind="precompiled", max_batch=None)
    for b in old.batch_sizes:
        tmp_path.joinpath(f"precompiled-b{b}.bin").write_bytes(b"x")
    data = {k: v for k, v in dataclasses.asdict(old).items() if k != "format"}
    tmp_path.joinpath("engine.json").write_text(json.dumps(data))
    found = read_meta(tmp_path)
    assert found is not None and found.format == 1
    with pytest.raises(EngineBuildError, match=r"format: artifact 1, here 2.*rebuild=True"):
        load_artifact(tmp_path, old)
    _write(tmp_path, META, "model.pt2")
    package = {k: v for k, v in dataclasses.asdict(META).items() if k != "format"}
    tmp_path.joinpath("engine.json").write_text(json.dumps(package))
    assert load_artifact(tmp_path, META) == dataclasses.replace(META, format=1)
