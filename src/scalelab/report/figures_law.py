"""Figures of the law: loss against parameters and against tokens, the IsoFLOP curves and the
compute-optimal frontier (the sections "Scaling laws" and "Compute-optimal allocation").

Each `fig_<name>` takes the Study and returns (figure, note), or raises CannotDraw; the
curves draw fit.json's chosen form (drawn_law), else the Approach 3 law with the note saying why.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm

from .drawn_law import DrawnLaw, curve_law, frontier_law
from .fmt import clause, finite, human, interval, label, sci
from .inputs import Study
from .plotting import (
    COMPUTE_CMAP,
    DATA_COLOR,
    MAX_LINES,
    MODEL_CMAP,
    TOKENS_CMAP,
    CannotDraw,
    artist_gids,
    colorbar,
    colormap,
    fit_legend,
    fit_line,
    grid_levels,
    legend_outside,
    legend_with_diamonds,
    off_grid,
    palette,
    set_log,
    size_label,
)


def _no_law_note(s: Study, law: DrawnLaw | None) -> str:
    """Why no curve is drawn, or why the drawn law is not the chosen form."""
    if law is None:
        return f"No fitted curves: {clause(s.section('approach3')[1])}."
    return f"The curves are not the chosen form's: {law.fallback}." if law.fallback else ""


def _too_few_sizes(s: Study, consequence: str) -> str:
    sizes = s.ok[s.n_col].unique()
    if len(sizes) == 0:
        return f"No run finished with a finite {s.target}, so {consequence}."
    return f"Only one model size (N = {human(sizes[0])}) has finished runs, so {consequence}."


# ----------------------------------------------------------------------------- loss vs N and D


def _family_lines(ax, ok, x_col, y_col, group_col, levels, cmap, group_label, curve, x_grid) -> None:
    """A grid: one colour and one law curve per level of `group_col`; other runs grey."""
    for level, color in zip(levels, palette(len(levels), cmap)):
        rows = ok[ok[group_col] == level].sort_values(x_col)
        if curve is None:  # no law to draw: join the points to guide the eye
            ax.plot(rows[x_col], rows[y_col], "o-", color=color, lw=1, label=group_label(level), gid="joined")
        else:
            ax.plot(rows[x_col], rows[y_col], "o", color=color, label=group_label(level))
            fit_line(ax, x_grid, curve(x_grid, level), "-", color=color, lw=1.2, alpha=0.85, gid="fit-law")
    off_grid(ax, ok[~ok[group_col].isin(levels)], x_col, y_col)


def _family_colorbar(ax, ok, x_col, y_col, group_col, cmap, curve, x_grid) -> np.ndarray:
    """No grid: every run a point on a colorbar, and the law at a few levels."""
    levels = np.sort(ok[group_col].unique())
    cm = colormap(cmap)
    norm = LogNorm(levels.min(), levels.max())
    points = ax.scatter(ok[x_col], ok[y_col], c=ok[group_col], cmap=cm, norm=norm, s=22, zorder=3)
    colorbar(ax, points, group_col)
    if curve is not None:
        for level in np.geomspace(levels.min(), levels.max(), 4):
            fit_line(ax, x_grid, curve(x_grid, level), "-", color=cm(norm(level)), lw=1.2, alpha=0.85, gid="fit-law")
    return levels


def loss_family(ax, s: Study, x_col: str, group_col: str, cmap: str, group_label, curve, fit_label: str) -> None:
    """Loss vs `x_col`, one colour per value of `group_col`, with the law through the points."""
    ok = s.ok
    levels = grid_levels(ok, group_col, x_col)
    x_grid = np.geomspace(ok[x_col].min() / 1.4, ok[x_col].max() * 1.4, 200)
    lines = 1 <= len(levels) <= MAX_LINES
    if lines:
        _family_lines(ax, ok, x_col, s.target, group_col, levels, cmap, group_label, curve, x_grid)
    else:
        levels = _family_colorbar(ax, ok, x_col, s.target, group_col, cmap, curve, x_grid)
    set_log(ax, x=x_col)
    ax.set_xlabel(label(x_col))
    ax.set_ylabel(label(s.target))
    # Beside the axes, where it covers no point; with a colorbar there, in the emptiest corner.
    fit_legend(ax, fit_label if curve is not None else "", outside=lines, **({} if lines else {"loc": "best"}))


def fig_loss_vs_params(s: Study):
    if s.ok[s.n_col].nunique() < 2:
        raise CannotDraw(_too_few_sizes(s, "loss cannot be plotted against parameters"))
    law = curve_law(s.fit)
    curve = None if law is None else (lambda n, d: law.loss(n, d))
    fig, ax = plt.subplots()
    loss_family(
        ax, s, s.n_col, s.d_col, TOKENS_CMAP, lambda d: f"D = {human(d)} tokens", curve, law.legend if law else ""
    )
    ax.set_title("Loss vs parameters, one colour per token count")
    return fig, _no_law_note(s, law)


def fig_loss_vs_tokens(s: Study):
    ok = s.ok
    if ok.empty:
        raise CannotDraw(_too_few_sizes(s, "there is nothing to plot"))
    if ok[s.d_col].nunique() < 2:
        raise CannotDraw("Every finished run saw the same number of tokens, so loss cannot be plotted against tokens.")
    law = curve_law(s.fit)
    curve = None if law is None else (lambda d, n: law.loss(n, d))
    names = s.model_names()
    fig, ax = plt.subplots()
    loss_family(ax, s, s.d_col, s.n_col, MODEL_CMAP, lambda n: size_label(names, n), curve, law.legend if law else "")
    ax.set_title("Loss vs training tokens, one colour per model size")
    return fig, _no_law_note(s, law)


# ----------------------------------------------------------------------------- IsoFLOP


def budget_runs(s: Study, budget: dict) -> pd.DataFrame:
    """The finished runs of one IsoFLOP budget: by name when fit.json lists them, else by the
    grid's isoflop_budget column, else the `n_points` runs nearest in FLOPs."""
    ok, flops = s.ok, float(budget["flops"])
    if isinstance(budget.get("runs"), list):
        return ok[ok["run"].isin([str(r) for r in budget["runs"]])]
    if "isoflop_budget" in ok.columns and np.isfinite(ok["isoflop_budget"]).any():
        rows = ok[np.isclose(ok["isoflop_budget"], flops, rtol=1e-6)]
        if len(rows):
            return rows
    distance = np.abs(np.log(ok[s.c_col] / flops))
    return ok.loc[distance.sort_values().index[: int(budget.get("n_points") or 3)]]


