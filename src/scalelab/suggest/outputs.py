"""What `scalelab suggest` writes: suggestions.csv, suggest.txt, suggest.json and snippet.yaml.

suggestions.csv has one row per suggested run, in the order of what each adds: params, tokens,
flops (what the run adds to the runs above it) and expected_width_after (the expected 95 % width of
log N_opt at the target after every run so far), then the model (with the study's shapes), the
expected width of log L at the optimum, and why. suggest.json carries the same for the report,
with the width now, the target and the budget; snippet.yaml is the config to paste.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..files import write_json, write_text
from .core import FRONTIER_CONFIDENCE, FRONTIER_SHARE, TABLE_COLUMNS, TOKENS_PER_PARAM_REACH
from .design import MIN_GAIN

CSV_COLUMNS = [*TABLE_COLUMNS, "model", "why"]
TRUST = (
    "candidates: no size below the smallest trained, tokens/param within {reach:g}x the trained range, and at "
    "least {share:.0%} of the suggested runs' own FLOPs on runs within {{band:g}}x of the compute-optimal N for "
    "their own FLOPs (or within the draws' own spread where wider) in at least {confidence:.0%} of the fit's draws "
    "of that N (every form's resamples by weight, with its drift); the expected widths are a linearised "
    "forecast with the bootstrap's small-sample factor and the noise the fit has measured: in "
    "bench/suggest_vs_grid.py (two sets of 6 studies per truth, 3 rounds from a 3 x 3 start, an in-family and a "
    "misspecified truth, Approach 3's bootstrap or the fit's every form) the bootstrap width a refit measured was "
    "0.90-1.48x the forecast (median over 6 studies, every round but one: 1.54x); the fit's interval "
    "with forms and drift was 0.38-6.0x its forecast, because a refit re-measures the drift (docs/benchmarks.md); "
    "refit after the runs"
).format(reach=TOKENS_PER_PARAM_REACH, share=FRONTIER_SHARE, confidence=FRONTIER_CONFIDENCE)
METHOD = (
    "linearised c-optimal design averaged over the bootstrap ensemble of each fitted form, the forms "
    "weighted by their share of the fit's interval: greedy by expected width (not width per FLOP) "
    "within the budget, then exchange passes"
)


def _why(row, done_sizes, done_tokens) -> str:
    """Where the run lies against the study's runs, in words."""
    parts = []
    if row.params > done_sizes.max() * 1.02:
        parts.append("a size above the largest")
    elif row.params < done_sizes.min() / 1.02:
        parts.append("a size below the smallest")
    else:
        existing = np.any(np.abs(done_sizes / row.params - 1) <= 0.02)
        parts.append("an existing size" if existing else "a size inside the range")
    if row.tokens > done_tokens.max() * 1.02:
        parts.append(f"D {row.tokens / done_tokens.max():.2g}x the largest")
    elif row.tokens < done_tokens.min() / 1.02:
        parts.append("D below the smallest")
    else:
        parts.append("D inside the range")
    return ", ".join(parts)


def _fmt(x) -> str:
    return f"{x:.4g}"


def build(result: dict) -> dict:
    """The table with its model names and reasons, the snippet and the summary lines."""
    from .snippet import snippet

    design, settings = result["design"], result["settings"]
    table = result["table"].copy()
    table["model"] = ""
    table["why"] = [_why(row, result["done_sizes"], result["done_tokens"]) for row in table.itertuples(index=False)]
    if "predicted" in table.columns:  # predicted endpoints (scalelab suggest --curves)
        table["why"] = [
            why + ("; a predicted endpoint: its trunk extension only, the curve law's forecast" if predicted else "")
            for why, predicted in zip(table["why"], table["predicted"])
        ]
    text_snippet, runs = None, []
    if settings.models and len(table):
        note = (
            f"scalelab suggest: {len(table)} runs, {design.cost:.3g} FLOPs, for N_opt at C = "
            f"{result['target_flops']:.3g}"
        )
        text_snippet, runs = snippet(settings.models, table, note)
        table["model"] = [run["model"] for run in runs]
    width_after = float(table["expected_width_after"].iloc[-1]) if len(table) else design.width_now
    lines = _text_lines(result, table, width_after)
    best = _best_run(result, table)
    summary = {
        "target_flops": result["target_flops"],
        "budget_flops": result["budget_flops"],
        "max_runs": settings.max_runs,
        "cooldown": settings.cooldown,
        "method": METHOD,
        "min_gain": MIN_GAIN,
        "n_resamples": result["n_resamples"],
        "width_now": design.width_now,
        "width_after": width_after,
        "width_with_forms": result.get("width_with_forms"),
        "width_with_forms_after": design.forms_width_after[-1] if design.forms_width_after else None,
        "width_floor_after": design.floor_after[-1] if design.floor_after else None,
        "forms": _forms(result),
        "frontier_band": settings.frontier_band,
        "frontier_band_used": None if np.isnan(design.frontier_band_used) else design.frontier_band_used,
        "flops": design.cost,
        "loss_width_now": design.loss_width_now,
        "why_none": design.why_none,
        "best_run": best,
        "runs": table[CSV_COLUMNS].to_dict(orient="records"),
        "snippet": text_snippet,
    }
    if result.get("endpoint_sd") is not None:  # predicted endpoints priced (scalelab suggest --curves)
        summary["endpoint_sd"] = result["endpoint_sd"]
    return {"table": table[CSV_COLUMNS], "text": "\n".join(lines) + "\n", "json": summary, "snippet": text_snippet}


