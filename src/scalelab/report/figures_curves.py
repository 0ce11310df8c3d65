"""The curve laws' forecast (`scalelab curves`): per model size, the measured val curves, the chosen
law along every schedule of the grid, and its predicted final loss at every D with its 95 % interval
beside the measured final loss of the cooldowns that were trained."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt

from .fmt import clause
from .inputs import Study
from .plotting import TOKENS_CMAP, CannotDraw, legend_outside, palette, set_log


def _panel(ax, s: Study, model: str, records: list[dict], law_curves: dict) -> None:
    colors = dict(zip([r["run"] for r in records], palette(len(records), TOKENS_CMAP)))
    for r in records:
        color = colors[r["run"]]
        curve = s.curves.get(r["run"])
        if curve is not None and "val_loss" in curve.columns:
            val = curve.dropna(subset=["val_loss"])
            ax.plot(val["tokens"], val["val_loss"], "o", ms=2.5, color=color, alpha=0.6)
        line = law_curves.get(r["run"])
        if line:
            ax.plot(line["tokens"], line["loss"], "-" if r["used"] else "--", lw=1, color=color, alpha=0.9)
        ax.errorbar(
            [r["tokens"]],
            [r["loss"]],
            yerr=[[r["loss"] - r["low"]], [r["high"] - r["loss"]]],
            fmt="D",
            mfc="none",
            color=color,
            ms=6,
            capsize=3,
            gid="predicted",
        )
        if r["observed"] is not None:
            ax.plot(
                [r["tokens"]],
                [r["observed"]],
                "*" if r["used"] else "o",
                color=color,
                ms=8 if r["used"] else 5,
                mec="black",
                mew=0.5,
                gid="measured",
            )
    set_log(ax, x="tokens")
    ax.set_title(f"model {model}")
    ax.set_xlabel("training tokens")


def fig_curve_forecast(s: Study):
    data = s.curve_laws
    if data is None:
        raise CannotDraw("No curve laws were fitted (`scalelab curves`; config fit.curves: true).")
    grid = data.get("grid") or []
    models = sorted({r["model"] for r in grid})
    if not models:
        raise CannotDraw(f"The curve laws predict no run of the grid ({clause(data.get('why') or 'no size fitted')}).")
    cols = min(len(models), 2)
    rows = math.ceil(len(models) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols + 1.5, 3.4 * rows), squeeze=False, sharey=False)
    for ax, model in zip(axes.flat, models):
        _panel(ax, s, model, [r for r in grid if r["model"] == model], data.get("law_curves") or {})
    for ax in list(axes.flat)[len(models) :]:
        ax.set_visible(False)
    axes[0][0].set_ylabel(data.get("target", "val_loss"))
    last = axes.flat[len(models) - 1]
    last.plot([], [], "-", color="0.3", label=f"{data['chosen']} law, fitted curve")
    last.plot([], [], "--", color="0.3", label="law, schedule not fitted")
    last.plot([], [], "D", mfc="none", color="0.3", label="predicted final, 95 % interval")
    last.plot([], [], "*", color="0.3", mec="black", label="measured final, fitted")
    last.plot([], [], "o", color="0.3", mec="black", label="measured final, held out")
    legend_outside(last)
    fig.tight_layout()
    return fig, f"Law chosen: {data['chosen']} ({data.get('why', '')})."
