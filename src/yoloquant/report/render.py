"""Text, Markdown and HTML renderings of a :class:`PipelineResult`."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from yoloquant.report.result import PipelineResult, VariantResult

__all__ = ["render_html", "render_markdown", "render_table"]

_HEADER = ("variant", "backend", "mAP50-95", "delta", "mAP50", "delta", "p50 ms", "speedup", "size MB")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _delta(value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return "-"
    return f"{(value - base) * 100:+.2f}"


def _row(v: VariantResult, base: VariantResult) -> tuple[str, ...]:
    first = v.latency[0] if v.latency else None
    speed = v.speedup_vs_fp32.get(first.batch) if first else None
    return (
        v.name,
        v.backend,
        _num(v.map50_95, ".4f"),
        _delta(v.map50_95, base.map50_95),
        _num(v.map50, ".4f"),
        _delta(v.map50, base.map50),
        _num(first.p50 if first else None, ".2f") + ("*" if first and first.noisy else ""),
        _num(speed, ".2f") + ("x" if speed else ""),
        f"{v.size_bytes / 1e6:.2f}",
    )


def _rows(result: PipelineResult) -> list[tuple[str, ...]]:
    return [_row(v, result.baseline) for v in result.variants]


def _batch_note(result: PipelineResult) -> str:
    first = result.baseline.latency[0] if result.baseline.latency else None
    if first is None:
        return "latency not measured"
    return f"latency at batch {first.batch}, variants timed interleaved; delta in mAP points vs {result.baseline.name}"


def render_table(result: PipelineResult) -> str:
    """Aligned plain-text table for terminals and notebooks."""
    rows = [_HEADER, *_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    lines = [
        "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    noisy = any(r.noisy for v in result.variants for r in v.latency)
    notes = [_batch_note(result)] + (["* noisy: IQR/median above threshold"] if noisy else [])
    return "\n".join([*lines, "", *notes])


def _md_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _quantization_lines(v: VariantResult) -> list[str]:
    q = v.quantization
    if not q:
        return []
    quantized = {op: len(n) for op, n in q.get("quantized_nodes", {}).items()}
    kept = {op: len(n) for op, n in q.get("float_nodes", {}).items()}
    lines = [
        f"### {v.name}: {q.get('quantizer')} ({q.get('layout')} layout), {q.get('seconds', 0):.1f} s",
        "",
        f"- quantized nodes by op type: {json.dumps(quantized)}",
        f"- float nodes by op type: {json.dumps(kept)}",
    ]
    float_names = [n for names in q.get("float_nodes", {}).values() for n in names]
    if float_names:
        lines.append(
            f"- kept float: {', '.join(f'`{n}`' for n in float_names[:60])}" + (" ..." if len(float_names) > 60 else "")
        )
    return [*lines, ""]


def render_markdown(result: PipelineResult) -> str:
    """The ``report.md`` of a run."""
    lines = [f"# yoloquant report: {result.out_dir}", "", f"Created {result.created} in {result.seconds:.0f} s.", ""]
    lines += [*_md_table(_HEADER, _rows(result)), "", _batch_note(result), ""]
    batches = [(v, r) for v in result.variants for r in v.latency]
    if batches:
        lines += ["## Latency", ""]
        rows = [
            (
                v.name,
                str(r.batch),
                f"{r.p50:.2f}",
                f"{r.p90:.2f}",
                f"{r.p99:.2f}",
                f"{r.iqr:.2f}",
                f"{r.throughput:.1f}",
                _num(v.speedup_vs_fp32.get(r.batch), ".2f"),
                "yes" if r.noisy else "",
            )
            for v, r in batches
        ]
        header = ("variant", "batch", "p50", "p90", "p99", "IQR", "img/s", "speedup", "noisy")
        lines += [*_md_table(header, rows), ""]
    quant = [line for v in result.variants for line in _quantization_lines(v)]
    if quant:
        lines += ["## Quantization", "", *quant]
    warnings = [*result.warnings, *(f"{v.name}: {w}" for v in result.variants for w in v.warnings)]
    if warnings:
        lines += ["## Warnings", "", *(f"- {w}" for w in warnings), ""]
    lines += ["## Inputs", "", "```json", json.dumps(result.inputs, indent=2), "```", ""]
    lines += ["## Config", "", "```json", json.dumps(result.config, indent=2), "```", ""]
    lines += ["## Versions", "", *(f"- {k}: {v}" for k, v in result.versions.items()), ""]
    return "\n".join(lines)


def render_html(result: PipelineResult) -> str:
    """An HTML table for Jupyter."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _HEADER)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in _rows(result))
    note = html.escape(_batch_note(result))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table><p><small>{note}</small></p>"
