"""Figures that check the law: the held-out runs predicted from the rest with the residuals of
the law the report draws (the chosen form, `drawn_law.curve_law`), and the residuals of every
fitted law form (the section "Held-out check"). The laws are scalelab.laws.law's, the one copy that
fit uses too."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .drawn_law import DrawnLaw, curve_law
from .fmt import clause, finite, human, label, percent, sentence
from .inputs import Study
from .plotting import (
    MODEL_CMAP,
    TOKENS_CMAP,
    CannotDraw,
    legend_outside,
    palette,
    panel_note,
    plain,
    set_log,
    size_label,
)


# ----------------------------------------------------------------------------- held-out check


def _holdout_panel(ax, s: Study, hold: dict) -> None:
    """Predicted against actual loss of the held-out runs, with the ±1 % band."""
    actual, predicted = np.array(hold["actual"], float), np.array(hold["predicted"], float)
    shown = [actual, predicted]  # the limits hold every point and every interval's end
    if hold.get("low") and hold.get("high"):  # the 95 % prediction interval of each prediction
        low, high = np.array(hold["low"], float), np.array(hold["high"], float)
        ax.errorbar(
            actual,
            predicted,
            yerr=[predicted - low, high - predicted],
            fmt="none",
            ecolor="C3",
            alpha=0.6,
            capsize=3,
            label="95 % prediction interval",
        )
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


def _residual_panel(ax, s: Study, law: DrawnLaw, hold: dict | None) -> None:
    """Relative residuals of the drawn law on every finished run, the held-out ones ringed."""
    ok = s.ok
    residual = 100 * (ok[s.target] / law.loss(ok[s.n_col].to_numpy(float), ok[s.d_col].to_numpy(float)) - 1)
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
    ax.set_title(f"Residuals of the {law.form} law (all runs)")
    legend_outside(ax, ncol=2 if len(levels) > 8 else 1)


def fig_holdout(s: Study):
    hold, hold_why = s.section("holdout")
    law = curve_law(s.fit)
    law_why = s.fit.get("chosen_form_why") or s.section("approach3")[1]
    if hold is None and law is None:
        raise CannotDraw(
            f"No held-out check ({clause(hold_why)}) and no fitted law to take residuals from ({clause(law_why)})."
        )
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
    from ..laws.law import FORMS

    forms = {
        k: v for k, v in (s.fit.get("forms") or {}).items() if isinstance(v, dict) and v.get("fitted") and k in FORMS
    }
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
    rms = ", ".join(
        f"{k} {100 * v.get('residual_sigma', float('nan')):.2f} %"
        for k, v in forms.items()
        if finite(v.get("residual_sigma"))
    )
    return fig, f"Residual scatter (RMS of log residuals): {rms}." if rms else ""
