"""Config type -> quantizer: ``QuantPipeline.quantize(ModelOptConfig.fp8())`` builds the quantizer its config names.

Each quantizer module registers its config type when it is imported (a config object's module has
already been imported, so the lookup needs no import); an unknown type imports the shipped modules
once, to name every accepted type in the error.

Example:
    >>> from yoloquant.quantize.modelopt import ModelOptConfig
    >>> quantizer_for(ModelOptConfig.fp8()).name, precision_for(ModelOptConfig.fp8()).value
    ('modelopt', 'fp8')
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from yoloquant.config import Precision
from yoloquant.errors import ConfigError

if TYPE_CHECKING:
    from yoloquant.protocols import Quantizer

__all__ = ["accepted_configs", "precision_for", "quantizer_for", "register"]

C = TypeVar("C")

# The modules that register yoloquant's own config types (none imports a heavy library at import).
_SHIPPED = (
    "yoloquant.quantize.ort_static",
    "yoloquant.quantize.modelopt",
    "yoloquant.quantize.nncf",
    "yoloquant.quantize.fp16",
    "yoloquant.quantize.brevitas",
)


@dataclass(frozen=True)
class _Entry:
    make: Callable[[Any], Quantizer]
    precision: Callable[[Any], Precision]


_REGISTRY: dict[type, _Entry] = {}


def register(
    config_type: type[C],
    factory: Callable[[C], Quantizer],
    *,
    precision: Precision | Callable[[C], Precision],
) -> None:
    """Make ``factory(config)`` the quantizer for ``config_type``, making ``precision`` (or ``precision(config)``).

    Example:
        >>> from yoloquant.quantize.fp16 import Fp16Config, Fp16Converter
        >>> register(Fp16Config, Fp16Converter, precision=Precision.FP16)
    """
    made = precision if callable(precision) else _constant(precision)
    _REGISTRY[config_type] = _Entry(make=factory, precision=made)


def quantizer_for(config: object) -> Quantizer:
    """The quantizer that ``config``'s type is registered with, built from ``config``.

    Raises:
        ConfigError: ``config``'s type is not registered; names the accepted types.
    """
    return _entry(config).make(config)


def precision_for(config: object) -> Precision:
    """The precision the quantizer built from ``config`` makes (e.g. ``ModelOptConfig.mode``)."""
    return _entry(config).precision(config)


def accepted_configs() -> tuple[str, ...]:
    """The names of the registered config types, yoloquant's own included."""
    for module in _SHIPPED:
        importlib.import_module(module)
    return tuple(sorted(t.__name__ for t in _REGISTRY))


def _entry(config: object) -> _Entry:
    for cls in type(config).__mro__:  # a subclass of a registered config gets its parent's quantizer
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    msg = (
        f"no quantizer is registered for a {type(config).__name__} config; pass one of "
        f"{', '.join(accepted_configs())}, a precision string, or a Quantizer object "
        "(or yoloquant.quantize.registry.register() your config type)"
    )
    raise ConfigError(msg)


def _constant(precision: Precision) -> Callable[[object], Precision]:
    def made(config: object) -> Precision:
        del config
        return precision

    return made
