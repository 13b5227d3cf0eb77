"""Backend -> engine: each runtime registers how to build (and check) its engines when its module is imported.

The lookup imports the module that registers a backend on first use, so ``import yoloquant`` imports no
runtime, and ``build_engine`` needs no if / elif over the backends.

Example:
    >>> from yoloquant.config import Backend
    >>> runtime_for(Backend.ORT_CPU).backend.value
    'ort-cpu'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from yoloquant.config import Backend
from yoloquant.errors import ConfigError

if TYPE_CHECKING:
    from yoloquant.artifacts import OnnxModel
    from yoloquant.protocols import Engine

__all__ = ["Runtime", "register_runtime", "runtime_for"]

# The module whose import registers each shipped backend (imported on first use only).
_HOMES = {
    Backend.ORT_CPU: "yoloquant.backends.ort.engine",
    Backend.ORT_CUDA: "yoloquant.backends.ort.engine",
    Backend.OPENVINO: "yoloquant.backends.openvino.engine",
    Backend.TENSORRT: "yoloquant.backends.trt.builder",
    Backend.TORCH: "yoloquant.backends.torch.engine",
}


@dataclass(frozen=True)
class Runtime:
    """How one backend builds an engine (``build(model, threads)``) and checks its runtime is installed."""

    backend: Backend
    build: Callable[[OnnxModel, int | None], Engine]
    check: Callable[[], None]


_RUNTIMES: dict[Backend, Runtime] = {}


def register_runtime(
    backend: Backend, build: Callable[[OnnxModel, int | None], Engine], *, check: Callable[[], None]
) -> None:
    """Make ``build(model, threads)`` the engine of ``backend``; ``check()`` raises when its runtime is missing."""
    _RUNTIMES[backend] = Runtime(backend=backend, build=build, check=check)


def runtime_for(backend: Backend) -> Runtime:
    """The registered runtime of ``backend``, importing the module that registers it on first use.

    Raises:
        ConfigError: No runtime is registered for ``backend``; names those that are.
    """
    if backend not in _RUNTIMES and backend in _HOMES:
        importlib.import_module(_HOMES[backend])
    if backend not in _RUNTIMES:
        known = ", ".join(sorted(b.value for b in {*_HOMES, *_RUNTIMES}))
        msg = f"no engine is registered for backend {backend.value!r}; use one of {known}"
        raise ConfigError(msg)
    return _RUNTIMES[backend]
