"""The figures, one `fig_<name>` function each, drawn in the order of the registry.

A figure function takes the Study and returns (figure, note). The caption is built from what
was drawn: the registry's caption (what every drawing of the figure shows), then one sentence for
each optional artist the figure holds (ARTIST_CAPTIONS, keyed by the artist's gid), then the note
(say, why the fitted curves are missing). When the data cannot support the figure at all it
raises CannotDraw with the one sentence that says why: the figure is then left out of the page,
of figures/ and so of Snakemake's report, and the page says in one line why it is absent.
Fitted curves never set the axis limits (plotting.fit_line): the data do.
The law is scalelab.law's, the one copy that fit uses too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D

from ..law import predict_loss
from .drawn_law import DrawnLaw, curve_law, frontier_law
from .fmt import clause, finite, human, interval, label, percent, sci, sentence
from .inputs import Study
from .plotting import (COMPUTE_CMAP, DATA_COLOR, MAX_LINES, MODEL_CMAP, STYLE, TOKENS_CMAP, artist_gids, colorbar,
                       colormap, fit_legend, fit_line, grid_levels, legend_outside, limits_from_data, off_grid, palette, panel_note,
                       plain, save_figure, set_log, size_label)
from .registry import FIGURES


class CannotDraw(Exception):
    """Raised by a figure function with the one sentence that replaces the figure."""


@dataclass
class FigureBlock:
    name: str
    number: int
    title: str
    caption: str
    png: bytes = b""
    why: str = ""  # set when the figure could not be drawn


# name -> {gid: sentence}, in caption order: what an optional artist is, said only when drawn.
ARTIST_CAPTIONS = {
    "loss_vs_params": {
        "fit-law": "The curves are, at each token count, the fitted {curve_law}; they are clipped to the axes, "
                   "which the data set.",
        "joined": "There is no fitted law, so the points of each token count are joined to guide the eye.",
        "off-grid": "Hollow grey points are runs off the grid (IsoFLOP runs).",
    },
    "loss_vs_tokens": {
        "fit-law": "The curves are, at each size, the fitted {curve_law}; they are clipped to the axes, which the "
                   "data set.",
        "joined": "There is no fitted law, so the points of each size are joined to guide the eye.",
        "off-grid": "Hollow grey points are runs off the grid (IsoFLOP runs).",
    },
    "isoflop": {
        "fit-curve": "Each curve is the Akima spline in log N through one budget's losses, whose minimum is its "
                     "N_opt (Approach 2).",
        "fit-parabola": "Each curve is the parabola in log N fitted to one budget.",
        "optimum": "Filled diamonds are each budget's compute-optimal size N_opt as fit.json gives it.",
        "optimum-outside": "A hollow diamond is a minimum outside the sampled sizes.",
    },
    "frontier": {
        "approach2-optima": "Black diamonds are the IsoFLOP optima (Approach 2).",
        "fit-approach2": "The dotted line is the Approach 2 fit N_opt = G·C^a.",
        "fit-approach3": "The red line is the Approach 3 allocation N_opt = G (C/6)^a, D_opt = (C/6)^b / G "
                         "over the measured compute, and the law's loss there: the {frontier_law}.",
        "fit-frontier": "The red line is the compute-optimal split N_opt(C), D_opt(C) at C = 6·N·D that minimises "
                        "the {frontier_law}, over the measured compute, and the law's loss there.",
        "fit-extrapolation": "Dashed red: the same law extrapolated beyond the largest run (shaded region).",
        "predicted": "Stars are the budgets fit.json predicts{allocation_form}.",
        "interval": "{interval}",
    },
    "lr_sensitivity": {
        "optimum": "Filled diamonds mark each size's optimum inside the sweep (fit.json's quadratic in log lr "
                   "through the best value and its neighbours, else the lowest measured point).",
        "edge": "A hollow diamond is an optimum at an edge of the sweep, where a wider sweep is needed.",
    },
    "training_curves": {
        "validation": "Right: the validation loss at each evaluation.",
        "not-ok": "Dashed curves are runs that diverged or failed; the axes are scaled to the finished runs, so "
                  "these may leave them.",
    },
    "bleu_rouge": {
        "off-grid": "Hollow grey points are runs off the grid (IsoFLOP runs).",
    },
}


def caption_for(name: str, base: str, fig, note: str = "", words: dict | None = None) -> str:
    """The registry's caption, then a sentence per optional artist the figure holds (its {fields}
    filled from `words`: which law was drawn), then the note."""
    gids = artist_gids(fig)
    texts = [text for gid, text in ARTIST_CAPTIONS.get(name, {}).items() if gid in gids]
    parts = [base] + [text.format_map(words or {}) for text in texts] + [note]
    return " ".join(p.strip() for p in parts if p and p.strip())


def caption_words(s: Study) -> dict:
    """The caption's words for the laws drawn: the curves' law, the frontier's, and the form of
    the predicted budgets and their intervals (fit.json's allocation)."""
    curve, frontier = curve_law(s.fit), frontier_law(s.fit, _frontier_flops(s)[0])
    forms = {a.get("form") for a in _allocation(s)} - {None}
    if len(forms) == 1:  # fit.json v2: the chosen form's allocation (scalelab.fitted.FittedLaw.allocate)
        form = forms.pop()
        allocation = f" with the {form} law"
        interval = (f"Error bars and the red band are 95 % intervals: of the optimum N_opt, D_opt over the {form} "
                    "fit's bootstrap resamples, and of the loss fit.json's prediction interval (the bootstrap "
                    "spread plus the runs' scatter, mixed over the fitted forms by their weights); the band joins "
                    "the stars' intervals.")
    else:
        allocation, interval = "", "Error bars and the red band are their bootstrap 95 % intervals."
    return {"curve_law": curve.words if curve else "law", "frontier_law": frontier.words if frontier else "law",
            "allocation_form": allocation, "interval": interval}


def draw_figure(spec, s: Study):
    """(figure, caption) of one registered figure; raises CannotDraw. The data set the limits."""
    fig, note = spec.function()(s)
    if limits_from_data(fig):
        note = (f"{note} The fitted curves lie wholly outside the measured range, so none is visible: the fit "
                "does not describe these runs (see the fitted parameters).").strip()
    return fig, caption_for(spec.name, spec.caption(), fig, note, caption_words(s))


def draw_figures(s: Study, figures_dir: Path) -> dict[str, FigureBlock]:
    """Draw every registered figure that the data support into figures_dir (PNG and SVG), and
    remove the files of one that they do not (left over from an earlier report); return the
    blocks for the pages. Only drawn figures are numbered."""
    blocks, number = {}, 0
    with plt.rc_context(STYLE):
        for spec in FIGURES.values():
            try:
                fig, caption = draw_figure(spec, s)
            except CannotDraw as exc:
                for ext in ("png", "svg"):
                    (figures_dir / f"{spec.name}.{ext}").unlink(missing_ok=True)
                blocks[spec.name] = FigureBlock(spec.name, 0, spec.title, "", why=sentence(str(exc)))
                continue
            number += 1
            blocks[spec.name] = FigureBlock(spec.name, number, spec.title, caption,
                                            save_figure(fig, figures_dir / spec.name))
    return blocks


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
    loss_family(ax, s, s.n_col, s.d_col, TOKENS_CMAP, lambda d: f"D = {human(d)} tokens", curve,
                law.legend if law else "")
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
    loss_family(ax, s, s.d_col, s.n_col, MODEL_CMAP, lambda n: size_label(names, n), curve,
                law.legend if law else "")
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
        fit_line(ax, np.asarray(curve["params"], float), np.asarray(curve["loss"], float), "-", color=color, lw=1.2,
                 alpha=0.85, gid="fit-curve")
    elif len(rows) >= 3 and np.ptp(log_n) > 0:  # a fit.json from before the spline: its parabola
        # The same parabola in log N as the fit, refitted here only to draw it.
        coef = np.polyfit(log_n, rows[s.target].to_numpy(float), 2)
        grid = np.linspace(log_n.min() - 0.3, log_n.max() + 0.3, 100)
        fit_line(ax, np.exp(grid), np.polyval(coef, grid), "-", color=color, lw=1.2, alpha=0.85, gid="fit-parabola")
    n_opt, loss_opt = budget.get("n_opt"), budget.get("loss_opt")
    if not (finite(n_opt) and finite(loss_opt)):
        return False
    inside = not budget.get("outside_sampled", not (
        len(rows) and rows[s.n_col].min() <= float(n_opt) <= rows[s.n_col].max()))
    ax.plot(float(n_opt), float(loss_opt), "D", ms=7, mec="black", mew=1, mfc=color if inside else "white", zorder=4,
            gid="optimum" if inside else "optimum-outside")
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
    handles, labels = ax.get_legend_handles_labels()
    gids = artist_gids(fig)
    if "optimum" in gids:
        handles.append(Line2D([], [], marker="D", ls="none", mec="black", mfc="0.6"))
        labels.append("N_opt (minimum of the curve)")
    if outside:
        handles.append(Line2D([], [], marker="D", ls="none", mec="black", mfc="white"))
        labels.append("N_opt outside the sampled sizes")
    legend_outside(ax, handles, labels)
    return fig, ""


# ----------------------------------------------------------------------------- frontier

FRONTIER_PANELS = ("n_opt", "d_opt", "loss_pred")


def _approach2_optima(ax, a2: dict, quantity: str) -> None:
    """The IsoFLOP optima as diamonds, and on the N panel the Approach 2 line N_opt = G·C^a."""
    optima = [b for b in a2["budgets"] if finite(b.get(quantity))]
    if not optima:
        return
    ax.plot([b["flops"] for b in optima], [b[quantity] for b in optima], "D", color=DATA_COLOR,
            ms=6, label="IsoFLOP optimum (Approach 2)", gid="approach2-optima")
    if quantity == "n_opt" and finite(a2.get("G")) and finite(a2.get("a")) and len(optima) >= 2:
        flops = np.geomspace(min(b["flops"] for b in optima), max(b["flops"] for b in optima), 50)
        fit_line(ax, flops, float(a2["G"]) * flops ** float(a2["a"]), ":", color=DATA_COLOR, lw=1.2,
                 label="Approach 2 fit, N_opt = G·C^a", gid="fit-approach2")


def _law_frontier(ax, law: DrawnLaw, quantity: str, measured: tuple, top: float) -> None:
    """The law's optimum over the measured compute (solid) and beyond it (dashed)."""
    solid = "fit-approach3" if law.form == "chinchilla" else "fit-frontier"
    for lo, hi, style, text, gid in ((measured[0], measured[1], "-", law.legend, solid),
                                     (measured[1], top, "--", "extrapolation", "fit-extrapolation")):
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


def _frontier_note(s: Study, law: DrawnLaw | None, allocation) -> str:
    note = [] if law else [f"No fitted law: {clause(s.section('approach3')[1])}."]
    if law and law.fallback:
        note.append(f"The line is not the chosen form's: {law.fallback}.")
    if law and not allocation:
        note.append(f"No predicted budgets: {clause(s.section('allocation')[1])}.")
    if allocation and not any(a.get("n_opt_ci95") for a in allocation):
        note.append("fit.json gives no interval for N_opt and D_opt; the loss interval is the bootstrap's.")
    return " ".join(note)


def _allocation(s: Study) -> list[dict]:
    """fit.json's predicted budgets that name their compute."""
    return [a for a in (s.section("allocation")[0] or []) if finite(a.get("flops"))]


def _frontier_flops(s: Study) -> tuple[np.ndarray, tuple, float]:
    """(the budgets the frontier's line spans, the measured compute (lo, hi), the top of the axis)."""
    ok = s.ok
    measured = (ok[s.c_col].min(), ok[s.c_col].max()) if len(ok) else (np.nan, np.nan)
    top = max([measured[1]] + [float(a["flops"]) for a in _allocation(s)]) * 1.5
    flops = np.geomspace(measured[0], top, 50) if np.isfinite([measured[0], top]).all() else np.array([])
    return flops, measured, top


def fig_frontier(s: Study):
    a2 = s.section("approach2")[0]
    flops, measured, top = _frontier_flops(s)
    law = frontier_law(s.fit, flops)
    if law is None and a2 is None:
        raise CannotDraw(f"Neither Approach 3 nor Approach 2 was identified: {clause(s.section('approach3')[1])}.")
    allocation = _allocation(s)
    ok = s.ok
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.0))
    for ax, quantity in zip(axes, FRONTIER_PANELS):
        column = {"n_opt": s.n_col, "d_opt": s.d_col, "loss_pred": s.target}[quantity]
        ax.plot(ok[s.c_col], ok[column], "o", color="0.7", ms=4, label="runs")
        if a2 is not None and quantity != "loss_pred":
            _approach2_optima(ax, a2, quantity)
        if law is not None:
            _law_frontier(ax, law, quantity, measured, top)
        if allocation:
            _predicted_budgets(ax, allocation, quantity)
        if law is not None:  # the extrapolated stretch
            ax.axvspan(measured[1], top, color="0.5", alpha=0.06, lw=0)
        set_log(ax, x=s.c_col, y=column if quantity != "loss_pred" else None)
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


