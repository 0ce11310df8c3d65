"""Power laws in one variable: L = E + A·N^-alpha at the largest token count, and
L = E + B·D^-beta at the largest model size, for fit.json's `power_law_N` and `power_law_D`.

Each slice is fitted twice: with the irreducible term E by scipy's nonlinear least squares, and
as a pure power law in log-log space by statsmodels OLS and RLM (Huber's T), whose summaries go
to fit.txt.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from scipy.optimize import curve_fit

from .common import SIZE_TOLERANCE, cluster, safe_exp, n_distinct

# fit.json key, the size that varies, the one held fixed, the coefficient's name, the size's
# symbol in fit.txt, the exponent's name
POWER_LAWS = (
    ("power_law_N", "params", "tokens", "A", "N", "alpha"),
    ("power_law_D", "tokens", "params", "B", "D", "beta"),
)


def _power_law(log_size, E, log_A, exponent):
    return E + np.exp(log_A - exponent * log_size)


def fit_power_law(size, loss, names=("A", "k")) -> tuple[dict, list[str]]:
    """L = E + A·size^-k by scipy least squares, and log L = log A - k·log size by statsmodels
    OLS and RLM (Huber's T). Returns the section dict and the statsmodels summaries."""
    size, loss = np.asarray(size, float), np.asarray(loss, float)
    x, y = np.log(size), np.log(loss)
    ols, rlm, summaries = _loglog_fits(x, y, names)
    section = {
        **_nonlinear_fit(x, loss),
        "n_points": len(loss),
        "loglog_ols": _loglog_section(ols, float(ols.rsquared)),
        "loglog_rlm": _loglog_section(rlm, None),
    }
    return section, summaries


def _loglog_fits(x, y, names):
    """The pure power law in log-log space, the linear model statsmodels is for: OLS, RLM (None if
    it fails) and their summaries."""
    summaries = []
    X = sm.add_constant(x)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        ols = sm.OLS(y, X).fit()
        summaries.append(str(ols.summary(yname="log loss", xname=[f"log {names[0]}", f"-{names[1]}"])))
        try:
            rlm = sm.RLM(y, X, M=sm.robust.norms.HuberT()).fit()
            summaries.append(str(rlm.summary(yname="log loss", xname=[f"log {names[0]}", f"-{names[1]}"])))
        except (ValueError, ZeroDivisionError, np.linalg.LinAlgError):
            rlm = None
    return ols, rlm, summaries


def _loglog_section(result, r2) -> dict | None:
    """A, exponent, their 95 % intervals and R2 of one log-log fit (None if it has no finite fit)."""
    if result is None or not np.all(np.isfinite(result.params)):
        return None
    ci = np.asarray(result.conf_int(0.05))
    ok = np.all(np.isfinite(ci))
    return {
        "A": safe_exp(result.params[0]),
        "exponent": -float(result.params[1]),
        "ci95": {
            "A": [safe_exp(ci[0, 0]), safe_exp(ci[0, 1])] if ok else None,
            "exponent": [-float(ci[1, 1]), -float(ci[1, 0])] if ok else None,
        },
        "r2": r2,
    }


def _nonlinear_fit(x, loss) -> dict:
    """With an irreducible term: nonlinear least squares from a few E guesses, best kept; E, A,
    exponent, R2 and t-based 95 % intervals (all None if no start converged)."""
    best = None
    for fraction in (0.0, 0.5, 0.8, 0.95):
        E0 = fraction * loss.min()
        start_fit = np.polyfit(x, np.log(loss - E0), 1)
        p0 = [E0, start_fit[1], max(-start_fit[0], 1e-3)]
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                bounds = ([0, -np.inf, 0], [loss.min(), np.inf, np.inf])  # 0 <= E <= min loss, k >= 0
                popt, pcov = curve_fit(_power_law, x, loss, p0=p0, bounds=bounds, max_nfev=10_000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((_power_law(x, *popt) - loss) ** 2))
        if best is None or sse < best[0]:
            best = (sse, popt, pcov)
    dof = len(loss) - 3
    nonlinear = {"E": None, "A": None, "exponent": None, "ci95": {}, "r2": None}
    if best is not None:
        sse, (E, log_A, exponent), pcov = best
        sst = float(np.sum((loss - loss.mean()) ** 2))
        nonlinear = {
            "E": float(E),
            "A": safe_exp(log_A),
            "exponent": float(exponent),
            "r2": 1 - sse / sst if sst > 0 else None,
        }
        # A parameter on an active bound (E at 0 or at the lowest loss, the exponent at 0) has no
        # covariance interval: the symmetric t interval would cross the bound (E [-2.7, 2.7]).
        tiny = 1e-9 * float(loss.min())
        at_bound = [
            name
            for name, on in (("E", E <= tiny or E >= float(loss.min()) - tiny), ("exponent", exponent <= 1e-9))
            if on
        ]
        nonlinear["at_bound"] = at_bound
        se = np.sqrt(np.diag(pcov)) if np.all(np.isfinite(pcov)) else np.full(3, np.nan)
        if dof >= 1 and np.all(np.isfinite(se)):
            t = stats.t.ppf(0.975, dof)
            nonlinear["ci95"] = {
                "E": [max(E - t * se[0], 0.0), min(E + t * se[0], float(loss.min()))],
                "A": [safe_exp(log_A - t * se[1]), safe_exp(log_A + t * se[1])],
                "exponent": [max(exponent - t * se[2], 0.0), exponent + t * se[2]],
            }
            for name in at_bound:
                nonlinear["ci95"][name] = None
        else:
            nonlinear["ci95"] = {"E": None, "A": None, "exponent": None}
    return nonlinear


def _slice_power_law(points, vary, fixed, coefficient, exponent):
    """Fit the one-variable law at the largest `fixed` value that has 3 or more `vary` sizes."""
    labels = cluster(points[fixed], SIZE_TOLERANCE)
    for label in np.unique(labels)[::-1]:  # labels grow with the value: largest slice first
        slice_ = points[labels == label]
        if n_distinct(slice_[vary]) >= 3:
            section, summaries = fit_power_law(slice_[vary], slice_["loss"], (coefficient, exponent))
            names = {"A": coefficient, "exponent": exponent}  # the contract's names for this slice

            def rename(d):
                return {
                    names.get(k, k): rename(v)
                    if isinstance(v, dict)
                    else [names.get(x, x) for x in v]
                    if k == "at_bound"
                    else v
                    for k, v in d.items()
                }

            return {f"slice_{fixed}": float(slice_[fixed].median()), **rename(section)}, summaries, None
    return None, [], f"no {fixed} value has runs at 3 or more distinct {vary} values"


def power_law_sections(points: pd.DataFrame) -> list[tuple[tuple, dict | None, list[str], str | None]]:
    """For each of POWER_LAWS: its spec, the fit.json section (None if not fitted), the
    statsmodels summaries and why not."""
    out = []
    for spec in POWER_LAWS:
        key, vary, fixed, coefficient, symbol, exponent = spec
        section, summaries, why = (
            _slice_power_law(points, vary, fixed, coefficient, exponent)
            if len(points)
            else (None, [], "no usable rows")
        )
        out.append((spec, section, summaries, why))
    return out