def _forms(result: dict) -> dict | None:
    """The forms the design worked over: weight and drift of each (the point law's first)."""
    model = result.get("uncertainty")
    if model is None:
        return None
    names = [c.name or f"form {k}" for k, c in enumerate(model.components)]
    return {name: {"weight": c.weight, "drift": c.drift} for name, c in zip(names, model.components)}


def _forms_lines(result: dict) -> list[str]:
    """The fit's interval (forms and drift) now and expected after the runs, and whether it has a drift yet."""
    design, lines = result["design"], []
    if result.get("width_with_forms") is not None:
        lines.append(
            "width of log N_opt now with form uncertainty and drift (the fit's interval): "
            f"{result['width_with_forms']:.4g}"
            + (
                f"; expected after the runs {design.forms_width_after[-1]:.4g}, never below its floor "
                f"{design.floor_after[-1]:.4g} (the forms' disagreement and the drift beyond the largest run, "
                "which runs inside the fitted compute do not narrow)"
                if design.forms_width_after
                else ""
            )
        )
    model = result.get("uncertainty")
    if model is not None and not model.drift_measured:
        lines.append(
            "the fit has no drift of N_opt yet (no rolling-origin check: too few runs or sizes), so neither its "
            "interval nor this forecast carries it; once the runs allow the checks, the refit's interval can "
            "be several times wider than forecast here"
        )
    return lines


def _text_lines(result: dict, table: pd.DataFrame, width_after: float) -> list[str]:
    """suggest.txt: what was designed for, the widths now and expected, and the runs."""
    design, settings = result["design"], result["settings"]
    lines = [
        f"scalelab suggest: the runs that most narrow the 95 % interval of log N_opt at C = "
        f"{result['target_flops']:.4g} FLOPs",
        f"method: {METHOD}; {result['n_resamples']} bootstrap resamples of the fit's law",
        f"budget {result['budget_flops']:.4g} FLOPs, at most {settings.max_runs} runs"
        + (
            f"; schedule wsd (cooldown {settings.cooldown:g}): runs of one size share a trunk"
            if settings.cooldown
            else ""
        ),
        f"width of log N_opt now (bootstrap 95 %): {design.width_now:.4g}  "
        f"(N_opt within a factor {np.exp(design.width_now / 2):.3g} either way)",
        TRUST.format(band=settings.frontier_band),
    ]
    lines += _forms_lines(result)
    if settings.frontier_band and design.frontier_band_used > settings.frontier_band * (1 + 1e-9):
        lines.append(
            f"the fit does not know its frontier to within {settings.frontier_band:g}x at these runs' FLOPs: "
            f"near it meant within {design.frontier_band_used:.3g}x (its own {FRONTIER_CONFIDENCE:.0%} spread "
            "of the compute-optimal N there), so these runs may sit well off the true frontier"
        )
    if len(table):
        lines += [
            f"expected after the {len(table)} runs: {width_after:.4g}  "
            f"({design.width_now / width_after:.3g}x narrower), {design.cost:.4g} FLOPs "
            f"({design.cost / result['budget_flops']:.0%} of the budget)",
            "",
            "  # " + "  ".join(f"{c:>12}" for c in ("params", "tokens", "flops", "width after")) + "  why",
        ]
        for k, row in enumerate(table.itertuples(index=False), 1):
            name = f" ({row.model})" if row.model else ""
            lines.append(
                f"{k:>3} "
                + "  ".join(f"{_fmt(v):>12}" for v in (row.params, row.tokens, row.flops, row.expected_width_after))
                + f"  {row.why}{name}"
            )
        lines += [
            "",
            "Each row's width is expected after it and every row above it (a linearised forecast: "
            "refit after the runs to see the real one).",
        ]
    else:
        lines.append(f"no runs suggested: {design.why_none}")
    return lines


def _best_run(result: dict, table: pd.DataFrame) -> str | None:
    """The first suggested run and the width it is expected to leave, for the summary."""
    design = result["design"]
    if len(table):
        row = table.iloc[0]
        return (
            f"N {_fmt(row.params)}"
            + (f" ({row.model})" if row.model else "")
            + f", D {_fmt(row.tokens)} ({_fmt(row.flops)} FLOPs): width of log N_opt at "
            f"{result['target_flops']:.3g} FLOPs {design.width_now:.3g} -> {row.expected_width_after:.3g} expected"
        )
    return None


def write_outputs(result: dict, out_dir) -> dict:
    out_dir = Path(out_dir)
    built = build(result)
    write_text(out_dir / "suggestions.csv", pd.DataFrame(built["table"]).to_csv(index=False))
    write_text(out_dir / "suggest.txt", built["text"])
    write_text(out_dir / "snippet.yaml", built["snippet"] or "# scalelab suggest: no runs suggested\n")
    write_json(out_dir / "suggest.json", built["json"])  # last: its presence means the rest is there
    return built


def write_unavailable(out_dir, why: str) -> None:
    """The outputs when the fit cannot support a design: an empty table and the reason."""
    out_dir = Path(out_dir)
    write_text(out_dir / "suggestions.csv", pd.DataFrame(columns=CSV_COLUMNS).to_csv(index=False))
    write_text(out_dir / "suggest.txt", f"scalelab suggest: no design: {why}\n")
    write_text(out_dir / "snippet.yaml", "# scalelab suggest: no runs suggested\n")
    write_json(
        out_dir / "suggest.json",
        {"why_none": why, "runs": [], "best_run": None, "snippet": None, "width_now": None, "width_after": None},
    )
