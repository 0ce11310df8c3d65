"""Fitting any law form of `scalelab.laws.law.FORMS`: the objective, the starts, L-BFGS-B, the
bootstrap and the residual scatter, all through the form's definition.

The objective is Approach 3's (Hoffmann et al. 2022; Besiroglu et al. 2024): the *sum* of Huber
losses (delta 1e-3) of log-loss residuals, with its analytic gradient (the form's Jacobian).

Starts: every row of the form's start grid is scored at once (one vectorised evaluation), and
only the best `REFINE` are run with L-BFGS-B at tight tolerances; the lowest objective is kept.
Each bootstrap resample is refitted from the full-data optimum *and* from the grid starts that
score best on that resample (a warm start alone never leaves the full-data optimum, which is
what once gave E a zero-width interval).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber

from ..laws.law import FORMS, LawForm, bounds_for
from .approach3 import HUBER_DELTA
from .common import parallel_map

# The objective is minimised in units of delta^2 (a point whose residual is delta costs ~0.5), so
# that scipy's tolerances, absolute below 1, mean the same for any number of points.
FINAL_OPTIONS = {"ftol": 1e-13, "gtol": 1e-9, "maxiter": 20_000, "maxfun": 40_000}
SCREEN_OPTIONS = {"ftol": 1e-6, "maxiter": 300}  # loose: enough to tell whether a start beats the warm one
# A resample's refit: percentile intervals need its optimum to ~1e-6 in the parameters, not 1e-13.
BOOTSTRAP_OPTIONS = {"ftol": 1e-11, "gtol": 1e-7, "maxiter": 10_000}
PREDICTIVE_STREAM = 29  # the bootstrap's second random stream: predicted endpoints' draws
REFINE = 8  # best grid starts refined on the full data
BOOTSTRAP_STARTS = 1  # best grid starts per resample, besides the full-data optimum
SCREEN_ROWS = 20_000  # the grid is scored on at most this many rows (a fixed subsample of larger CSVs)
AT_OPTIMUM_RTOL = 1e-6  # a refined start "reached the optimum" within this relative objective
MIN_PARALLEL_FITS = 200  # below this many L-BFGS-B runs, starting processes does not pay


@dataclass
class FormData:
    """The points in the coordinates every form is fitted in."""

    x: np.ndarray  # log(N / N0)
    y: np.ndarray  # log(D / D0)
    u: np.ndarray | None  # log(U / D0), unique tokens, where the form needs them
    log_loss: np.ndarray
    n0: float
    d0: float
    log_lo: float
    log_hi: float
    # a predicted endpoint's sd of its log loss (scalelab.fit.inputs.PREDICTED_LOG_SD), 0 for a measured
    # run; None when no point is predicted
    log_sd: np.ndarray | None = None

    def take(self, idx) -> "FormData":
        return FormData(
            self.x[idx],
            self.y[idx],
            None if self.u is None else self.u[idx],
            self.log_loss[idx],
            self.n0,
            self.d0,
            self.log_lo,
            self.log_hi,
            None if self.log_sd is None else self.log_sd[idx],
        )


def form_data(params, tokens, loss, unique=None, n0=None, d0=None, log_sd=None) -> FormData:
    log_n, log_d, log_loss = (np.log(np.asarray(v, float)) for v in (params, tokens, loss))
    n0 = float(np.exp(log_n.mean())) if n0 is None else n0
    d0 = float(np.exp(log_d.mean())) if d0 is None else d0
    u = None if unique is None else np.log(np.asarray(unique, float)) - np.log(d0)
    sd = None if log_sd is None else np.asarray(log_sd, float)
    return FormData(
        log_n - np.log(n0), log_d - np.log(d0), u, log_loss, n0, d0, float(log_loss.min()), float(log_loss.max()), sd
    )


def objective(theta, form: LawForm, data: FormData, delta=HUBER_DELTA):
    """Sum of Huber_delta(log L_pred − log L) over the points, and its gradient in theta."""
    value, jac = form.log_law(theta, data.x, data.y, data.u, jac=True)
    residual = value - data.log_loss
    slope = np.clip(residual, -delta, delta)
    return float(huber(delta, residual).sum()), jac @ slope


def _scaled(theta, form, data, delta):
    value, grad = objective(theta, form, data, delta)
    return value / delta**2, grad / delta**2


def grid_values(form: LawForm, starts, data: FormData, delta=HUBER_DELTA, per_point=False):
    """The objective at every row of `starts` at once (no gradient); with per_point the
    (starts × points) Huber terms, so a resample's objective is one product with its row counts."""
    out = np.empty((len(starts), len(data.x)) if per_point else len(starts))
    chunk = max(1, 2_000_000 // max(1, len(data.x)))  # bound the temporary arrays
    for lo in range(0, len(starts), chunk):
        cols = [starts[lo : lo + chunk, [i]] for i in range(starts.shape[1])]
        with np.errstate(all="ignore"):
            terms = huber(delta, form.log_law(cols, data.x, data.y, data.u) - data.log_loss)
        terms = np.where(np.isfinite(terms), terms, np.inf)
        out[lo : lo + chunk] = terms if per_point else terms.sum(axis=1)
    return out


def start_grid(form: LawForm, data: FormData, points: int) -> np.ndarray:
    """The form's grid of starts for these data, clipped into its bounds."""
    rows = np.array(list(itertools.product(*form.grid(points, data.log_lo, data.log_hi))), dtype=float)
    if form.grid_to_theta is not None:
        rows = form.grid_to_theta(rows)
    bounds = np.array(bounds_for(form, data.log_lo, data.log_hi))
    return np.clip(rows, bounds[:, 0], bounds[:, 1])


def minimise(form: LawForm, theta0, data: FormData, bounds, delta=HUBER_DELTA, options=FINAL_OPTIONS):
    """One L-BFGS-B run with the analytic gradient: (objective, theta, converged, message)."""
    with np.errstate(all="ignore"):
        result = minimize(
            _scaled,
            np.asarray(theta0, float),
            jac=True,
            args=(form, data, delta),
            method="L-BFGS-B",
            bounds=bounds,
            options=options,
        )
    ok = np.isfinite(result.fun) and np.all(np.isfinite(result.x))
    return (float(result.fun) * delta**2 if ok else np.inf), result.x, bool(result.success), str(result.message)


def _screen_subset(n: int) -> np.ndarray:
    """Rows the grid is scored on: all, or a fixed evenly spread subsample of a huge CSV."""
    return np.arange(n) if n <= SCREEN_ROWS else np.linspace(0, n - 1, SCREEN_ROWS).round().astype(int)


def fit_form(form: LawForm, data: FormData, grid_points: int, delta=HUBER_DELTA, refine=REFINE) -> dict:
    """Global fit: score the grid, refine the best `refine` starts, keep the lowest objective."""
    bounds = bounds_for(form, data.log_lo, data.log_hi)
    starts = start_grid(form, data, grid_points)
    subset = data.take(_screen_subset(len(data.x)))
    scores = grid_values(form, starts, subset, delta)
    chosen = starts[np.argsort(scores, kind="stable")[:refine]]
    if len(subset.x) < len(data.x):
        # A huge CSV: refine the starts on the fixed subsample, then only the best on every row.
        runs = [minimise(form, theta0, subset, bounds, delta) for theta0 in chosen]
        best = min(range(len(runs)), key=lambda i: runs[i][0])
        full = minimise(form, runs[best][1], data, bounds, delta)
        tolerance = max(AT_OPTIMUM_RTOL * abs(runs[best][0]), 1e-12)
        return {
            "theta": full[1],
            "objective": full[0],
            "converged": full[2],
            "message": full[3],
            "n_starts": len(starts),
            "refined": len(runs),
            "bounds": bounds,
            "starts_at_optimum": sum(1 for run in runs if run[0] <= runs[best][0] + tolerance),
        }
    runs = [minimise(form, theta0, data, bounds, delta) for theta0 in chosen]
    best = min(range(len(runs)), key=lambda i: runs[i][0])
    value, theta, converged, message = runs[best]
    tolerance = max(AT_OPTIMUM_RTOL * abs(value), 1e-12)
    at_optimum = sum(1 for run in runs if run[0] <= value + tolerance)
    return {
        "theta": theta,
        "objective": value,
        "converged": converged,
        "message": message,
        "n_starts": len(starts),
        "refined": len(runs),
        "starts_at_optimum": at_optimum,
        "bounds": bounds,
    }


def natural(form: LawForm, theta, data: FormData) -> dict:
    return {k: float(v) for k, v in form.params(theta, data.n0, data.d0).items()}


def on_bound(form: LawForm, theta, bounds) -> list[str]:
    """Names of the natural parameters whose theta sits on a bound (within 1e-6 of its range)."""
    names = []
    for name, value, (low, high) in zip(form.theta_params, theta, bounds):
        if min(value - low, high - value) <= 1e-6 * (high - low):
            names.append(name)
    return names


def residual_sigma(form: LawForm, theta, data: FormData) -> float:
    """The scatter of single runs about the law: RMS of the log residuals, n − k degrees of freedom.
    It includes the form's misfit, which is what a prediction interval must carry."""
    residual = form.log_law(theta, data.x, data.y, data.u) - data.log_loss
    dof = len(residual) - len(theta)
    return float(np.sqrt(np.sum(residual**2) / dof)) if dof > 0 else float("nan")


def predictive_draws(data: FormData, n_resamples: int, seed: int) -> np.ndarray | None:
    """Per resample, a shift of every point's log loss: a predicted endpoint's draw from its log-normal
    predictive distribution (sd data.log_sd), 0 for a measured run; None when no point is predicted.
    One draw per point and resample (a point drawn twice by the resample keeps one value). A stream of
    its own, so the resamples' row indices are those of the same table without predicted points."""
    if data.log_sd is None or not np.any(data.log_sd > 0):
        return None
    normal = np.random.default_rng([seed, PREDICTIVE_STREAM]).standard_normal((n_resamples, len(data.x)))
    return normal * data.log_sd[None, :]


def _bootstrap_chunk(task):
    name, indices, data, best_theta, starts, n_starts, delta, shifts = task
    form = FORMS[name]
    bounds = bounds_for(form, data.log_lo, data.log_hi)
    per_point = grid_values(form, starts, data, delta, per_point=True) if n_starts else None
    out = np.full((len(indices), len(best_theta) + 1), np.nan)
    for row, idx in enumerate(indices):
        sample = data.take(idx)
        if shifts is not None:  # predicted endpoints: this resample's draw of each
            sample.log_loss = sample.log_loss + shifts[row][idx]
        candidates = [best_theta]
        if n_starts:
            at_starts = per_point @ np.bincount(idx, minlength=len(data.x))
            candidates += list(starts[np.argsort(at_starts, kind="stable")[:n_starts]])
        value, theta = minimise(form, best_theta, sample, bounds, delta, BOOTSTRAP_OPTIONS)[:2]
        for theta0 in candidates[1:]:
            # Screen; only a start that beats the warm start is worth a tight rerun.
            screened = minimise(form, theta0, sample, bounds, delta, SCREEN_OPTIONS)
            if screened[0] < value * (1 - 1e-6):
                refined = minimise(form, screened[1], sample, bounds, delta, BOOTSTRAP_OPTIONS)[:2]
                value, theta = min((value, theta), refined, key=lambda r: r[0])
        if np.isfinite(value):
            out[row, 0], out[row, 1:] = value, theta
    return out


def _rows(draws, rows):
    return None if draws is None else draws[rows]


def bootstrap_form(
    form: LawForm,
    data: FormData,
    best_theta,
    n_resamples: int,
    seed: int,
    grid_points: int,
    workers=1,
    n_starts=BOOTSTRAP_STARTS,
    delta=HUBER_DELTA,
    progress=None,
):
    """Refit the form on `n_resamples` row resamples: (objective, theta) per row, NaN where a
    refit failed. Indices are drawn up front from `seed` and each refit is deterministic, so the
    result does not depend on the number of workers."""
    n = len(data.x)
    indices = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    draws = predictive_draws(data, n_resamples, seed)
    starts = start_grid(form, data.take(_screen_subset(n)), grid_points)
    if n > SCREEN_ROWS:
        n_starts = 0  # scoring the whole grid on a million-row resample would cost more than the refits
    fits = n_resamples * (1 + n_starts)
    n_chunks = 1 if workers <= 1 or fits < MIN_PARALLEL_FITS else min(n_resamples, 4 * workers)
    rows = np.array_split(np.arange(n_resamples), n_chunks)
    tasks = [
        (form.name, indices[r], data, np.asarray(best_theta, float), starts, n_starts, delta, _rows(draws, r))
        for r in rows
        if len(r)
    ]
    if progress and n > SCREEN_ROWS:
        progress(f"{form.name}: {n_resamples} resamples of {n} rows, {len(tasks)} chunks")
    runs = parallel_map(_bootstrap_chunk, tasks, workers) if tasks else []
    return np.concatenate(runs) if runs else np.empty((0, len(best_theta) + 1))


def prediction_variance(form: LawForm, theta, train: FormData, test: FormData) -> np.ndarray:
    """The linearised (delta-method) variance of the fitted log loss at the test points that comes
    from the parameters' uncertainty on the training points: diag(J_test (J^T J)^+ J_test^T) sigma^2,
    sigma the residual scatter. A refit on few runs extrapolates with a large one; a check that
    counts it as misfit would inflate the extrapolation scatter."""
    sigma = residual_sigma(form, theta, train)
    if not np.isfinite(sigma):
        return np.full(len(test.x), np.inf)
    with np.errstate(all="ignore"):
        j_train = form.log_law(theta, train.x, train.y, train.u, jac=True)[1].T
        j_test = form.log_law(theta, test.x, test.y, test.u, jac=True)[1].T
    if not (np.all(np.isfinite(j_train)) and np.all(np.isfinite(j_test))):
        return np.full(len(test.x), np.inf)
    cov = np.linalg.pinv(j_train.T @ j_train, rcond=1e-10) * sigma**2
    return np.einsum("ij,jk,ik->i", j_test, cov, j_test)
