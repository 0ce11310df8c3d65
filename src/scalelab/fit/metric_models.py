"""Fitting the metric laws of scalelab.laws.fitted_metrics to runs: `fit_method(method, spec, runs)`.

- Step one of the two-step method, the task loss L(N, D) = E + A/N^alpha + B/D^beta: least
  squares on log L (scipy.optimize.least_squares, positive parameters in log form, N and D scaled
  by their geometric means, a few starts).
- The sigmoid link lo + (hi - lo)·sigmoid(k (x - x0)): least squares in the metric's units (the
  evaluation noise of an accuracy is additive), lo the floor (chance), hi fitted in
  [lo + (max - lo)/2, scale] unless the spec gives the ceiling, |k| at most 30 per range of x so a
  fit through runs at chance cannot degenerate into a step.
- The loglinear link ln m = a + b ln x: statsmodels OLS.
- direct_nd, lo + (hi - lo)·exp(-(A/N^alpha + B/D^beta)): least squares in the metric's units.

`runs` is a DataFrame with params, tokens, the metric column and, for two-step, the task-loss
column `spec.via` (else `loss`). A fit that fails returns None.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from ..laws.fitted_metrics import LINK_PARAMS, STEP1_PARAMS, metric_values, method_params
from .metric_spec import MetricSpec

MAX_STEEPNESS = 30.0  # |k| · (range of x) at most this: steep, but never a step between two runs
STEP1_STARTS = ((0.3, 0.3), (0.6, 0.3), (0.3, 0.6))  # (alpha, beta) starts of step one


def task_loss_column(spec: MetricSpec) -> str:
    return spec.via or "loss"


def fit_task_loss(params, tokens, loss, start: dict | None = None) -> dict | None:
    """E, A, alpha, B, beta of the task loss, least squares on log loss; None if it fails."""
    params, tokens, loss = (np.asarray(v, float) for v in (params, tokens, loss))
    n0, d0 = np.exp(np.mean(np.log(params))), np.exp(np.mean(np.log(tokens)))
    n, d, target = params / n0, tokens / d0, np.log(loss)

    def residuals(theta):
        e, a, alpha, b, beta = np.exp(theta[0]), np.exp(theta[1]), theta[2], np.exp(theta[3]), theta[4]
        with np.errstate(all="ignore"):
            return np.log(e + a * n**-alpha + b * d**-beta) - target

    low, high = loss.min(), loss.max()
    starts = []
    if start is not None:
        starts.append(
            [
                np.log(start["E"]),
                np.log(start["A"] * n0 ** -start["alpha"]),
                start["alpha"],
                np.log(start["B"] * d0 ** -start["beta"]),
                start["beta"],
            ]
        )
    else:
        spread = max(high - low, 1e-3 * high)
        starts += [[np.log(0.8 * low), np.log(spread / 2), a, np.log(spread / 2), b] for a, b in STEP1_STARTS]
    bounds = ([np.log(1e-6 * low), -30, 0.0, -30, 0.0], [np.log(low * 1.2), 30, 3.0, 30, 3.0])
    best = _least_squares(residuals, starts, bounds, margin=1e-9)
    if best is None:
        return None
    e, a, alpha, b, beta = best.x
    return {
        "E": float(np.exp(e)),
        "A": float(np.exp(a) * n0**alpha),
        "alpha": float(alpha),
        "B": float(np.exp(b) * d0**beta),
        "beta": float(beta),
    }


def _sigmoid_starts(x, y, lo, hi):
    centre, width = np.median(x), max(np.ptp(x), 1e-9)
    sign = 1.0 if np.corrcoef(x, y)[0, 1] >= 0 or not np.isfinite(np.corrcoef(x, y)[0, 1]) else -1.0
    return [(hi, sign * 4 / width, centre), (hi, sign * 8 / width, x.max()), (hi, sign * 2 / width, x.min())]


def fit_sigmoid(x, y, spec: MetricSpec, start: dict | None = None) -> dict | None:
    """lo, hi, k, x0 of the sigmoid link; lo the floor, hi the given ceiling or fitted."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    lo, width = spec.floor, max(np.ptp(x), 1e-9)
    top = max(y.max(), lo + 1e-6 * spec.scale)
    hi_bounds = (lo + (top - lo) / 2, spec.scale) if spec.ceiling is None else (spec.ceiling - 1e-12, spec.ceiling)
    k_max = MAX_STEEPNESS / width
    bounds = ([hi_bounds[0], -k_max, x.min() - 3 * width], [hi_bounds[1], k_max, x.max() + 3 * width])

    def residuals(theta):
        with np.errstate(all="ignore"):
            return lo + (theta[0] - lo) / (1 + np.exp(-theta[1] * (x - theta[2]))) - y

    hi0 = min(spec.scale, top + 0.1 * (spec.scale - top)) if spec.ceiling is None else spec.ceiling
    starts = [(start["hi"], start["k"], start["x0"])] if start else _sigmoid_starts(x, y, lo, hi0)
    best = _least_squares(residuals, starts, bounds)
    if best is None:
        return None
    return {"lo": float(lo), "hi": float(best.x[0]), "k": float(best.x[1]), "x0": float(best.x[2])}


