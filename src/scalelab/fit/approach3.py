"""Approach 3 (Hoffmann et al. 2022, as replicated by Besiroglu et al. 2024): the law
L(N, D) = E + A/N^alpha + B/D^beta fitted in log space.

This module owns the objective (the *sum* of Huber losses, delta 1e-3, of log-loss residuals,
with its analytic gradient), the grid of starts, L-BFGS-B (every start screened, the best few
rerun with tight tolerances), the bootstrap of row resamples, the process pool they share, and
`approach3_section`, which runs them for fit.json's `approach3` section.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import huber

from ..errors import ScalelabError
from ..config.stage_settings import GRID_POINTS
from .common import parallel_map, safe_exp

HUBER_DELTA = 1e-3
BOOTSTRAP_GRID_STARTS = 3  # grid starts per resample, besides the full-data optimum
# Every start is screened with scipy's default tolerances, which rank starts well at half the
# cost; the best few are then rerun with tight ones. The summed Huber loss of a good fit is ~1e-3
# or smaller and scipy's ftol is absolute below 1, so the defaults alone stop early (as the
# averaged form of the loss does, much more so).
SCREEN_OPTIONS = {"maxiter": 10_000}
FINAL_OPTIONS = {"ftol": 1e-14, "gtol": 1e-10, "maxiter": 10_000}
FINAL_RERUNS = 8  # best screened starts rerun with FINAL_OPTIONS
MIN_PARALLEL_RUNS = 200  # below this many L-BFGS-B runs, starting processes does not pay
PARAM_NAMES = ("E", "A", "B", "alpha", "beta", "a", "b")


def _log_law(log_A, log_B, log_E, alpha, beta, log_params, log_tokens):
    """log L = LSE(log_A - alpha·log N, log_B - beta·log D, log_E) and the softmax weights.

    Written out (not scipy.special.logsumexp, ~5x slower here) because the gradient needs the
    weights anyway; subtracting the largest term keeps exp() from overflowing.
    """
    t_params = log_A - alpha * log_params
    t_tokens = log_B - beta * log_tokens
    top = np.maximum(np.maximum(t_params, t_tokens), log_E)
    w_params, w_tokens, w_E = np.exp(t_params - top), np.exp(t_tokens - top), np.exp(log_E - top)
    total = w_params + w_tokens + w_E
    return top + np.log(total), w_params / total, w_tokens / total, w_E / total


def huber_objective(theta, log_params, log_tokens, log_loss, delta=HUBER_DELTA):
    """Sum over points of Huber_delta(log L_pred - log L) and its gradient in theta.

    theta = (log_A, log_B, log_E, alpha, beta), i.e. (a, b, e, alpha, beta) of Hoffmann et al.
    """
    log_A, log_B, log_E, alpha, beta = theta
    log_pred, w_params, w_tokens, w_E = _log_law(log_A, log_B, log_E, alpha, beta, log_params, log_tokens)
    residual = log_pred - log_loss
    slope = np.clip(residual, -delta, delta)  # d Huber / d residual
    g_params, g_tokens = slope * w_params, slope * w_tokens
    grad = np.array(
        [
            g_params.sum(),
            g_tokens.sum(),
            (slope * w_E).sum(),
            -(g_params * log_params).sum(),
            -(g_tokens * log_tokens).sum(),
        ]
    )
    return huber(delta, residual).sum(), grad


def grid_objective(starts, log_params, log_tokens, log_loss, delta=HUBER_DELTA, per_point=False):
    """The objective at every row of `starts` at once (no gradient), for ranking starts.

    With per_point, the (starts × points) Huber terms instead: a resample's objective at every
    start is then one matrix-vector product with the resample's row counts.
    """
    values = np.empty((len(starts), len(log_params)) if per_point else len(starts))
    chunk = max(1, 2_000_000 // max(1, len(log_params)))  # bound the temporary arrays
    for lo in range(0, len(starts), chunk):
        cols = [starts[lo : lo + chunk, [i]] for i in range(5)]
        terms = huber(delta, _log_law(*cols, log_params, log_tokens)[0] - log_loss)
        values[lo : lo + chunk] = terms if per_point else terms.sum(axis=1)
    return values


def start_grid(points_per_axis: int = GRID_POINTS) -> np.ndarray:
    """Initial (log_A, log_B, log_E, alpha, beta): a, b in 0..25, e in -1..1.5, alpha, beta in 0..2."""
    p = points_per_axis
    axes = [
        np.linspace(0, 25, p),
        np.linspace(0, 25, p),
        np.linspace(-1, 1.5, p),
        np.linspace(0, 2, p),
        np.linspace(0, 2, p),
    ]
    return np.array(list(itertools.product(*axes)))


def minimise(theta0, log_params, log_tokens, log_loss, delta=HUBER_DELTA, options=FINAL_OPTIONS):
    """One L-BFGS-B run with the analytic gradient; returns (objective, theta)."""
    # L-BFGS-B works on standardised log N and log D: the same objective, but log_A and alpha
    # are no longer nearly collinear (log N is ~20), which saves about a third of the evaluations.
    mean_n, scale_n = log_params.mean(), log_params.std() or 1.0
    mean_d, scale_d = log_tokens.mean(), log_tokens.std() or 1.0
    log_A, log_B, log_E, alpha, beta = np.asarray(theta0, dtype=float)
    z0 = np.array([log_A - alpha * mean_n, log_B - beta * mean_d, log_E, alpha * scale_n, beta * scale_d])
    data = ((log_params - mean_n) / scale_n, (log_tokens - mean_d) / scale_d, log_loss, delta)
    with np.errstate(all="ignore"):
        result = minimize(huber_objective, z0, jac=True, args=data, method="L-BFGS-B", options=options)
    alpha, beta = result.x[3] / scale_n, result.x[4] / scale_d
    theta = np.array([result.x[0] + alpha * mean_n, result.x[1] + beta * mean_d, result.x[2], alpha, beta])
    objective = float(result.fun) if np.isfinite(result.fun) and np.all(np.isfinite(theta)) else np.inf
    return objective, theta


def _minimise_starts(task):
    starts, data, delta, options = task
    out = np.empty((len(starts), 6))
    for i, theta0 in enumerate(starts):
        objective, theta = minimise(theta0, *data, delta, options)
        out[i, 0], out[i, 1:] = objective, theta
    return out


def _bootstrap_chunk(task):
    """Refit each resample from the full-data optimum plus its few best grid starts."""
    indices, data, best_theta, starts, n_grid, delta = task
    per_point = grid_objective(starts, *data, delta, per_point=True) if n_grid else None
    out = np.empty((len(indices), 6))
    for row, idx in enumerate(indices):
        sample = tuple(column[idx] for column in data)
        best = minimise(best_theta, *sample, delta)
        if n_grid:
            at_starts = per_point @ np.bincount(idx, minlength=len(data[0]))  # objective on the resample
            for theta0 in starts[np.argsort(at_starts, kind="stable")[:n_grid]]:
                # Screen; only a start that beats the warm start is worth a tight rerun.
                if minimise(theta0, *sample, delta, SCREEN_OPTIONS)[0] < best[0]:
                    best = min(best, minimise(theta0, *sample, delta), key=lambda fit: fit[0])
        out[row, 0], out[row, 1:] = best
    return out


def _n_chunks(n_items, n_runs, workers):
    """Several chunks per worker balance the load; one chunk when processes would not pay."""
    if workers <= 1 or n_runs < MIN_PARALLEL_RUNS:
        return 1
    return min(n_items, 4 * workers)


def _law_from_theta(theta) -> dict:
    log_A, log_B, log_E, alpha, beta = (float(v) for v in theta)
    with np.errstate(all="ignore"):
        a, b = beta / (alpha + beta), alpha / (alpha + beta)
    return {
        "E": safe_exp(log_E),
        "A": safe_exp(log_A),
        "B": safe_exp(log_B),
        "alpha": alpha,
        "beta": beta,
        "a": a,
        "b": b,
    }


def fit_approach3(params, tokens, loss, starts=None, workers=1, delta=HUBER_DELTA) -> dict:
    """Global fit of the law: L-BFGS-B from every start (screening tolerances), the best
    FINAL_RERUNS starts again with tight ones, and the lowest summed Huber loss kept.

    Returns E, A, B, alpha, beta, a = beta/(alpha+beta), b = alpha/(alpha+beta), the objective,
    theta (the log-space optimum) and how many starts reached the optimum (a health check).
    """
    data = (np.log(np.asarray(params, float)), np.log(np.asarray(tokens, float)), np.log(np.asarray(loss, float)))
    starts = start_grid() if starts is None else np.atleast_2d(np.asarray(starts, float))
    chunks = np.array_split(starts, _n_chunks(len(starts), len(starts), workers))
    screened = np.concatenate(
        parallel_map(_minimise_starts, [(c, data, delta, SCREEN_OPTIONS) for c in chunks], workers)
    )[:, 0]
    best_starts = starts[np.argsort(screened, kind="stable")[:FINAL_RERUNS]]  # stable: worker count cannot matter
    finals = _minimise_starts((best_starts, data, delta, FINAL_OPTIONS))
    best = int(np.argmin(finals[:, 0]))
    objective, theta = finals[best, 0], finals[best, 1:]
    if not np.isfinite(objective):
        raise ScalelabError("Approach 3: L-BFGS-B failed from every start (non-finite objective)")
    # How many screened starts came within 1e-6 of the optimum: few means a rugged objective.
    at_optimum = int(np.sum(screened <= objective + max(1e-6 * abs(objective), 1e-9)))
    return {
        **_law_from_theta(theta),
        "objective": float(objective),
        "huber_delta": delta,
        "n_starts": len(starts),
        "starts_at_optimum": at_optimum,
        "theta": theta,
    }


def bootstrap_approach3(
    params,
    tokens,
    loss,
    best_theta,
    n_resamples,
    seed=0,
    starts=None,
    workers=1,
    grid_starts=BOOTSTRAP_GRID_STARTS,
    delta=HUBER_DELTA,
) -> pd.DataFrame:
    """Refit the law on `n_resamples` row resamples; one row of parameters per resample.

    All resample indices are drawn up front from `seed`, and each refit is deterministic, so the
    result does not depend on the number of workers.
    """
    data = (np.log(np.asarray(params, float)), np.log(np.asarray(tokens, float)), np.log(np.asarray(loss, float)))
    starts = start_grid() if starts is None else np.atleast_2d(np.asarray(starts, float))
    n = len(data[0])
    indices = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    n_chunks = _n_chunks(n_resamples, n_resamples * (1 + grid_starts), workers)
    tasks = [
        (chunk, data, np.asarray(best_theta, float), starts, grid_starts, delta)
        for chunk in np.array_split(indices, n_chunks)
        if len(chunk)
    ]
    runs = np.concatenate(parallel_map(_bootstrap_chunk, tasks, workers)) if tasks else np.empty((0, 6))
    rows = [
        {**_law_from_theta(theta), "objective": objective}
        if np.isfinite(objective)
        else dict.fromkeys((*PARAM_NAMES, "objective"), np.nan)
        for objective, *theta in runs
    ]
    return pd.DataFrame(rows, columns=[*PARAM_NAMES, "objective"])