# ----------------------------------------------------------------------------- learning-rate sensitivity

def swept_keys(s: Study) -> list[str]:
    """The hyperparameters the fit was told were swept (fit.json settings.sweep_keys)."""
    keys = (s.fit.get("settings") or {}).get("sweep_keys") or (s.fit.get("selection") or {}).get("by") or []
    return [str(k) for k in keys] if isinstance(keys, list) else []


def hparam_groups(s: Study, key: str) -> list[dict]:
    """fit.json's per-(N, D) optima of one swept key (hyperparameters.<key>.groups), or []."""
    section = s.fit.get("hyperparameters")
    entry = section.get(key) if isinstance(section, dict) else None
    groups = entry.get("groups") if isinstance(entry, dict) else None
    return [g for g in groups if isinstance(g, dict)] if isinstance(groups, list) else []


def _fit_optimum(groups: list[dict], params: float, tokens: float) -> dict | None:
    """The fit's group for this size at this token count (params within 1 %, tokens within 10 %)."""
    near = [g for g in groups if finite(g.get("params")) and finite(g.get("tokens")) and finite(g.get("optimum"))
            and abs(float(g["params"]) / params - 1) < 0.01 and abs(float(g["tokens"]) / tokens - 1) < 0.10]
    return min(near, key=lambda g: abs(np.log(float(g["tokens"]) / tokens))) if near else None


