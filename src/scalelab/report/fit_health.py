"""Fit health for the summary and the page: whether each reported form's optimiser converged, the
chosen law's worst in-sample residual and its run (the law should pass through the runs the
extrapolation starts from), and how many runs the held-out check rests on.
"""

from __future__ import annotations


import numpy as np
import pandas as pd

from ..laws.law import FORMS

from .fmt import clause, percent

RESIDUALS_FILE = "residuals.csv"  # scalelab fit's per-run residuals of every form
FEW_HELD_OUT = 3  # below this many runs the held-out check is a spot check, not a measure


def worst_residual(s) -> tuple[str, float] | None:
    """(run, relative residual actual/predicted − 1) of the chosen form's largest |residual| over the
    runs with a usable target: residuals.csv where the fit wrote one, else from the law's parameters."""
    chosen = s.fit.get("chosen_form")
    if not chosen or chosen not in FORMS:
        return None
    path = s.fit_path.parent / RESIDUALS_FILE
    if path.is_file():
        try:
            table = pd.read_csv(path)
            rows = table[table["form"] == chosen]
            runs, values = rows["run"].astype(str), pd.to_numeric(rows["rel_residual"], errors="coerce")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, KeyError, UnicodeDecodeError):
            return None
    elif FORMS[chosen].needs:  # a form that needs unique tokens: no residuals without the fit's own table
        return None
    else:
        ok = s.ok
        params = (s.fit.get("forms") or {}).get(chosen, {}).get("params") or {}
        with np.errstate(all="ignore"):
            predicted = FORMS[chosen].loss(params, ok[s.n_col].to_numpy(float), ok[s.d_col].to_numpy(float))
        runs, values = ok["run"].astype(str), pd.Series(ok[s.target].to_numpy(float) / predicted - 1, index=ok.index)
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    at = values.abs().idxmax()
    return runs[at], float(values[at])


def fit_health_lines(s) -> list[str]:
    """The summary's lines: a WARNING per form that did not converge, then one `fit health` line."""
    lines = []
    for name, section in (s.fit.get("forms") or {}).items():
        if isinstance(section, dict) and section.get("fitted") and section.get("converged") is False:
            message = str(section.get("optimizer_message") or "").strip() or "no message"
            lines.append(
                f"  WARNING       {name}: the optimiser did NOT converge ({clause(message)}); "
                "its parameters, weight and intervals are uncertain"
            )
    parts = []
    worst = worst_residual(s)
    if worst is not None:
        run, value = worst
        parts.append(f"worst in-sample residual {percent(value)} ({s.fit.get('chosen_form')}) on {run}")
    hold = s.fit.get("holdout")
    if isinstance(hold, dict):
        n = len(hold.get("held_out") or [])
        parts.append(
            f"held-out check on {n} run{'s' if n != 1 else ''}"
            + (" (a spot check, not a measure of the extrapolation)" if n < FEW_HELD_OUT else "")
        )
    if parts:
        lines.append("  fit health    " + "; ".join(parts))
    return lines
