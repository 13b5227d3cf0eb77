"""The public names are importable and the exception tree is as documented."""

from __future__ import annotations

import yoloquant
from yoloquant import errors


def test_all_names_exist() -> None:
    for name in yoloquant.__all__:
        assert hasattr(yoloquant, name), name


def test_exception_tree() -> None:
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.MissingDependencyError, ImportError)
    for cls in (errors.ExportError, errors.QuantizationError, errors.EngineBuildError, errors.InferenceError):
        assert issubclass(cls, errors.StageError)
        assert issubclass(cls, errors.YoloQuantError)
    err = errors.ExportError("boom", artifact="m.pt")
    assert err.stage == "export"
    assert str(err.artifact) == "m.pt"
