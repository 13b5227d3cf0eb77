"""decide's report sections: the sweep, the sensitivity ranking and a budgeted variant's search and verification.

Registered with :mod:`yoloquant.report.sections` when imported (the report imports this module on its first
render), so ``report/render.py`` needs to know nothing of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from yoloquant.report.render import delta_cell, md_table, metric_label, number_cell
from yoloquant.report.sections import Section, register_quantization_lines, register_section

if TYPE_CHECKING:
    from yoloquant.report.result import PipelineResult, VariantResult

__all__ = ["render_sensitivity"]


def _budget_lines(q: dict[str, Any]) -> list[str]:
    """The outcome of an accuracy-budget search, from the config a budgeted quantizer records (budget, result)."""
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
            number_cell(v.value(primary), ".4f"),
            delta_cell(v, base, primary),
            number_cell(v.latency[0].p50 if v.latency else None, ".2f"),
            number_cell(v.speedup_vs_fp32.get(v.latency[0].batch) if v.latency else None, ".3f") + "x",
            next((m for g in _groups(s) if (m := _pareto_mark(g, v.name))), ""),
            next((m for g in _groups(s) if (m := _same_mark(g, v.name))), ""),
        )
        for v in sorted(result.variants, key=p50)
    ]
    lines = [
        "## Sweep",
        "",
        f"{len(result.variants)} variants (FP32 included), fastest first; ledger `{s.get('ledger')}`, "
        f"plot `{s.get('pareto_plot')}`.",
        "",
        *md_table(("variant", label, "delta [95% CI]", "p50 ms", "speedup", "Pareto", "same as best"), rows),
        "",
        f"Constraints: {_constraints(s)} (vs FP32, on the point values).",
        "",
        *_sweep_notes(s, label),
        *_backend_lines(s),
        *_failed_lines(s),
        *_timing_lines(s),
    ]
    call = s.get("recommended_call")
    if not s.get("recommended") or not call:
        return [*lines, "No variant meets the constraints; relax them or widen the grid.", ""]
    lines += [f"Recommended: **{s['recommended']}**", "", "```python", call["python"], "```", ""]
    if call.get("cli"):
        lines += ["```bash", call["cli"], "```", ""]
    return lines


def _failed_lines(s: dict[str, Any]) -> list[str]:
    """The variants whose last try failed (``failed.jsonl``): not in the table; a rerun tries them again."""
    failed = s.get("failed") or {}
    if not failed:
        return []
    rows = [f"- {name}: {error}" for name, error in failed.items()]
    return [f"Failed ({len(failed)}; not in the table, a rerun of the sweep tries them again):", "", *rows, ""]


def _timing_lines(s: dict[str, Any]) -> list[str]:
    """Where the interleaved timing phase ran: one node, so every ratio above compares the same hardware."""
    timing = s.get("timing") or {}
    nodes = timing.get("nodes") or {}
    if not nodes:
        return []
    parts = []
    for name, info in nodes.items():
        gpus = f", GPUs {', '.join(info['gpus'])}" if info.get("gpus") else ""
        parts.append(f"{name}: {info.get('cpu')} ({info.get('cores')} cores){gpus}")
    label = f" (Ray resource {timing['resources']})" if timing.get("resources") else ""
    return [f"Timed on{label}: {'; '.join(parts)}; every variant in one interleaved run there.", ""]


def _groups(s: dict[str, Any]) -> list[dict[str, Any]]:
    """The sections whose fronts and picks mark the table: one per backend when the grid has several."""
    return list((s.get("by_backend") or {"": s}).values())


def _backend_lines(s: dict[str, Any]) -> list[str]:
    """With several backends: each one's front and pick, every variant measured against its own backend's FP32."""
    by_backend = s.get("by_backend")
    if not by_backend:
        return []
    parts = [
        f"{b}: front {', '.join(g.get('pareto', []))}, recommended {g.get('recommended') or 'none'}"
        for b, g in by_backend.items()
    ]
    return [
        "Per backend (speedup, delta and the marks vs FP32 on the same backend; the recommendation below is the "
        f"first grid variant's backend's): {'; '.join(parts)}.",
        "",
    ]


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
    return "\n".join([*lines, *md_table(header, rows)]) + "\n"


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


def _constraints(sweep: dict[str, Any]) -> str:
    c = sweep.get("constraints") or {}
    drop = c.get("recommend_max_drop", c.get("max_map_drop"))  # reports written before 0.2.0: the old keys
    speed = c.get("recommend_min_speedup", c.get("min_speedup"))
    return ", ".join(
        [
            f"max drop {drop} points" if drop is not None else "no mAP limit",
            f"min speedup {speed}x" if speed is not None else "no speedup limit",
        ]
    )


def _sweep_table_notes(result: PipelineResult) -> list[str]:
    """The sweep's lines under the terminal table: its front and its pick."""
    s = result.sweep
    if s is None:
        return []
    pick = s.get("recommended") or "none qualifies"
    notes = [
        f"sweep: Pareto front (fastest first) {', '.join(s.get('pareto', []))}",
        f"sweep: recommended with {_constraints(s)}: {pick}",
    ]
    if s.get("best"):
        same = ", ".join(s.get("same_as_best") or [])
        notes.append(f"sweep: most accurate qualifying {s['best']}; indistinguishable from it: {same}")
    if s.get("failed"):
        notes.append(f"sweep: failed (see failed.jsonl; a rerun tries them again): {', '.join(s['failed'])}")
    return notes


def _sensitivity_table_notes(result: PipelineResult) -> list[str]:
    """The sensitivity analysis' lines under the terminal table: the most sensitive groups, the ranking's stability."""
    sens = result.sensitivity
    if sens is None:
        return []
    top = ", ".join(f"{g['group']['name']} ({g['score_sqnr_db']:.1f} dB)" for g in sens["groups"][:5])
    granularity = sens["config"]["granularity"]
    notes = [f"sensitivity ({granularity} groups, SQNR with only the group INT8): most sensitive {top}"]
    stab = sens.get("stability")
    if stab:
        notes.append(
            f"sensitivity: ranking stability over {stab['resamples']} resamples of the {stab['images']} proxy "
            f"images: mean Spearman {stab['spearman_mean']:.2f}, Kendall {stab['kendall_mean']:.2f}"
        )
    return notes


def _sensitivity_lines(result: PipelineResult) -> list[str]:
    """The ``report.md`` section of a sensitivity analysis: the top 20 groups and where the rest are."""
    if result.sensitivity is None:
        return []
    files = ", ".join(f"`{f}`" for f in result.sensitivity.get("files", []))
    body = render_sensitivity(result.sensitivity, top=20).replace("# INT8 sensitivity", "## INT8 sensitivity", 1)
    return [body, f"All groups and the bar chart: {files}.", ""]


register_section(Section("sweep", notes=_sweep_table_notes, markdown=_sweep_lines))
register_section(Section("sensitivity", notes=_sensitivity_table_notes, markdown=_sensitivity_lines))
register_quantization_lines("budget", _budget_lines)
