"""The compiled artifact of a :class:`~yoloquant.backends.torch.engine.TorchEngine`, saved and loaded back.

Three kinds, chosen with ``TorchEngineConfig(artifact=...)``:

* ``"precompiled"`` (the default): ``torch.compile(...).aot_compile()`` per batch size
  (:mod:`yoloquant.backends.torch.precompiled`): loading runs no Dynamo and no inductor, and the file carries
  its Triton kernels, so it also loads on another machine with the same PyTorch and GPU. A model Dynamo cannot
  trace as one graph falls back to the inductor cache (``ArtifactMeta.fallback`` says why), and later builds
  of the same folder take that fallback without trying again.
* ``"aoti"``: an AOTInductor package (``torch.export`` with a dynamic batch dimension, then
  ``torch._inductor.aoti_compile_and_package``): the compiled model as a shared library plus its weights.
  Loading it (``aoti_load_package``) runs no Dynamo, no inductor and not even Ultralytics; every batch size up to
  ``max_batch`` runs from the one package. Before the first load a child process loads it
  (:func:`check_package_loads`): on the lent H200 with torch 2.11.0+cu130 a package whose C++ wrapper was
  compiled by that machine's ``CXX`` (``/opt/gcc/bin/g++``, whose ``wrapper.so`` lists no ``libstdc++``) dies with
  SIGSEGV inside ``aoti_load_package`` (in the wrapper's own ``std::regex`` code), while the same package compiled
  by the system's ``/usr/bin/g++`` loads; a package that does not load is refused with that fix. On the CPU with
  torch 2.14 a new process loads YOLOv8n's package in 1.4 s.
* ``"inductor-cache"``: inductor's compiled code through PyTorch's cache API
  (``torch.compiler.save_cache_artifacts`` / ``load_cache_artifacts``): loading skips code generation and
  autotuning, but Dynamo still traces the model once per batch size (seconds each).

An artifact is only valid for the same PyTorch build and the same GPU architecture, so its metadata records
both, and a mismatch is refused with the fix instead of silently recompiling. Layout, next to the model:
``<dir>/engine.json`` (metadata, written last, so a crash leaves no valid-looking folder) and
``<dir>/precompiled-b<N>.bin`` per batch size, ``<dir>/model.pt2`` or ``<dir>/inductor-cache.bin``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from yoloquant._io import atomic_write_bytes, atomic_write_text
from yoloquant._optional import require
from yoloquant.backends.torch.precompiled import precompiled_file
from yoloquant.errors import EngineBuildError

__all__ = ["ARTIFACT_KINDS", "ArtifactMeta", "check_package_loads", "load_artifact", "load_package", "runtime_meta",
           "save_artifact", "save_meta", "save_package"]  # fmt: skip

ARTIFACT_KINDS = ("precompiled", "inductor-cache", "aoti")
_META = "engine.json"
_LOAD_CHECK = "load-check.json"
_CHILD_LOAD = "import sys, torch; torch._inductor.aoti_load_package(sys.argv[1], run_single_threaded=True)"
_FILES = {"aoti": "model.pt2", "inductor-cache": "inductor-cache.bin"}
# 2: precompiled functions compute their own anchor grid (format 1's batch-1 function could read batch N's)
FORMAT = 2


@dataclass(frozen=True)
class ArtifactMeta:
    """What a compiled artifact was made from and for."""

    torch: str
    cuda: str | None
    gpu: str
    capability: tuple[int, int]
    checkpoint_sha256: str
    precision: str
    batch_sizes: tuple[int, ...]
    imgsz: tuple[int, int]
    kind: str = "inductor-cache"
    max_batch: int | None = None  # an AOTInductor package runs every batch size up to this
    fallback: str | None = None  # why this inductor cache was saved where "precompiled" was asked for
    format: int = FORMAT  # engine.json files without one are format 1

    def mismatch(self, other: ArtifactMeta) -> list[str]:
        """The fields where ``other`` (this process, this model) differs from the artifact's; batch sizes and
        the kind are not a mismatch (another size or kind is built, and the artifact saved again)."""
        mine, theirs = asdict(self), asdict(other)
        free = {"batch_sizes", "kind", "max_batch", "fallback", "format"}
        return [
            f"{k}: artifact {mine[k]!r}, here {theirs[k]!r}" for k in mine if mine[k] != theirs[k] and k not in free
        ]

    def covers(self, wanted: ArtifactMeta) -> bool:
        """This artifact is of ``wanted``'s kind and serves all of its batch sizes."""
        if self.kind != wanted.kind:
            return False
        if self.kind == "aoti":
            return self.max_batch is not None and max(wanted.batch_sizes) <= self.max_batch
        return set(wanted.batch_sizes) <= set(self.batch_sizes)