def _lr_curve(rows: pd.DataFrame, target: str, others: list[str]) -> pd.DataFrame:
    """Loss per lr: averaged over seeds at each setting, then the best of the other swept keys."""
    by = ["lr", *others]
    mean = rows.groupby(by, dropna=False)[target].mean().reset_index()
    return mean.groupby("lr")[target].min().reset_index().sort_values("lr")


def fig_lr_sensitivity(s: Study):
    if "lr" not in swept_keys(s) or "lr" not in s.metrics.columns:
        raise CannotDraw("Nothing was swept over the learning rate (grid.sweep has no lr), so there is no "
                         "sensitivity to draw.")
    ok = s.ok.copy()
    ok["lr"] = pd.to_numeric(ok["lr"], errors="coerce")
    ok = ok[np.isfinite(ok["lr"]) & (ok["lr"] > 0)]
    if ok["lr"].nunique() < 2:
        raise CannotDraw("Fewer than two learning rates have finished runs, so there is no curve to draw.")
    # The largest D as the grid asked for it: a swept batch size rounds each run's D differently.
    d_col = "tokens_requested" if "tokens_requested" in ok.columns else s.d_col
    d_values = pd.to_numeric(ok[d_col], errors="coerce")
    if not np.isfinite(d_values).all():
        d_col, d_values = s.d_col, ok[s.d_col]
    top = d_values.max()
    rows = ok[np.isclose(d_values, top, rtol=1e-6)]
    others = [k for k in swept_keys(s) if k != "lr" and k in rows.columns]
    groups = hparam_groups(s, "lr")
    sizes = np.sort(rows[s.n_col].unique())
    names = s.model_names()
    fig, ax = plt.subplots()
    edges, from_data = [], []
    for size, color in zip(sizes, palette(len(sizes), MODEL_CMAP)):
        at_size = rows[rows[s.n_col] == size]
        curve = _lr_curve(at_size, s.target, others)
        ax.plot(curve["lr"], curve[s.target], "o-", color=color, lw=1.2, ms=4, label=size_label(names, size))
        group = _fit_optimum(groups, float(size), float(at_size[s.d_col].median()))
        if group is not None:
            x, y, edge = float(group["optimum"]), group.get("optimum_loss"), bool(group.get("edge"))
            y = float(y) if finite(y) else float(curve[s.target].min())
        else:  # the fit has no optimum here (e.g. fewer than 3 values): the lowest point, flagged at an edge
            best = int(np.argmin(curve[s.target].to_numpy(float)))
            x, y = float(curve["lr"].iloc[best]), float(curve[s.target].iloc[best])
            edge = len(curve) >= 2 and best in (0, len(curve) - 1)
            from_data.append(size_label(names, size))
        ax.plot(x, y, "D", ms=8, mec="black", mew=1, mfc="white" if edge else color, zorder=4,
                gid="edge" if edge else "optimum")
        if edge:
            edges.append(size_label(names, size))
            ax.annotate("edge", (x, y), xytext=(6, 6), textcoords="offset points", fontsize=8, color="0.25")
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate (lr)")
    ax.set_ylabel(label(s.target))
    ax.set_title(f"Loss vs learning rate at D = {human(top)} tokens")
    handles, labels = ax.get_legend_handles_labels()
    if len(edges) < len(sizes):
        handles.append(Line2D([], [], marker="D", ls="none", mec="black", mfc="0.6"))
        labels.append("optimum inside the sweep")
    if edges:
        handles.append(Line2D([], [], marker="D", ls="none", mec="black", mfc="white"))
        labels.append("optimum at an edge: widen the sweep")
    legend_outside(ax, handles, labels)
    note = []
    if edges:
        note.append(f"Optimum at an edge of the sweep (widen it there): {', '.join(edges)}.")
    if from_data:
        why = (s.fit.get("hyperparameters") or {}).get("lr_why") if isinstance(s.fit.get("hyperparameters"), dict) \
            else s.fit.get("hyperparameters_why")
        note.append(f"Marked at the lowest measured point, as fit.json has no lr optimum there"
                    f"{': ' + clause(why) if why else ''}: {', '.join(from_data)}.")
    return fig, " ".join(note)


