"""List every public keyword and CLI flag; fail on a second spelling of a registered concept.

Run ``python -m yoloquant.tools.vocabulary`` (exit status 1 on a problem). The concepts and their old
spellings are registered in :mod:`yoloquant.vocabulary`; docs/concepts.md is the glossary.

Example:
    >>> problems(surface())
    []
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

from yoloquant.vocabulary import CONCEPTS, RENAMED, RENAMED_FLAGS, RENAMED_VALUES

__all__ = ["Surface", "main", "problems", "surface"]

# Public entry points whose keywords users type: "module:attribute" (methods as "module:Class.method").
_CALLABLES = (
    "yoloquant.pipeline:QuantPipeline.from_ultralytics",
    "yoloquant.pipeline:QuantPipeline.from_onnx",
    "yoloquant.pipeline:QuantPipeline.calibrate",
    "yoloquant.pipeline:QuantPipeline.quantize",
    "yoloquant.pipeline:QuantPipeline.evaluate",
    "yoloquant.pipeline:QuantPipeline.benchmark",
    "yoloquant.pipeline:QuantPipeline.analyze_sensitivity",
    "yoloquant.quantize:make_quantizer",
    "yoloquant.decide.sensitivity:analyze_sensitivity",
    "yoloquant.decide.budget:search_budget",
    "yoloquant.decide.budget:BudgetedQuantizer.__init__",
    "yoloquant.decide.sweep:Sweep.grid",
    "yoloquant.decide.sweep:Sweep.run",
)
# Public configs whose fields users type.
_CONFIGS = (
    "yoloquant.config:ExportConfig",
    "yoloquant.config:EvalConfig",
    "yoloquant.config:BenchConfig",
    "yoloquant.quantize.float_scope:FloatScope",
    "yoloquant.quantize.ort_static:OrtQuantConfig",
    "yoloquant.quantize.modelopt:ModelOptConfig",
    "yoloquant.quantize.nncf:NncfConfig",
    "yoloquant.quantize.fp16:Fp16Config",
    "yoloquant.quantize.brevitas.config:BrevitasConfig",
    "yoloquant.decide.sensitivity:SensitivityConfig",
    "yoloquant.decide.budget:BudgetConfig",
    "yoloquant.decide.sweep:Sweep",
    "yoloquant.decide.ray_executor:RayExecutor",
)


@dataclasses.dataclass(frozen=True)
class Surface:
    """What users type: keyword -> the callables / configs that take it, flag -> the commands that take it."""

    keywords: dict[str, list[str]]
    flags: dict[str, list[str]]
    values: dict[str, list[str]]


def _load(spec: str) -> object:
    module, _, attr = spec.partition(":")
    obj: object = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _keywords() -> Iterator[tuple[str, str]]:
    for spec in _CALLABLES:
        fn = cast("Callable[..., Any]", _load(spec))
        params = inspect.signature(inspect.unwrap(fn)).parameters
        yield from ((p, spec) for p in params if p not in ("self", "cls") and not p.startswith("_"))
    for spec in _CONFIGS:
        cls = _load(spec)
        yield from ((f.name, spec) for f in dataclasses.fields(cls))  # type: ignore[arg-type]


def _flags() -> Iterator[tuple[str, str]]:
    from yoloquant.cli import _parser

    parser = _parser()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]  # argparse keeps them private
        for command, sub in action.choices.items():  # type: ignore[union-attr]
            for a in sub._actions:
                if a.help != argparse.SUPPRESS:
                    yield from ((s, command) for s in a.option_strings if s.startswith("--") and s != "--help")


def surface() -> Surface:
    """Every public keyword and CLI flag, and the values of the enums users pass as strings."""
    from yoloquant.config import Backend

    keywords: dict[str, list[str]] = defaultdict(list)
    for name, where in _keywords():
        keywords[name].append(where)
    flags: dict[str, list[str]] = defaultdict(list)
    for flag, command in _flags():
        flags[flag].append(command)
    return Surface(dict(keywords), dict(flags), {"backend": [b.value for b in Backend]})


def problems(found: Surface) -> list[str]:
    """A line per second spelling of a registered concept in ``found``; empty when the vocabulary holds."""
    out = [
        f"keyword {k}= ({', '.join(w)}) is an old spelling of {RENAMED[k]}="
        for k, w in found.keywords.items()
        if k in RENAMED
    ]
    out += [
        f"flag {f} ({', '.join(c)}) is an old spelling of {RENAMED_FLAGS[f]}"
        for f, c in found.flags.items()
        if f in RENAMED_FLAGS
    ]
    for concept, values in found.values.items():
        out += [f"{concept} value {v!r} is an old spelling" for v in values if v in RENAMED_VALUES.get(concept, {})]
    names = {c.name for c in CONCEPTS}
    out += [f"flag {f} spells concept {n!r}; use {f'--{n}'.replace('_', '-')}" for f, n in _flag_concepts(found, names)]
    return out


def _flag_concepts(found: Surface, names: set[str]) -> Iterator[tuple[str, str]]:
    """Flags that carry a concept's name with another spelling (``--budget-granularity`` for ``granularity``)."""
    for flag in found.flags:
        stem = flag.removeprefix("--").replace("-", "_")
        for name in names:
            if stem != name and stem.endswith("_" + name) and flag not in _QUALIFIED:
                yield flag, name


# Flags that qualify a concept on purpose: which images the count is of.
_QUALIFIED = frozenset({"--calib-images", "--eval-images"})


def _table(rows: dict[str, list[str]], title: str) -> list[str]:
    concepts = {c.name: c.meaning for c in CONCEPTS}
    lines = [f"{title} ({len(rows)}):"]
    for name in sorted(rows):
        key = name.removeprefix("--").replace("-", "_")
        note = f"  [{concepts[key]}]" if key in concepts else ""
        lines.append(f"  {name:24} {', '.join(sorted(set(rows[name])))}{note}")
    return lines


def main(argv: Sequence[str] | None = None, out: Callable[[str], object] = print) -> int:
    """Print the vocabulary; return 1 if a registered concept has a second spelling."""
    del argv
    found = surface()
    for line in [*_table(found.keywords, "keywords"), *_table(found.flags, "CLI flags")]:
        out(line)
    bad = problems(found)
    for line in bad:
        out(f"PROBLEM: {line}")
    out("vocabulary: ok" if not bad else f"vocabulary: {len(bad)} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
