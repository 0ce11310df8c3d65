"""The "Downstream metrics" figure: one panel per evaluation metric with a law in fit.json's
`metrics` (scalelab fit --metrics): the runs, the chosen law at each run and on to the next
budgets, and its forecasts with their 95 % intervals, or the NOT PREDICTABLE verdict."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..errors import ScalelabError
from ..laws.fitted_metrics import MetricLaw, forecast_methods
from .inputs import Study
from .plotting import CannotDraw, set_log

COLUMNS = 2


def _law_path(entry: dict, top: pd.Series, n_col: str, d_col: str):
    """(N, D) from the largest run to each forecast, geometric in between (the law's curve)."""
    params, tokens = [float(top[n_col])], [float(top[d_col])]
    for f in entry["forecasts"]:
        params.append(f["params"])
        tokens.append(f["tokens"])
    steps = np.linspace(0, 1, 12)
    path_n = np.concatenate([np.exp(np.log(a) + steps * (np.log(b) - np.log(a))) for a, b in zip(params, params[1:])])
    path_d = np.concatenate([np.exp(np.log(a) + steps * (np.log(b) - np.log(a))) for a, b in zip(tokens, tokens[1:])])
    return path_n, path_d


def _panel(ax, s: Study, name: str, entry: dict) -> None:
    rows = s.ok[np.isfinite(pd.to_numeric(s.ok.get(name), errors="coerce"))] if name in s.ok.columns else s.ok[:0]
    compute = 6.0 * rows[s.n_col] * rows[s.d_col]
    ax.scatter(compute, rows[name], s=18, color="C0", label="runs")
    ax.set_title(f"{name} ({entry['kind']})", fontsize=10)
    set_log(ax, x="flops")
    ax.set_xlabel("compute C = 6·N·D (FLOPs)")
    if not entry.get("predictable"):
        ax.text(
            0.02, 0.97, textwrap.fill(entry["verdict"], 60), transform=ax.transAxes, va="top", fontsize=8, color="C3"
        )
        return
    try:
        law = MetricLaw(name, entry, pd.DataFrame(), entry.get("range"))
    except ScalelabError:
        return
    fitted = law.point(rows[s.n_col].to_numpy(float), rows[s.d_col].to_numpy(float))
    ax.scatter(compute, fitted, s=22, facecolors="none", edgecolors="C1", label=f"law ({forecast_methods(entry)})")
    if entry["forecasts"] and len(rows):
        path_n, path_d = _law_path(entry, rows.loc[compute.idxmax()], s.n_col, s.d_col)
        ax.plot(6 * path_n * path_d, law.point(path_n, path_d), "-", color="C1", lw=1)
        for f in entry["forecasts"]:
            low, high = f["ci95"]
            ax.errorbar(
                [f["flops"]],
                [f["value"]],
                yerr=[[f["value"] - low], [high - f["value"]]],
                fmt="D",
                color="C1",
                capsize=3,
                label=None,
            )
            ax.annotate(
                f"{f['value']:.3g} [{low:.3g}, {high:.3g}]",
                (f["flops"], f["value"]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )


def fig_metric_laws(s: Study):
    metrics = s.fit.get("metrics") or {}
    if not metrics:
        raise CannotDraw("The fit has no metric laws (scalelab fit --metrics COL ...).")
    rows = (len(metrics) + COLUMNS - 1) // COLUMNS
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(11, 3.4 * rows), squeeze=False)
    for ax, (name, entry) in zip(axes.flat, metrics.items()):
        _panel(ax, s, name, entry)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_axis_off()
    for ax in axes.flat:  # one legend, in the first panel with a law drawn
        if len(ax.get_legend_handles_labels()[0]) > 1:
            ax.legend(fontsize=8, loc="lower left")
            break
    fig.tight_layout()
    flagged = [n for n, e in metrics.items() if not e.get("predictable")]
    return fig, (f"Not predictable at this scale: {', '.join(flagged)}." if flagged else "")