def _isoflop_budget(ax, s: Study, budget: dict, color) -> bool:
    """One budget's runs, its fitted curve and its optimum; True when the optimum is outside the sizes."""
    rows = budget_runs(s, budget).sort_values(s.n_col)
    log_n = np.log(rows[s.n_col].to_numpy(float))
    ax.plot(rows[s.n_col], rows[s.target], "o", color=color, label=f"C = {sci(budget['flops'])} FLOPs")
    curve = budget.get("curve")
    if isinstance(curve, dict) and len(curve.get("params") or []) == len(curve.get("loss") or []) > 1:
        fit_line(
            ax,
            np.asarray(curve["params"], float),
            np.asarray(curve["loss"], float),
            "-",
            color=color,
            lw=1.2,
            alpha=0.85,
            gid="fit-curve",
        )
    elif len(rows) >= 3 and np.ptp(log_n) > 0:  # a fit.json from before the spline: its parabola
        # The same parabola in log N as the fit, refitted here only to draw it.
        coef = np.polyfit(log_n, rows[s.target].to_numpy(float), 2)
        grid = np.linspace(log_n.min() - 0.3, log_n.max() + 0.3, 100)
        fit_line(ax, np.exp(grid), np.polyval(coef, grid), "-", color=color, lw=1.2, alpha=0.85, gid="fit-parabola")
    n_opt, loss_opt = budget.get("n_opt"), budget.get("loss_opt")
    if not (finite(n_opt) and finite(loss_opt)):
        return False
    inside = not budget.get(
        "outside_sampled", not (len(rows) and rows[s.n_col].min() <= float(n_opt) <= rows[s.n_col].max())
    )
    ax.plot(
        float(n_opt),
        float(loss_opt),
        "D",
        ms=7,
        mec="black",
        mew=1,
        mfc=color if inside else "white",
        zorder=4,
        gid="optimum" if inside else "optimum-outside",
    )
    return not inside