# ----------------------------------------------------------------------------- training curves

def _curve_lines(ax_train, ax_val, s: Study, colors: dict, sizes: dict, status: dict):
    """Every run's train and val curves; returns (finished runs' smoothed train values, their val
    values, any val, window). A run that did not finish is dashed and may leave the axes
    (gid not-ok): its spike must not flatten the finished runs."""
    train_values, val_values, any_val, window = [], [], False, 1
    for run, curve in sorted(s.curves.items(), key=lambda item: (sizes.get(item[0]) or 0, item[0])):
        color = colors.get(sizes.get(run), "0.5")
        ok = status.get(run) == "ok"
        style, gid = ("-", None) if ok else ("--", "not-ok")
        window = max(1, len(curve) // 50)  # a light moving average: the trend, not the noise
        train = curve["train_loss"].rolling(window, min_periods=1, center=True).mean()
        ax_train.plot(curve["tokens"], train, style, color=color, lw=1, alpha=0.85, gid=gid)
        if ok:
            train_values.append(train.to_numpy(float))
        if "val_loss" in curve.columns and curve["val_loss"].notna().any():
            val = curve.dropna(subset=["val_loss"])
            ax_val.plot(val["tokens"], val["val_loss"], style, marker="o", ms=3, color=color, lw=1, alpha=0.85,
                        gid=gid or "validation")
            any_val = True
            if ok:
                val_values.append(val["val_loss"].to_numpy(float))
    return _finite(train_values), _finite(val_values), any_val, window


def _finite(arrays: list) -> np.ndarray:
    values = np.concatenate(arrays) if arrays else np.array([])
    return values[np.isfinite(values)]


def _scale_to(ax, values: np.ndarray) -> None:
    """y limits that hold every value (the finished runs'), with a margin."""
    if len(values):
        lo, hi = values.min(), values.max()
        pad = 0.03 * max(hi - lo, 0.05 * abs(hi))
        ax.set_ylim(lo - pad, hi + pad)


def fig_training_curves(s: Study):
    if not s.curves:
        raise CannotDraw("No run has a curve.csv with logged steps.")
    by_run = s.metrics.set_index("run")
    sizes, status = by_run[s.n_col].to_dict(), by_run["status"].to_dict()
    levels = sorted({sizes.get(run) for run in s.curves if finite(sizes.get(run))})
    colors = dict(zip(levels, palette(len(levels), MODEL_CMAP)))
    names = s.model_names()
    # Not sharing y: each panel holds all of its own points (validation losses can sit below the
    # smoothed training losses, and the best runs must stay visible).
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(12, 4.2))
    train_values, val_values, any_val, window = _curve_lines(ax_train, ax_val, s, colors, sizes, status)
    for level in levels:
        ax_train.plot([], [], "-", color=colors[level], label=size_label(names, level))
    if any(st != "ok" for run, st in status.items() if run in s.curves):
        ax_train.plot([], [], "--", color="0.5", label="not ok (diverged/failed)")
    _scale_to(ax_train, train_values)
    _scale_to(ax_val, val_values)
    for ax in (ax_train, ax_val):
        set_log(ax, x="tokens")
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("loss (nats/token)")
    ax_train.set_title(f"Training loss (moving average over {window} logged steps)" if window > 1 else "Training loss")
    ax_val.set_title("Validation loss")
    if not any_val:
        ax_val.text(0.5, 0.5, "no validation loss in curve.csv", ha="center", transform=ax_val.transAxes, color="0.3")
    legend_outside(ax_val, *ax_train.get_legend_handles_labels(), ncol=2 if len(levels) > 8 else 1)
    fig.tight_layout()
    return fig, ""


