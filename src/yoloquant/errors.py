"""The whole yoloquant exception tree.

::

    YoloQuantError
    ├── ConfigError (ValueError)            bad option or combination
    ├── MissingDependencyError (ImportError) an optional extra is not installed
    ├── DataError                           unreadable image, empty dataset, bad label line
    ├── DiskFullError (OSError)             a write ran out of space (names the folder, needed and free)
    ├── ExecutorError                       a sweep's worker died on every retry, or the cluster is unusable
    └── StageError (.stage, .artifact)      a pipeline stage failed
        ├── ExportError
        ├── QuantizationError
        ├── EngineBuildError
        └── InferenceError

Every message says what failed, the value it got, and how to fix it. Backend exceptions are
translated at the boundary with ``raise QuantizationError(msg) from exc``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ConfigError",
    "DataError",
    "DiskFullError",
    "EngineBuildError",
    "ExecutorError",
    "ExportError",
    "InferenceError",
    "MissingDependencyError",
    "QuantizationError",
    "StageError",
    "YoloQuantError",
]


class YoloQuantError(Exception):
    """Base class of every error yoloquant raises on purpose."""


class ConfigError(YoloQuantError, ValueError):
    """An option, or a combination of options, is invalid."""


class MissingDependencyError(YoloQuantError, ImportError):
    """An optional dependency is needed; the message names the extra to install."""


class DataError(YoloQuantError):
    """Input data is unusable: missing or corrupt image, empty folder, bad label line."""


class DiskFullError(YoloQuantError, OSError):
    """A write ran out of disk space; the message names the folder, the space needed and the space free.

    Attributes:
        folder: The folder the write went to.
        needed: Bytes a run of this plan needs there (an estimate), when known.
        free: Bytes free there when the write failed.
    """

    def __init__(self, message: str, *, folder: Path, needed: int | None = None, free: int = 0) -> None:
        super().__init__(message)
        self.folder, self.needed, self.free = folder, needed, free


class ExecutorError(YoloQuantError):
    """Work sent to an executor did not come back: its worker (process or node) died on every retry, or the
    executor cannot reach its cluster. A variant's own error (a ``QuantizationError``...) is raised as itself."""


class StageError(YoloQuantError):
    """A pipeline stage failed.

    Attributes:
        stage: Name of the stage ("export", "quantize", "build", "infer").
        artifact: The file the stage was working on, when there is one.
    """

    stage: str = "stage"

    def __init__(self, message: str, *, artifact: Path | str | None = None) -> None:
        super().__init__(message)
        self.artifact = Path(artifact) if artifact is not None else None


class ExportError(StageError):
    """Exporting the model to ONNX failed."""

    stage = "export"


class QuantizationError(StageError):
    """Calibrating or quantizing the model failed."""

    stage = "quantize"


class EngineBuildError(StageError):
    """Building an inference engine failed."""

    stage = "build"


class InferenceError(StageError):
    """Running an engine failed, or it got input it cannot run."""

    stage = "infer"