def runtime_meta(checkpoint: Path, *, precision: str, batch_sizes: tuple[int, ...], imgsz: tuple[int, int],
                 device: int = 0, kind: str = "inductor-cache") -> ArtifactMeta:  # fmt: skip
    """The metadata an artifact built here, now, for this checkpoint and these settings would carry."""
    torch = require("torch")
    major, minor = torch.cuda.get_device_capability(device)
    return ArtifactMeta(
        torch=str(torch.__version__),
        cuda=torch.version.cuda,
        gpu=torch.cuda.get_device_name(device),
        capability=(int(major), int(minor)),
        checkpoint_sha256=hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        precision=precision,
        batch_sizes=tuple(batch_sizes),
        imgsz=tuple(imgsz),  # type: ignore[arg-type]
        kind=kind,
    )


def save_artifact(folder: Path, meta: ArtifactMeta) -> Path:
    """Write inductor's cache artifacts and then the metadata (last, so a crash leaves no valid-looking folder)."""
    torch = require("torch")
    saved = torch.compiler.save_cache_artifacts()
    if not saved:
        msg = "PyTorch returned no cache artifacts after compiling; is TORCHINDUCTOR_FX_GRAPH_CACHE turned off?"
        raise EngineBuildError(msg, artifact=folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _META).unlink(missing_ok=True)
    atomic_write_bytes(folder / _FILES["inductor-cache"], saved[0])
    return save_meta(folder, meta)


def save_meta(folder: Path, meta: ArtifactMeta) -> Path:
    """Write ``engine.json`` (atomically; after the files it lists, so a crash leaves no valid-looking folder)."""
    atomic_write_text(folder / _META, json.dumps(asdict(meta), indent=1))
    return folder


def save_package(folder: Path, module: Any, meta: ArtifactMeta) -> Path:
    """Export ``module`` (uint8 ``[B, 3, H, W]`` in) with a dynamic batch up to ``meta.max_batch``, compile it into
    an AOTInductor package, then write the metadata (last). Minutes for a YOLO model: it runs once per model.

    Raises:
        EngineBuildError: ``torch.export`` or AOTInductor failed (the message carries theirs).
    """
    torch = require("torch")
    if meta.kind != "aoti" or not meta.max_batch:
        msg = f"an AOTInductor package needs kind 'aoti' and a max_batch, got {meta.kind!r} / {meta.max_batch!r}"
        raise EngineBuildError(msg, artifact=folder)
    device = next(module.parameters()).device
    example = torch.zeros((min(2, meta.max_batch), 3, *meta.imgsz), dtype=torch.uint8, device=device)
    batch = torch.export.Dim("batch", min=1, max=meta.max_batch)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _META).unlink(missing_ok=True)
    partial = folder / "model.partial.pt2"
    try:
        with torch.no_grad():
            program = torch.export.export(module, (example,), dynamic_shapes={"x": {0: batch}})
            torch._inductor.aoti_compile_and_package(program, package_path=str(partial))
    except Exception as exc:  # export and inductor raise assorted types
        partial.unlink(missing_ok=True)
        msg = f"compiling the AOTInductor package in {folder} failed: {exc}; TorchEngineConfig(artifact='precompiled')"
        raise EngineBuildError(msg, artifact=folder) from exc
    os.replace(partial, folder / _FILES["aoti"])
    return save_meta(folder, meta)


def load_package(folder: Path, *, single_threaded: bool = True) -> Any:
    """The AOTInductor package in ``folder`` as a callable, once :func:`check_package_loads` passed.

    ``single_threaded`` drops the runner's own locking, which CUDA-graph capture needs (PyTorch's advice);
    calls must then come from one thread at a time.
    """
    check_package_loads(folder)
    torch = require("torch")
    return torch._inductor.aoti_load_package(str(folder / _FILES["aoti"]), run_single_threaded=single_threaded)


