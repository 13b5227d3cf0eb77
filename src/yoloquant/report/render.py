"""Text, Markdown and HTML renderings of a :class:`PipelineResult`; other sections render through ``sections``."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from yoloquant.report.sections import quantization_lines, sections

if TYPE_CHECKING:
    from yoloquant.report.result import PipelineResult, VariantResult

__all__ = ["delta_cell", "md_table", "number_cell", "render_html", "render_markdown", "render_table"]


def metric_label(name: str) -> str:
    """A metric's column title: ``map50_95`` -> ``mAP50-95``, ``mask_map50`` -> ``mask mAP50``."""
    return name.replace("map50_95", "mAP50-95").replace("map50", "mAP50").replace("_", " ")


def _header(result: PipelineResult) -> tuple[str, ...]:
    cells = [c for m in result.task.metrics for c in (metric_label(m), "delta")]
    return ("variant", "backend", *cells, "p50 ms", "speedup", "size MB")


def number_cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _delta(value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return "-"
    return f"{(value - base) * 100:+.2f}"


def delta_cell(v: VariantResult, base: VariantResult, metric: str) -> str:
    """The delta cell: ``-0.71 [-1.32, -0.10]`` with the paired interval, the plain delta without one."""
    d = v.delta_vs_fp32.get(metric)
    if d is not None:
        return d.format("+.2f")
    return _delta(v.value(metric), base.value(metric))


def _row(v: VariantResult, base: VariantResult, metrics: Sequence[str]) -> tuple[str, ...]:
    first = v.latency[0] if v.latency else None
    speed = v.speedup_vs_fp32.get(first.batch) if first else None
    return (
        v.name,
        v.backend,
        *(c for m in metrics for c in (number_cell(v.value(m), ".4f"), delta_cell(v, base, m))),
        number_cell(first.p50 if first else None, ".2f") + ("*" if first and first.noisy else ""),
        number_cell(speed, ".2f") + ("x" if speed else ""),
        f"{v.size_bytes / 1e6:.2f}",
    )


def _rows(result: PipelineResult) -> list[tuple[str, ...]]:
    return [_row(v, result.baseline, result.task.metrics) for v in result.variants]


def _batch_note(result: PipelineResult) -> str:
    first = result.baseline.latency[0] if result.baseline.latency else None
    if first is None:
        return "latency not measured"
    return f"latency at batch {first.batch}, variants timed interleaved; delta in mAP points vs {result.baseline.name}"


def _interval_note(result: PipelineResult) -> list[str]:
    """What the bracketed intervals are, and which deltas the evaluation images cannot tell from zero."""
    primary = result.task.primary_metric
    with_ci = [v for v in result.variants[1:] if primary in v.delta_vs_fp32]
    if not with_ci:
        return []
    images = (result.inputs.get("evaluation") or {}).get("images", "?")
    unresolved = [v.name for v in with_ci if v.delta_vs_fp32[primary].contains(0.0)]
    note = [f"[low, high]: 95% interval of the delta, bootstrap over the {images} evaluation images, paired"]
    if unresolved:
        note.append(
            f"not distinguishable from {result.baseline.name} on these images (interval holds 0): "
            + ", ".join(unresolved)
        )
    return note


def render_table(result: PipelineResult) -> str:
    """Aligned plain-text table for terminals and notebooks."""
    rows = [_header(result), *_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    noisy = _noisy_note(result)
    notes = [_batch_note(result), *_interval_note(result)] + ([noisy] if noisy else [])
    return "\n".join([*lines, "", *notes, *(line for section in sections() for line in section.notes(result))])


def _noisy_note(result: PipelineResult) -> str | None:
    """The footnote of the ``*`` marker on a p50, naming the noisy measurements."""
    noisy = [(v.name, r) for v in result.variants for r in v.latency[:1] if r.noisy]
    if not noisy:
        return None
    which = ", ".join(f"{name} {r.iqr / r.p50:.0%}" for name, r in noisy)
    return (
        f"* noisy: IQR/median above {noisy[0][1].noise_threshold:.0%} ({which}); "
        "compare ratios only, or rerun on a quieter machine"
    )


def md_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
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
        f"### {v.name}: {q.get('quantizer')} ({_made_for(q)}), {q.get('seconds', 0):.1f} s",
        "",
        f"- quantized nodes by op type: {json.dumps(quantized)}",
        f"- float nodes by op type: {json.dumps(kept)}",
    ]
    lines += quantization_lines(q)
    tensorrt = (q.get("config") or {}).get("tensorrt")
    if tensorrt:
        lines.append(f"- TensorRT: {tensorrt}")
    float_names = [n for names in q.get("float_nodes", {}).values() for n in names]
    if float_names:
        lines.append(
            f"- kept float: {', '.join(f'`{n}`' for n in float_names[:60])}" + (" ..." if len(float_names) > 60 else "")
        )
    return [*lines, ""]


def _made_for(q: dict[str, Any]) -> str:
    """``qdq for tensorrt``; a report written before 0.2.0 has a ``layout`` instead."""
    if "format" not in q:
        return f"{q.get('layout')} layout"
    return f"{q['format']} for {q['backend']}" if q.get("backend") else str(q["format"])


def render_markdown(result: PipelineResult) -> str:
    """The ``report.md`` of a run."""
    lines = [f"# yoloquant report: {result.out_dir}", "", f"Created {result.created} in {result.seconds:.0f} s.", ""]
    noisy = _noisy_note(result)
    notes = [_batch_note(result), *_interval_note(result), *(["", noisy] if noisy else [])]
    lines += [*md_table(_header(result), _rows(result)), "", *notes, ""]
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
                number_cell(v.speedup_vs_fp32.get(r.batch), ".2f"),
                "yes" if r.noisy else "",
            )
            for v, r in batches
        ]
        header = ("variant", "batch", "p50", "p90", "p99", "IQR", "img/s", "speedup", "noisy")
        lines += [*md_table(header, rows), ""]
    lines += [line for section in sections() for line in section.markdown(result)]
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
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _header(result))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in _rows(result))
    note = "<br>".join(html.escape(n) for n in (_batch_note(result), *_interval_note(result), _noisy_note(result)) if n)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table><p><small>{note}</small></p>"