# ----------------------------------------------------------------------------- BLEU and ROUGE

SCORE_LABELS = {"bleu": "BLEU (sacreBLEU)", "rougeL": "ROUGE-L (F-measure)"}


def _score_panel(ax, s: Study, rows: pd.DataFrame, metric: str, x_col: str, levels) -> None:
    """One score against `x_col`: a line per token count on a grid, else points on a colorbar."""
    if x_col == s.n_col and rows[s.n_col].nunique() < 2:
        panel_note(ax, f"Only one model size has {SCORE_LABELS[metric].split(' (')[0]} scores: nothing to plot "
                       "against parameters.")
        return
    if 1 <= len(levels) <= MAX_LINES:
        for level, color in zip(levels, palette(len(levels), TOKENS_CMAP)):
            line = rows[rows[s.d_col] == level].sort_values(x_col)
            ax.plot(line[x_col], line[metric], "o-", color=color, lw=1, label=f"D = {human(level)} tokens")
        off_grid(ax, rows[~rows[s.d_col].isin(levels)], x_col, metric)
    else:
        points = ax.scatter(rows[x_col], rows[metric], c=rows[s.d_col], cmap=colormap(TOKENS_CMAP),
                            norm=LogNorm(rows[s.d_col].min(), rows[s.d_col].max()), s=22)
        colorbar(ax, points, s.d_col)
    set_log(ax, x=x_col)
    ax.set_xlabel(label(x_col))
    ax.set_ylabel(SCORE_LABELS[metric])