def check_package_loads(folder: Path) -> None:
    """Load the package in a child process before this one does, once per package (the answer is kept beside it
    as ``load-check.json``): on the lent H200 with torch 2.11.0+cu130, a process that did not build a package
    dies with SIGSEGV inside ``aoti_load_package``, and a crash must not take a service down.

    Raises:
        EngineBuildError: The child could not load it (the exit status and the end of its stderr are given).
    """
    path = folder / _FILES["aoti"]
    record = folder / _LOAD_CHECK
    torch_version = str(require("torch").__version__)
    found = json.loads(record.read_text()) if record.is_file() else None
    if found is None or found.get("torch") != torch_version or found.get("package_mtime") != path.stat().st_mtime:
        try:
            child = subprocess.run([sys.executable, "-c", _CHILD_LOAD, str(path)], capture_output=True, text=True,
                                   timeout=300, check=False)  # fmt: skip
            status, tail = child.returncode, child.stderr.strip()[-300:]
        except subprocess.TimeoutExpired:
            status, tail = -1, "timed out after 300 s"
        found = {"torch": torch_version, "package_mtime": path.stat().st_mtime, "status": status, "stderr": tail}
        atomic_write_text(record, json.dumps(found, indent=1))
    if found["status"] != 0:
        crash = " (SIGSEGV: a crash inside PyTorch)" if found["status"] == -11 else ""
        msg = (
            f"the AOTInductor package {path} does not load in a new process with torch {torch_version}: exit "
            f"{found['status']}{crash}; {found['stderr']!r}. Inductor compiles a package's C++ wrapper here with "
            f"{_cpp_compiler()}; where that toolchain links libstdc++ unlike this process, build with the system's "
            "compiler (CXX=/usr/bin/g++, set before torch is imported) and rebuild=True, or use "
            "TorchEngineConfig(artifact='precompiled')"
        )
        raise EngineBuildError(msg, artifact=path)


def _cpp_compiler() -> str:
    """The C++ compiler inductor builds a package's wrapper with (``CXX``, else ``g++``)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return str(get_cpp_compiler())
    except Exception:  # a private API: the message must not fail for it
        return os.environ.get("CXX", "g++")


def read_meta(folder: Path) -> ArtifactMeta | None:
    """The artifact's metadata, or None when the folder holds no complete artifact."""
    path = folder / _META
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    data["capability"], data["batch_sizes"] = tuple(data["capability"]), tuple(data["batch_sizes"])
    data["imgsz"] = tuple(data["imgsz"])
    data.setdefault("format", 1)
    meta = ArtifactMeta(**data)
    if meta.kind == "precompiled":
        files = [precompiled_file(b) for b in meta.batch_sizes]
    else:
        files = [_FILES.get(meta.kind, _META + ".none")]
    return meta if all((folder / f).is_file() for f in files) else None


def load_artifact(folder: Path, expected: ArtifactMeta) -> ArtifactMeta | None:
    """The metadata of the artifact in ``folder`` when it serves ``expected`` (for the inductor cache: its caches
    primed); None when there is none yet, or one of another kind or too few batch sizes (built again). A
    precompiled artifact or an inductor cache serves only some of the sizes too (the others compile on top), and
    an inductor cache saved as the fallback of a precompile serves a precompiled build.

    Raises:
        EngineBuildError: The artifact was built by another PyTorch, for another GPU, checkpoint or settings, or
            it is a precompiled artifact of format 1.
    """
    found = read_meta(folder)
    if found is None:
        return None
    differs = found.mismatch(expected)
    if found.kind == "precompiled" and found.format < FORMAT:
        differs.append(
            f"format: artifact {found.format}, here {FORMAT} (an earlier yoloquant saved it; its batch-1 function "
            "could read another batch size's anchor grid)"
        )
    if differs:
        msg = (
            f"the compiled engine in {folder} does not fit here ({'; '.join(differs)}); delete the folder or "
            "pass rebuild=True to compile again"
        )
        raise EngineBuildError(msg, artifact=folder)
    fell_back = expected.kind == "precompiled" and found.fallback is not None
    if found.kind == "inductor-cache" and (expected.kind == "inductor-cache" or fell_back):
        require("torch").compiler.load_cache_artifacts((folder / _FILES["inductor-cache"]).read_bytes())
        return found  # other batch sizes compile on top
    if found.kind == "precompiled" == expected.kind:
        return found  # loaded by PrecompiledModel.load; other batch sizes compile on top
    return found if found.covers(expected) else None