def fig_isoflop(s: Study):
    a2, why = s.section("approach2")
    if a2 is None:
        raise CannotDraw(why)
    budgets = sorted(a2["budgets"], key=lambda b: float(b["flops"]))
    fig, ax = plt.subplots()
    outside = False
    for budget, color in zip(budgets, palette(len(budgets), COMPUTE_CMAP)):
        outside |= _isoflop_budget(ax, s, budget, color)
    set_log(ax, x=s.n_col)
    ax.set_xlabel(label(s.n_col))
    ax.set_ylabel(label(s.target))
    ax.set_title("IsoFLOP curves: loss vs N at fixed compute")
    legend_with_diamonds(
        ax,
        "N_opt (minimum of the curve)" if "optimum" in artist_gids(fig) else None,
        "N_opt outside the sampled sizes" if outside else None,
    )
    return fig, ""


# ----------------------------------------------------------------------------- frontier

FRONTIER_PANELS = ("n_opt", "d_opt", "loss_pred")


def _approach2_optima(ax, a2: dict, quantity: str) -> None:
    """The IsoFLOP optima as diamonds, and on the N panel the Approach 2 line N_opt = G·C^a."""
    optima = [b for b in a2["budgets"] if finite(b.get(quantity))]
    if not optima:
        return
    ax.plot(
        [b["flops"] for b in optima],
        [b[quantity] for b in optima],
        "D",
        color=DATA_COLOR,
        ms=6,
        label="IsoFLOP optimum (Approach 2)",
        gid="approach2-optima",
    )
    if quantity == "n_opt" and finite(a2.get("G")) and finite(a2.get("a")) and len(optima) >= 2:
        flops = np.geomspace(min(b["flops"] for b in optima), max(b["flops"] for b in optima), 50)
        fit_line(
            ax,
            flops,
            float(a2["G"]) * flops ** float(a2["a"]),
            ":",
            color=DATA_COLOR,
            lw=1.2,
            label="Approach 2 fit, N_opt = G·C^a",
            gid="fit-approach2",
        )


def _law_frontier(ax, law: DrawnLaw, quantity: str, measured: tuple, top: float) -> None:
    """The law's optimum over the measured compute (solid) and beyond it (dashed)."""
    solid = "fit-approach3" if law.form == "chinchilla" else "fit-frontier"
    for lo, hi, style, text, gid in (
        (measured[0], measured[1], "-", law.legend, solid),
        (measured[1], top, "--", "extrapolation", "fit-extrapolation"),
    ):
        flops = np.geomspace(lo, hi, 100)
        n_opt, d_opt = law.optimum(flops)
        y = {"n_opt": n_opt, "d_opt": d_opt, "loss_pred": law.loss(n_opt, d_opt)}[quantity]
        fit_line(ax, flops, y, style, color="C3", lw=1.5, label=text, gid=gid)


def _predicted_budgets(ax, allocation: list, quantity: str) -> None:
    """fit.json's predicted budgets as stars, with their bootstrap intervals where given."""
    x = np.array([float(a["flops"]) for a in allocation])
    y = np.array([float(a[quantity]) if finite(a.get(quantity)) else np.nan for a in allocation])
    ci = [a.get("loss_ci95" if quantity == "loss_pred" else f"{quantity}_ci95") for a in allocation]
    have_ci = [c is not None and interval(c) != "–" for c in ci]
    if any(have_ci):
        lo = np.array([float(c[0]) if h else v for c, h, v in zip(ci, have_ci, y)])
        hi = np.array([float(c[1]) if h else v for c, h, v in zip(ci, have_ci, y)])
        if len(x) >= 2:
            ax.fill_between(x, lo, hi, color="C3", alpha=0.15, lw=0, label="95 % interval", gid="interval")
        bars = ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="none", ecolor="C3", capsize=3)
        for artist in bars.lines[2]:
            artist.set_gid("interval")
    ax.plot(x, y, "*", color="C3", ms=11, mec="black", mew=0.6, label="predicted budgets", gid="predicted")


ENVELOPE = "runs on the loss envelope"
LAW_GIDS = ("fit-approach3", "fit-frontier", "fit-extrapolation", "fit-approach2")


def loss_envelope(ok, flops_col: str, target: str):
    """The runs with a lower loss than every run of less or equal compute: the measured frontier."""
    ordered = ok.sort_values([flops_col, target])
    best = ordered[target].cummin()
    return ordered[(ordered[target] <= best) & (ordered[target] < best.shift(1, fill_value=np.inf))]