def fig_bleu_rouge(s: Study):
    ok = s.metrics[s.metrics["status"] == "ok"]
    metrics = [m for m in SCORE_LABELS if m in ok.columns and np.isfinite(ok[m]).any()]
    if not metrics:
        raise CannotDraw("No run has BLEU or ROUGE-L scores, so there is nothing to plot against size or compute.")
    fig, axes = plt.subplots(len(metrics), 2, figsize=(11, 3.6 * len(metrics)), squeeze=False)
    for row, metric in zip(axes, metrics):
        rows = ok[np.isfinite(ok[metric]) & (ok[s.n_col] > 0)]
        levels = grid_levels(rows, s.d_col, s.n_col)
        for ax, x_col in zip(row, (s.n_col, s.c_col)):
            _score_panel(ax, s, rows, metric, x_col, levels)
    axes[0][0].set_title("vs parameters")
    axes[0][1].set_title("vs compute")
    for ax in axes.flat:  # one legend, beside the first panel that has something to explain
        if ax.get_legend_handles_labels()[0]:
            legend_outside(axes[0][-1], *ax.get_legend_handles_labels())
            break
    fig.tight_layout()
    missing = set(SCORE_LABELS) - set(metrics)
    return fig, f"No run has {'BLEU' if 'bleu' in missing else 'ROUGE-L'} scores." if missing else ""


