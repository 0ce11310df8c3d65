"""Figures of the runs themselves: every run's training and validation curve, and the BLEU and
ROUGE-L of its greedy generations (the sections "Training" and "Generation quality")."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm

from .fmt import finite, human, label
from .inputs import Study
from .score_noise import score_intervals
from .plotting import (
    MAX_LINES,
    MODEL_CMAP,
    TOKENS_CMAP,
    CannotDraw,
    colorbar,
    colormap,
    grid_levels,
    legend_outside,
    off_grid,
    palette,
    panel_note,
    set_log,
    size_label,
)


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
            ax_val.plot(
                val["tokens"],
                val["val_loss"],
                style,
                marker="o",
                ms=3,
                color=color,
                lw=1,
                alpha=0.85,
                gid=gid or "validation",
            )
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


def _noise_bars(ax, rows: pd.DataFrame, metric: str, x_col: str, intervals: dict) -> None:
    """Each run's 95 % interval over its prompts (score_noise), as a vertical bar (gid prompt-noise)."""
    bars = [
        (x, y, intervals[run][metric]) for run, x, y in zip(rows["run"], rows[x_col], rows[metric]) if run in intervals
    ]
    if bars:
        x, y, spans = zip(*bars)
        low = np.maximum(np.subtract(y, [span[0] for span in spans]), 0)
        high = np.maximum(np.subtract([span[1] for span in spans], y), 0)
        ax.errorbar(x, y, yerr=[low, high], fmt="none", ecolor="0.6", elinewidth=0.8, capsize=2, gid="prompt-noise")


def noise_note(rows: pd.DataFrame, metric: str, intervals: dict) -> str:
    """One sentence when the runs' scores differ by less than a typical run's own interval."""
    widths = [intervals[run][metric][1] - intervals[run][metric][0] for run in rows["run"] if run in intervals]
    if not widths or len(rows) < 2:
        return ""
    spread, typical = float(rows[metric].max() - rows[metric].min()), float(np.median(widths))
    prompts = int(np.median([intervals[run]["prompts"] for run in rows["run"] if run in intervals]))
    name = SCORE_LABELS[metric].split(" (")[0]
    if spread <= typical:
        return (
            f"{name} varies across runs by {spread:.3g}, less than one run's typical 95 % interval over its "
            f"{prompts} prompts ({typical:.3g}): at this size these differences are sampling noise, not a trend."
        )
    return f"{name}: the runs span {spread:.3g}; a run's typical 95 % interval over {prompts} prompts is {typical:.3g}."


def _score_panel(ax, s: Study, rows: pd.DataFrame, metric: str, x_col: str, levels, intervals: dict) -> None:
    """One score against `x_col`: a line per token count on a grid, else points on a colorbar."""
    if x_col == s.n_col and rows[s.n_col].nunique() < 2:
        panel_note(
            ax,
            f"Only one model size has {SCORE_LABELS[metric].split(' (')[0]} scores: nothing to plot "
            "against parameters.",
        )
        return
    if 1 <= len(levels) <= MAX_LINES:
        for level, color in zip(levels, palette(len(levels), TOKENS_CMAP)):
            line = rows[rows[s.d_col] == level].sort_values(x_col)
            ax.plot(line[x_col], line[metric], "o-", color=color, lw=1, label=f"D = {human(level)} tokens")
        off_grid(ax, rows[~rows[s.d_col].isin(levels)], x_col, metric)
    else:
        points = ax.scatter(
            rows[x_col],
            rows[metric],
            c=rows[s.d_col],
            cmap=colormap(TOKENS_CMAP),
            norm=LogNorm(rows[s.d_col].min(), rows[s.d_col].max()),
            s=22,
        )
        colorbar(ax, points, s.d_col)
    _noise_bars(ax, rows, metric, x_col, intervals)
    set_log(ax, x=x_col)
    ax.set_xlabel(label(x_col))
    ax.set_ylabel(SCORE_LABELS[metric])


def fig_bleu_rouge(s: Study):
    ok = s.metrics[s.metrics["status"] == "ok"]
    metrics = [m for m in SCORE_LABELS if m in ok.columns and np.isfinite(ok[m]).any()]
    if not metrics:
        raise CannotDraw("No run has BLEU or ROUGE-L scores, so there is nothing to plot against size or compute.")
    fig, axes = plt.subplots(len(metrics), 2, figsize=(11, 3.6 * len(metrics)), squeeze=False)
    signatures = dict(zip(ok["run"], ok["bleu_signature"])) if "bleu_signature" in ok.columns else {}
    intervals = score_intervals(s.runs_dir, ok["run"], signatures) if s.runs_dir is not None else {}
    notes = []
    for row, metric in zip(axes, metrics):
        rows = ok[np.isfinite(ok[metric]) & (ok[s.n_col] > 0)]
        levels = grid_levels(rows, s.d_col, s.n_col)
        for ax, x_col in zip(row, (s.n_col, s.c_col)):
            _score_panel(ax, s, rows, metric, x_col, levels, intervals)
        notes.append(noise_note(rows, metric, intervals))
    axes[0][0].set_title("vs parameters")
    axes[0][1].set_title("vs compute")
    for ax in axes.flat:  # one legend, beside the first panel that has something to explain
        if ax.get_legend_handles_labels()[0]:
            legend_outside(axes[0][-1], *ax.get_legend_handles_labels())
            break
    fig.tight_layout()
    missing = set(SCORE_LABELS) - set(metrics)
    if missing:
        notes.append(f"No run has {'BLEU' if 'bleu' in missing else 'ROUGE-L'} scores.")
    return fig, " ".join(note for note in notes if note)