def _contain_law(ax) -> None:
    """Widen the (log) y-axis so the law's frontier lines stay inside it (fit_line sets no limits)."""
    values = [
        np.asarray(line.get_ydata(), float)
        for line in ax.get_lines()
        if line.get_gid() in LAW_GIDS and len(line.get_ydata())
    ]
    values = np.concatenate(values) if values else np.array([])
    values = values[np.isfinite(values) & (values > 0)]
    if not len(values):
        return
    low, high = ax.get_ylim()
    ax.set_ylim(min(low, values.min() / 1.15), max(high, values.max() * 1.15))


def _frontier_note(s: Study, law: DrawnLaw | None, allocation) -> str:
    note = [] if law else [f"No fitted law: {clause(s.section('approach3')[1])}."]
    if law and law.fallback:
        note.append(f"The line is not the chosen form's: {law.fallback}.")
    if law and not allocation:
        note.append(f"No predicted budgets: {clause(s.section('allocation')[1])}.")
    if allocation and not any(a.get("n_opt_ci95") for a in allocation):
        note.append("fit.json gives no interval for N_opt and D_opt; the loss interval is the bootstrap's.")
    return " ".join(note)


def allocation_budgets(s: Study) -> list[dict]:
    """fit.json's predicted budgets that name their compute."""
    return [a for a in (s.section("allocation")[0] or []) if finite(a.get("flops"))]


def frontier_flops(s: Study) -> tuple[np.ndarray, tuple, float]:
    """(the budgets the frontier's line spans, the measured compute (lo, hi), the top of the axis)."""
    ok = s.ok
    measured = (ok[s.c_col].min(), ok[s.c_col].max()) if len(ok) else (np.nan, np.nan)
    top = max([measured[1]] + [float(a["flops"]) for a in allocation_budgets(s)]) * 1.5
    flops = np.geomspace(measured[0], top, 50) if np.isfinite([measured[0], top]).all() else np.array([])
    return flops, measured, top


def fig_frontier(s: Study):
    a2 = s.section("approach2")[0]
    flops, measured, top = frontier_flops(s)
    law = frontier_law(s.fit, flops)
    if law is None and a2 is None:
        raise CannotDraw(f"Neither Approach 3 nor Approach 2 was identified: {clause(s.section('approach3')[1])}.")
    allocation = allocation_budgets(s)
    ok = s.ok
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.0))
    for ax, quantity in zip(axes, FRONTIER_PANELS):
        column = {"n_opt": s.n_col, "d_opt": s.d_col, "loss_pred": s.target}[quantity]
        if quantity == "loss_pred":
            ax.plot(ok[s.c_col], ok[column], "o", color="0.7", ms=4, label="runs")
        else:  # not every run: an N or D is no optimum, only the runs on the loss envelope approach one
            best = loss_envelope(ok, s.c_col, s.target)
            ax.plot(best[s.c_col], best[column], "o", mfc="none", mec="0.35", ms=5, label=ENVELOPE, gid="envelope")
        if a2 is not None and quantity != "loss_pred":
            _approach2_optima(ax, a2, quantity)
        if law is not None:
            _law_frontier(ax, law, quantity, measured, top)
        if allocation:
            _predicted_budgets(ax, allocation, quantity)
        if law is not None:  # the extrapolated stretch
            ax.axvspan(measured[1], top, color="0.5", alpha=0.06, lw=0)
        set_log(ax, x=s.c_col, y=column if quantity != "loss_pred" else None)
        if quantity != "loss_pred":
            _contain_law(ax)
        ax.set_xlabel(label(s.c_col))
    axes[0].set_ylabel(f"compute-optimal N_opt ({label(s.n_col).split(' N')[0]})")
    axes[1].set_ylabel("compute-optimal D_opt (training tokens)")
    axes[2].set_ylabel(label(s.target))
    for ax, title in zip(axes, ("Parameters", "Tokens", "Loss: runs, and the law at the optimum")):
        ax.set_title(title)
    legend_outside(axes[2], *_figure_handles(axes))
    fig.tight_layout()
    return fig, _frontier_note(s, law, allocation)


def _figure_handles(axes) -> tuple[list, list]:
    """Every panel's legend entries, each label once (one legend for a row of panels)."""
    handles, labels = [], []
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            if text not in labels:
                handles.append(handle)
                labels.append(text)
    return handles, labels
