"""Report parts that other packages render: named sections of ``report.md`` and lines of a variant's record.

The report knows a run's variants, latency and quantization records; a package that adds a section to
``report.json`` (``yoloquant.decide``: ``sweep``, ``sensitivity``; the budget inside a quantization
record) registers how to render it here. The modules in ``_PLUGINS`` are imported on the first render,
so a report loaded from disk (``yoloquant show``) renders them too, and ``import yoloquant`` imports none.

Example:
    >>> register_section(Section("mine", notes=lambda r: [], markdown=lambda r: ["## Mine", ""]))  # doctest: +SKIP
    >>> [s.name for s in sections()]  # doctest: +SKIP
    ['sweep', 'sensitivity', 'mine']
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yoloquant.report.result import PipelineResult

__all__ = ["QuantizationLines", "Section", "quantization_lines", "register_quantization_lines", "register_section"]

# Modules whose import registers the shipped sections (imported on first use only).
_PLUGINS = ("yoloquant.decide.report",)

QuantizationLines = Callable[[dict[str, Any]], list[str]]


@dataclass(frozen=True)
class Section:
    """A report section: ``notes`` go under the terminal table, ``markdown`` into ``report.md`` after the latency.

    Each returns no lines when the result lacks the section.
    """

    name: str
    notes: Callable[[PipelineResult], list[str]]
    markdown: Callable[[PipelineResult], list[str]]


_SECTIONS: dict[str, Section] = {}
_QUANTIZATION: dict[str, QuantizationLines] = {}


def register_section(section: Section) -> None:
    """Render ``section`` in every report, after those registered before it (a name registered again is replaced)."""
    _SECTIONS[section.name] = section


def register_quantization_lines(name: str, lines: QuantizationLines) -> None:
    """Add ``lines(record)``, Markdown list items, to each variant's quantization record in ``report.md``."""
    _QUANTIZATION[name] = lines


def sections() -> list[Section]:
    """The registered sections, in registration order."""
    _load_plugins()
    return list(_SECTIONS.values())


def quantization_lines(record: dict[str, Any]) -> list[str]:
    """The registered lines of one quantization record, in registration order."""
    _load_plugins()
    return [line for lines in _QUANTIZATION.values() for line in lines(record)]


def _load_plugins() -> None:
    for module in _PLUGINS:
        importlib.import_module(module)
