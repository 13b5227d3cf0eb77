"""The compiled artifact of a :class:`~yoloquant.backends.torch.engine.TorchEngine`, saved and loaded back.

What is saved is inductor's compiled code, through PyTorch's own cache API
(``torch.compiler.save_cache_artifacts`` / ``load_cache_artifacts``): the Triton kernels and the FX
graphs of every batch size the engine was built for. Loading it back skips inductor's code
generation and autotuning; Dynamo still traces the model (seconds, not the tens of seconds of a cold
compile). The artifact is only valid for the same PyTorch build and the same GPU architecture, so its
metadata records both, and a mismatch is refused with the fix instead of silently recompiling.

Layout, next to the model: ``<dir>/engine.json`` (metadata, written last) and ``<dir>/inductor-cache.bin``.

AOTInductor packages (``torch._inductor.aoti_compile_and_package``) would load without tracing, but on
the lent H200 (torch 2.11.0+cu130) compiling YOLOv8n took 80 s and loading the package crashed the
process (SIGSEGV), so they are not used (benchmarks/results/gpu-torch-*.json).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from yoloquant._io import atomic_write_bytes, atomic_write_text
from yoloquant._optional import require
from yoloquant.errors import EngineBuildError

__all__ = ["ArtifactMeta", "load_artifact", "runtime_meta", "save_artifact"]

_META = "engine.json"
_CACHE = "inductor-cache.bin"


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

    def mismatch(self, other: ArtifactMeta) -> list[str]:
        """The fields where ``other`` (this process, this model) differs from the artifact's; other batch sizes
        are not a mismatch (they are compiled on top, and the artifact saved again)."""
        mine, theirs = asdict(self), asdict(other)
        return [
            f"{k}: artifact {mine[k]!r}, here {theirs[k]!r}"
            for k in mine
            if mine[k] != theirs[k] and k != "batch_sizes"
        ]


def runtime_meta(checkpoint: Path, *, precision: str, batch_sizes: tuple[int, ...], imgsz: tuple[int, int],
                 device: int = 0) -> ArtifactMeta:  # fmt: skip
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
    atomic_write_bytes(folder / _CACHE, saved[0])
    atomic_write_text(folder / _META, json.dumps(asdict(meta), indent=1))
    return folder


def read_meta(folder: Path) -> ArtifactMeta | None:
    """The artifact's metadata, or None when the folder holds no complete artifact."""
    path = folder / _META
    if not path.is_file() or not (folder / _CACHE).is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    data["capability"], data["batch_sizes"] = tuple(data["capability"]), tuple(data["batch_sizes"])
    data["imgsz"] = tuple(data["imgsz"])
    return ArtifactMeta(**data)


def load_artifact(folder: Path, expected: ArtifactMeta) -> ArtifactMeta | None:
    """Prime inductor's caches from ``folder`` and return its metadata; None when there is no artifact yet.

    Raises:
        EngineBuildError: The artifact was built by another PyTorch, for another GPU, checkpoint or settings.
    """
    found = read_meta(folder)
    if found is None:
        return None
    differs = found.mismatch(expected)
    if differs:
        msg = (
            f"the compiled engine in {folder} does not fit here ({'; '.join(differs)}); delete the folder or "
            "pass rebuild=True to compile again"
        )
        raise EngineBuildError(msg, artifact=folder)
    require("torch").compiler.load_cache_artifacts((folder / _CACHE).read_bytes())
    return found