# ----------------------------------------------------------------------------- held-out check

def _holdout_panel(ax, s: Study, hold: dict) -> None:
    """Predicted against actual loss of the held-out runs, with the ±1 % band."""
    actual, predicted = np.array(hold["actual"], float), np.array(hold["predicted"], float)
    shown = [actual, predicted]  # the limits hold every point and every interval's end
    if hold.get("low") and hold.get("high"):  # the 95 % prediction interval of each prediction
        low, high = np.array(hold["low"], float), np.array(hold["high"], float)
        ax.errorbar(actual, predicted, yerr=[predicted - low, high - predicted], fmt="none", ecolor="C3",
                    alpha=0.6, capsize=3, label="95 % prediction interval")
        shown += [low, high]
    ax.plot(actual, predicted, "o", color="C3", ms=7, label="held-out runs")
    span = np.array([np.nanmin(np.concatenate(shown)), np.nanmax(np.concatenate(shown))])
    pad = max(0.02 * span.mean(), 0.15 * np.ptp(span))
    line = span + [-pad, pad]
    ax.plot(line, line, "-", color="0.5", lw=1, label="prediction = actual")
    ax.fill_between(line, line * 0.99, line * 1.01, color="0.5", alpha=0.12, lw=0, label="±1 %")
    if len(actual) <= 6:
        for run, x, y in zip(hold["held_out"], actual, predicted):
            ax.annotate(plain(run), (x, y), xytext=(5, -10), textcoords="offset points", fontsize=8)
    ax.set_xlim(*line)
    ax.set_ylim(*line)
    ax.set_aspect("equal")
    ax.set_xlabel(f"actual {label(s.target)}")
    ax.set_ylabel(f"predicted {label(s.target)}")
    ax.set_title(f"Held out, predicted from the rest: max |error| {percent(hold.get('max_abs_rel_error'))}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)  # below the axes: over no point


def _residual_panel(ax, s: Study, law: dict, hold: dict | None) -> None:
    """Relative residuals of the Approach 3 fit on every finished run, the held-out ones ringed."""
    ok = s.ok
    residual = 100 * (ok[s.target] / predict_loss(ok[s.n_col], ok[s.d_col], **law) - 1)
    names = s.model_names()
    levels = np.sort(ok[s.n_col].unique())
    for level, color in zip(levels, palette(len(levels), MODEL_CMAP)):
        mask = ok[s.n_col] == level
        ax.plot(ok.loc[mask, s.c_col], residual[mask], "o", color=color, label=size_label(names, level))
    held = ok["run"].isin([str(r) for r in (hold or {}).get("held_out") or []])
    if held.any():
        ax.plot(ok.loc[held, s.c_col], residual[held], "o", ms=11, mfc="none", mec="C3", label="held out in the check")
    ax.axhline(0, color="0.4", lw=1)
    set_log(ax, x=s.c_col)
    ax.set_xlabel(label(s.c_col))
    ax.set_ylabel("residual: actual / fit − 1 (%)")
    ax.set_title("Residuals of the Approach 3 fit (all runs)")
    legend_outside(ax, ncol=2 if len(levels) > 8 else 1)


def fig_holdout(s: Study):
    hold, hold_why = s.section("holdout")
    law, law_why = s.law(), s.section("approach3")[1]
    if hold is None and law is None:
        raise CannotDraw(f"No held-out check ({clause(hold_why)}) and no fitted law to take residuals from "
                         f"({clause(law_why)}).")
    fig, (ax_hold, ax_res) = plt.subplots(1, 2, figsize=(11.5, 4.3))
    if hold is None or not hold.get("held_out"):
        panel_note(ax_hold, sentence(hold_why or "No run was held out."))
    else:
        _holdout_panel(ax_hold, s, hold)
    if law is None:
        panel_note(ax_res, sentence(law_why))
    else:
        _residual_panel(ax_res, s, law, hold)
    fig.tight_layout()
    return fig, ""


# ----------------------------------------------------------------------------- residuals by law form

def fig_law_residuals(s: Study):
    """Relative residual of every finished run against N and against D, one column per fitted form."""
    from ..law import FORMS

    forms = {k: v for k, v in (s.fit.get("forms") or {}).items()
             if isinstance(v, dict) and v.get("fitted") and k in FORMS}
    if not forms:
        raise CannotDraw(f"No law form was fitted: {clause(s.fit.get('chosen_form_why') or 'fit.json has no forms')}.")
    ok = s.ok
    fig, axes = plt.subplots(2, len(forms), figsize=(4.2 * len(forms), 6.4), squeeze=False, sharey=True)
    names = s.model_names()
    for col, (name, section) in enumerate(forms.items()):
        form = FORMS[name]
        unique = ok["unique_tokens"].to_numpy(float) if "unique_tokens" in ok.columns else None
        if form.needs and unique is None:
            for row in range(2):
                panel_note(axes[row, col], f"{name}: needs unique_tokens")
            continue
        with np.errstate(all="ignore"):
            predicted = form.loss(section["params"], ok[s.n_col].to_numpy(float), ok[s.d_col].to_numpy(float), unique)
        residual = 100 * (ok[s.target].to_numpy(float) / predicted - 1)
        for row, (x_col, by_col, cmap) in enumerate(((s.n_col, s.d_col, TOKENS_CMAP), (s.d_col, s.n_col, MODEL_CMAP))):
            ax = axes[row, col]
            levels = np.sort(ok[by_col].unique())
            for level, color in zip(levels, palette(len(levels), cmap)):
                rows = np.flatnonzero((ok[by_col] == level).to_numpy())
                rows = rows[np.argsort(ok[x_col].to_numpy(float)[rows], kind="stable")]
                shown = size_label(names, level) if by_col == s.n_col else f"D = {human(level)}"
                ax.plot(ok[x_col].to_numpy(float)[rows], residual[rows], "o-", color=color, ms=4, lw=0.8, label=shown)
            ax.axhline(0, color="0.4", lw=1)
            set_log(ax, x=x_col)
            ax.set_xlabel(label(x_col))
            if col == 0:
                ax.set_ylabel("actual / law − 1 (%)")
            chosen = " (chosen)" if name == s.fit.get("chosen_form") else ""
            ax.set_title(f"{name}{chosen}: against {'N' if row == 0 else 'D'}", fontsize=10)
            if col == len(forms) - 1 and len(levels) <= 8:
                legend_outside(ax, fontsize=7)  # beside the last panel: over no point
    fig.tight_layout()
    rms = ", ".join(f"{k} {100 * v.get('residual_sigma', float('nan')):.2f} %" for k, v in forms.items()
                    if finite(v.get("residual_sigma")))
    return fig, f"Residual scatter (RMS of log residuals): {rms}." if rms else ""