def fit_direct_nd(params, tokens, y, spec: MetricSpec, start: dict | None = None) -> dict | None:
    """hi, A, alpha, B, beta of lo + (hi - lo)·exp(-(A/N^alpha + B/D^beta)) (Krajewski et al.'s
    law across token-to-parameter ratios, with the floor and a ceiling), least squares in the
    metric's units, N and D scaled by their geometric means; a loss gets the task-loss law itself."""
    if spec.link == "loglinear":
        return fit_task_loss(params, tokens, y, start)
    params, tokens, y = (np.asarray(v, float) for v in (params, tokens, y))
    n0, d0 = np.exp(np.mean(np.log(params))), np.exp(np.mean(np.log(tokens)))
    n, d, lo = params / n0, tokens / d0, spec.floor
    top = max(y.max(), lo + 1e-6 * spec.scale)
    hi_bounds = (lo + (top - lo) / 2, spec.scale) if spec.ceiling is None else (spec.ceiling - 1e-12, spec.ceiling)

    def residuals(theta):
        with np.errstate(all="ignore"):
            gap = np.exp(theta[1]) * n ** -theta[2] + np.exp(theta[3]) * d ** -theta[4]
            return lo + (theta[0] - lo) * np.exp(-gap) - y

    hi0 = min(spec.scale, top + 0.1 * (spec.scale - top)) if spec.ceiling is None else spec.ceiling
    mean_gap = -np.log(np.clip((np.mean(y) - lo) / (hi0 - lo), 1e-3, 0.999))
    if start is not None:
        starts = [
            [
                start["hi"],
                np.log(start["A"] * n0 ** -start["alpha"]),
                start["alpha"],
                np.log(start["B"] * d0 ** -start["beta"]),
                start["beta"],
            ]
        ]
    else:
        starts = [[hi0, np.log(mean_gap / 2), a, np.log(mean_gap / 2), b] for a, b in STEP1_STARTS]
    bounds = ([hi_bounds[0], -30, 0.0, -30, 0.0], [hi_bounds[1], 30, 3.0, 30, 3.0])
    best = _least_squares(residuals, starts, bounds)
    if best is None:
        return None
    hi, a, alpha, b, beta = best.x
    return {
        "lo": float(lo),
        "hi": float(hi),
        "A": float(np.exp(a) * n0**alpha),
        "alpha": float(alpha),
        "B": float(np.exp(b) * d0**beta),
        "beta": float(beta),
    }


def _least_squares(residuals, starts, bounds, margin: float = 1e-12):
    """The best of scipy least_squares from each start, moved `margin` inside the bounds (None when
    every start fails)."""
    best = None
    for theta0 in starts:
        theta0 = np.clip(theta0, np.array(bounds[0]) + margin, np.array(bounds[1]) - margin)
        try:
            fit = least_squares(residuals, theta0, bounds=bounds, method="trf", max_nfev=400)
        except ValueError:
            continue
        if np.isfinite(fit.cost) and (best is None or fit.cost < best.cost):
            best = fit
    return best


def fit_loglinear(x, y) -> dict | None:
    """a, b of ln y = a + b ln x (statsmodels OLS)."""
    import statsmodels.api as sm

    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.ptp(np.log(x)) <= 0 or np.any(y <= 0):
        return None
    fit = sm.OLS(np.log(y), sm.add_constant(np.log(x))).fit()
    return {"a": float(fit.params[0]), "b": float(fit.params[1])}


def fit_method(method: str, spec: MetricSpec, runs: pd.DataFrame, start: dict | None = None) -> dict | None:
    """The parameters of `method` on `runs` (both steps for two-step), or None when a step fails."""
    params, tokens, y = (runs[c].to_numpy(float) for c in ("params", "tokens", spec.name))
    if method == "direct_nd":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fit_direct_nd(params, tokens, y, spec, start)
    step1 = {}
    if method == "direct":
        x = 6.0 * params * tokens
        x = np.log(x) if spec.link == "sigmoid" else x
    else:
        x = runs[task_loss_column(spec)].to_numpy(float)
        step1 = fit_task_loss(params, tokens, x, start and {k: start[k] for k in STEP1_PARAMS})
        if step1 is None:
            return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        link = fit_sigmoid(x, y, spec, start) if spec.link == "sigmoid" else fit_loglinear(x, y)
    return None if link is None else {**step1, **link}


def residual_sigma(method: str, spec: MetricSpec, theta: dict, runs: pd.DataFrame) -> float:
    """RMS residual of the runs about the method's prediction from (N, D) (log units for losses),
    with n - k degrees of freedom for the link's k parameters."""
    predicted = metric_values(method, spec.link, theta, runs["params"].to_numpy(float), runs["tokens"].to_numpy(float))
    actual = runs[spec.name].to_numpy(float)
    with np.errstate(all="ignore"):
        resid = np.log(actual / predicted) if spec.link == "loglinear" else actual - predicted
    resid = resid[np.isfinite(resid)]
    k = len(param_names(method, spec)) if method == "direct_nd" else len(LINK_PARAMS[spec.link])
    dof = max(len(resid) - k, 1)
    return float(np.sqrt(np.sum(resid**2) / dof)) if len(resid) else float("nan")


def param_names(method: str, spec: MetricSpec) -> tuple[str, ...]:
    return method_params(method, spec.link)
