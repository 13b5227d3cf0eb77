"""Text, Markdown and HTML renderings of a :class:`PipelineResult`, its ``sweep`` and ``sensitivity`` sections."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yoloquant.report.result import PipelineResult, VariantResult

__all__ = ["render_html", "render_markdown", "render_sensitivity", "render_table"]


def metric_label(name: str) -> str:
    """A metric's column title: ``map50_95`` -> ``mAP50-95``, ``mask_map50`` -> ``mask mAP50``."""
    return name.replace("map50_95", "mAP50-95").replace("map50", "mAP50").replace("_", " ")


def _header(result: PipelineResult) -> tuple[str, ...]:
    cells = [c for m in result.task.metrics for c in (metric_label(m), "delta")]
    return ("variant", "backend", *cells, "p50 ms", "speedup", "size MB")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _delta(value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return "-"
    return f"{(value - base) * 100:+.2f}"


def _paired(v: VariantResult, base: VariantResult, metric: str) -> str:
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
        *(c for m in metrics for c in (_num(v.value(m), ".4f"), _paired(v, base, m))),
        _num(first.p50 if first else None, ".2f") + ("*" if first and first.noisy else ""),
        _num(speed, ".2f") + ("x" if speed else ""),
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
    return "\n".join([*lines, "", *notes, *_section_notes(result)])


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


def _constraints(sweep: dict[str, Any]) -> str:
    c = sweep.get("constraints") or {}
    drop, speed = c.get("max_map_drop"), c.get("min_speedup")
    return ", ".join(
        [
            f"max drop {drop} points" if drop is not None else "no mAP limit",
            f"min speedup {speed}x" if speed is not None else "no speedup limit",
        ]
    )


def _section_notes(result: PipelineResult) -> list[str]:
    """One line per decide section, under the terminal table."""
    notes = []
    if result.sweep is not None:
        s = result.sweep
        pick = s.get("recommended") or "none qualifies"
        notes.append(f"sweep: Pareto front (fastest first) {', '.join(s.get('pareto', []))}")
        notes.append(f"sweep: recommended with {_constraints(s)}: {pick}")
        if s.get("best"):
            same = ", ".join(s.get("same_as_best") or [])
            notes.append(f"sweep: most accurate qualifying {s['best']}; indistinguishable from it: {same}")
    if result.sensitivity is not None:
        sens = result.sensitivity
        top = ", ".join(f"{g['group']['name']} ({g['score_sqnr_db']:.1f} dB)" for g in sens["groups"][:5])
        granularity = sens["config"]["granularity"]
        notes.append(f"sensitivity ({granularity} groups, SQNR with only the group INT8): most sensitive {top}")
        stab = sens.get("stability")
        if stab:
            notes.append(
                f"sensitivity: ranking stability over {stab['resamples']} resamples of the {stab['images']} proxy "
                f"images: mean Spearman {stab['spearman_mean']:.2f}, Kendall {stab['kendall_mean']:.2f}"
            )
    return notes


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
    lines += _budget_lines(q)
    tensorrt = (q.get("config") or {}).get("tensorrt")
    if tensorrt:
        lines.append(f"- TensorRT: {tensorrt}")
    float_names = [n for names in q.get("float_nodes", {}).values() for n in names]
    if float_names:
        lines.append(
            f"- kept float: {', '.join(f'`{n}`' for n in float_names[:60])}" + (" ..." if len(float_names) > 60 else "")
        )
    return [*lines, ""]


def _budget_lines(q: dict[str, Any]) -> list[str]:
    """The outcome of an accuracy-budget search, from the config a budgeted quantizer records (its budget, result)."""
    config = q.get("config") or {}
    budget, found = config.get("budget"), config.get("result")
    if not budget or not found:
        return []
    where = f"{budget['eval_source']} ({budget['num_images'] or 'all'} images from #{budget['offset']})"
    groups = ", ".join(f"`{g}`" for g in found["float_groups"]) or "none"
    searched = found.get("search_delta")
    ci = f", delta {_metric_text(searched)}" if searched and searched.get("ci95") else ""
    lines = [
        f"- accuracy budget: drop <= {found['max_map_drop']} points, searched on {where}: "
        f"{len(found['float_groups'])} of {found['groups_total']} groups float ({groups}); there FP32 "
        f"{found['fp32_map50_95']:.4f}, full INT8 {found['int8_map50_95']:.4f}, budgeted {found['map50_95']:.4f} "
        f"(drop {found['drop_points']:+.2f} points{ci}, {'within' if found['within_budget'] else 'NOT within'} budget)"
    ]
    check = q.get("budget_verification")
    if check:
        lines.append(_verification_line(check))
    return lines


def _metric_text(m: dict[str, Any]) -> str:
    ci = m.get("ci95")
    return f"{m['value']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def _verification_line(check: dict[str, Any]) -> str:
    """The budget verified on the evaluation set: drop, its interval, verdict and P(drop <= budget)."""
    ci = check.get("verified_drop_ci95")
    interval = f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""
    p = check.get("p_within_budget")
    sure = (
        f"; P(drop <= {check['max_map_drop']}) = {p:.2f} over the paired bootstrap resamples" if p is not None else ""
    )
    where = "held out" if check["held_out"] else "the same images the search chose on: in-sample, optimistic"
    verdict = "within" if check["within_budget"] else "NOT within"
    resolved = check.get("resolved")
    note = "" if resolved is None else (", resolved" if resolved else ", not resolved by these images")
    return (
        f"- budget verified on the evaluation set ({check['eval_images']} images, {where}): drop "
        f"{check['verified_drop_points']:+.2f}{interval} points, {verdict} budget{note}{sure}"
    )


def _sweep_lines(result: PipelineResult) -> list[str]:
    s = result.sweep
    if s is None:
        return []
    base, primary = result.baseline, result.task.primary_metric
    label = metric_label(primary)

    def p50(v: VariantResult) -> float:
        return v.latency[0].p50 if v.latency else float("inf")

    rows = [
        (
            v.name,
            _num(v.value(primary), ".4f"),
            _paired(v, base, primary),
            _num(v.latency[0].p50 if v.latency else None, ".2f"),
            _num(v.speedup_vs_fp32.get(v.latency[0].batch) if v.latency else None, ".3f") + "x",
            _pareto_mark(s, v.name),
            _same_mark(s, v.name),
        )
        for v in sorted(result.variants, key=p50)
    ]
    lines = [
        "## Sweep",
        "",
        f"{len(result.variants)} variants (FP32 included), fastest first; ledger `{s.get('ledger')}`, "
        f"plot `{s.get('pareto_plot')}`.",
        "",
        *_md_table(("variant", label, "delta [95% CI]", "p50 ms", "speedup", "Pareto", "same as best"), rows),
        "",
        f"Constraints: {_constraints(s)} (vs FP32, on the point values).",
        "",
        *_sweep_notes(s, label),
    ]
    call = s.get("recommended_call")
    if not s.get("recommended") or not call:
        return [*lines, "No variant meets the constraints; relax them or widen the grid.", ""]
    lines += [f"Recommended: **{s['recommended']}**", "", "```python", call["python"], "```", ""]
    if call.get("cli"):
        lines += ["```bash", call["cli"], "```", ""]
    return lines


def _pareto_mark(s: dict[str, Any], name: str) -> str:
    if name not in s.get("pareto", []):
        return ""
    return "*" if (s.get("pareto_resolved") or {}).get(name, True) else "*~"


def _same_mark(s: dict[str, Any], name: str) -> str:
    if name == s.get("best"):
        return "best"
    return "=" if name in (s.get("same_as_best") or []) else ""


def _sweep_notes(s: dict[str, Any], label: str) -> list[str]:
    """Footnotes of the sweep table's markers and the recommendation's working (``label``: the ranking metric)."""
    notes = [
        f"delta [95% CI]: {label} points vs FP32, paired bootstrap over the evaluation images. "
        f"*: on the Pareto front of p50 vs {label}; *~: on it, but its mAP gain over the next faster front "
        "point is within noise (paired interval holds 0). best: the most accurate variant meeting the "
        "constraints; =: meets them and its mAP is indistinguishable from best's (paired interval of the "
        "difference holds 0)."
    ]
    if "best" in s:
        tied = ", ".join(s.get("same_speed") or []) or "none"
        same = ", ".join(s.get("same_as_best") or []) or "none"
        notes.append(
            f"Rule: {s.get('rule', '')}. Same as best, fastest first: {same}; "
            f"tied in speed with the fastest of them: {tied}."
        )
    return [line for n in notes for line in (n, "")]


def render_sensitivity(section: dict[str, Any], top: int | None = None) -> str:
    """Markdown of a ``sensitivity`` section (``SensitivityReport.to_dict()``): the ranked groups."""
    fp32, int8 = section.get("fp32_map50_95"), section.get("int8_map50_95")

    def pts(v: float | None, ref: float | None) -> str:
        if v is None:
            return ""
        return f"{v:.4f}" + (f" ({(v - ref) * 100:+.2f})" if ref is not None else "")

    cfg = section["config"]
    maps = (
        f"mAP50-95 on {section['eval_images']} images: FP32 {pts(fp32, None)}, INT8 {pts(int8, fp32)} "
        "(points in brackets). "
        if section.get("eval_images")
        else ""
    )
    lines = [
        f"# INT8 sensitivity of `{Path(section['model']).name}` ({cfg['granularity']} groups)",
        "",
        f"Proxy: SQNR / cosine of the raw outputs vs FP32 on {cfg['proxy_images']} calibration images; "
        f"whole model INT8: SQNR {min(section['int8_sqnr_db']):.2f} dB. {maps}"
        f"{section['seconds']:.0f} s in all, {section['proxy_seconds']:.0f} s for the proxy.",
        "",
        *_stability_lines(section.get("stability")),
    ]
    header: tuple[str, ...] = ("rank", "group", "ops", "SQNR only-INT8 (dB)", "cosine", "SQNR only-float (dB)",
                               "mAP only-INT8 (vs FP32)", "mAP only-float (vs INT8)")  # fmt: skip
    rows: list[tuple[str, ...]] = [
        (
            str(g["rank"]),
            f"`{g['group']['name']}`",
            "+".join(dict.fromkeys(g["group"]["ops"])),
            f"{g['score_sqnr_db']:.2f}",
            f"{min(g['cosine']):.5f}",
            f"{min(g['float_sqnr_db']):.2f}" if g["float_sqnr_db"] else "",
            pts(g["map50_95"], fp32),
            pts(g["float_map50_95"], int8),
        )
        for g in section["groups"][:top]
    ]
    stab = section.get("stability")
    if stab:
        header = (*header, f"in top {stab['top_k']}", "rank 95%")
        rows = [(*r, *_stability_cells(g)) for r, g in zip(rows, section["groups"], strict=False)]
    return "\n".join([*lines, *_md_table(header, rows)]) + "\n"


def _stability_cells(g: dict[str, Any]) -> tuple[str, str]:
    share, ci = g.get("top_k_share"), g.get("rank_ci95")
    return (f"{share:.0%}" if share is not None else "", f"{ci[0]:.0f}-{ci[1]:.0f}" if ci else "")


def _stability_lines(stab: dict[str, Any] | None) -> list[str]:
    """How far the ranking holds on other images: rank agreement across resamples of the proxy images."""
    if not stab:
        return []
    rho, tau = stab["spearman_mean"], stab["kendall_mean"]
    verdict = "stable" if rho >= 0.9 else "roughly stable" if rho >= 0.7 else "unstable: read it as a shortlist"
    return [
        f"Ranking stability over {stab['resamples']} bootstrap resamples of the {stab['images']} proxy images: "
        f"mean Spearman {rho:.2f} [{stab['spearman_ci95'][0]:.2f}, {stab['spearman_ci95'][1]:.2f}], "
        f"Kendall {tau:.2f} with the full ranking ({verdict}); 'in top {stab['top_k']}' is the share of "
        f"resamples in which the group ranks among the {stab['top_k']} most sensitive, 'rank 95%' its rank range.",
        "",
    ]


def render_markdown(result: PipelineResult) -> str:
    """The ``report.md`` of a run."""
    lines = [f"# yoloquant report: {result.out_dir}", "", f"Created {result.created} in {result.seconds:.0f} s.", ""]
    noisy = _noisy_note(result)
    notes = [_batch_note(result), *_interval_note(result), *(["", noisy] if noisy else [])]
    lines += [*_md_table(_header(result), _rows(result)), "", *notes, ""]
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
    lines += _sweep_lines(result)
    if result.sensitivity is not None:
        files = ", ".join(f"`{f}`" for f in result.sensitivity.get("files", []))
        body = render_sensitivity(result.sensitivity, top=20).replace("# INT8 sensitivity", "## INT8 sensitivity", 1)
        lines += [body, f"All groups and the bar chart: {files}.", ""]
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
