"""`scalelab fit`: scaling laws from any metrics CSV.

Four views of one ladder of runs, each written to `DIR/fit.json` (the contract read by later
stages), tidy CSV tables and a human-readable `fit.txt`:

- Approach 3 (Hoffmann et al. 2022, as replicated by Besiroglu et al. 2024): the law
  L(N, D) = E + A/N^alpha + B/D^beta, fitted in log space by minimising the *sum* of Huber
  losses (delta 1e-3) of log-loss residuals with L-BFGS-B from a grid of starts, with bootstrap
  95 % intervals. It gives the compute-optimal allocation and a held-out check.
- Power laws in one variable at the largest-D and largest-N slices (scipy and statsmodels).
- Approach 2 (IsoFLOP): a parabola in log N per compute budget, fitted near its minimum
  (`isoflop_window`), then N_opt ~ C^a by OLS, with intervals from resampling runs within budgets.
- Hyperparameters: for each swept column (e.g. lr), the optimum of every (N, D) group from all its
  runs, then power laws of that optimum in N and in C (statsmodels OLS in log-log space) and the
  value they recommend at the next budget.

Every setting lives in `FitSettings` (CLI flags and `--spec` JSON both land there). Under
`select: best` the law fits use the best run of each hyperparameter sweep (`select_runs`);
fit.json's `selection` lists the runs used. A section that the data cannot identify is null, with
`<section>_why` saying why.
"""
from __future__ import annotations

import os

# L-BFGS-B on five parameters calls BLAS on tiny vectors; a threaded OpenBLAS spends 10-20x
# more time spinning its threads than computing (measured on 2 cores), so the fit asks for one
# BLAS thread unless the user chose otherwise. This only works before numpy/scipy load.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import itertools
import math
import multiprocessing
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from scipy.optimize import curve_fit, minimize
from scipy.special import huber

from .errors import ScalelabError
from .files import loads_json, write_json, write_text
from .law import compute_optimal, predict_loss  # noqa: F401  (part of fit's API)

HUBER_DELTA = 1e-3
GRID_POINTS = 4  # values per parameter of the start grid: 4**5 = 1024 L-BFGS-B starts
BOOTSTRAP_GRID_STARTS = 3  # grid starts per resample, besides the full-data optimum
# Every start is screened with scipy's default tolerances, which rank starts well at half the
# cost; the best few are then rerun with tight ones. The summed Huber loss of a good fit is ~1e-3
# or smaller and scipy's ftol is absolute below 1, so the defaults alone stop early (as the
# averaged form of the loss does, much more so).
SCREEN_OPTIONS = {"maxiter": 10_000}
FINAL_OPTIONS = {"ftol": 1e-14, "gtol": 1e-10, "maxiter": 10_000}
FINAL_RERUNS = 8  # best screened starts rerun with FINAL_OPTIONS
FLOPS_TOLERANCE = 0.10  # runs whose FLOPs agree within 10 % share a compute budget
SIZE_TOLERANCE = 0.01  # params (or tokens) within 1 % count as the same size
MIN_PARALLEL_RUNS = 200  # below this many L-BFGS-B runs, starting processes does not pay
PARAM_NAMES = ("E", "A", "B", "alpha", "beta", "a", "b")
MAX_BOOTSTRAP = 100_000  # resamples: at ~7 ms per Approach 3 resample on 2 cores, about 12 minutes
MAX_GRID_POINTS = 8  # 8**5 = 32768 L-BFGS-B starts, about a minute on 2 cores; 9**5 would be 59049
# Approach 2 fits each budget's parabola near its minimum only: the sizes within this factor of the
# lowest-loss size (a window two decades wide in N), widened to the ISOFLOP_MIN_SIZES sizes nearest
# to it in log N when the window holds fewer. Why this width: along an IsoFLOP the law is
# E + A/N^alpha + B'·N^beta, two exponentials in log N, so a parabola over a wide span is pulled
# towards the flatter side (on the Chinchilla law, a 1000x span moves N_opt by 8 %, +-10x by 4 %);
# a narrower window removes that bias but its vertex gets noisy fast (with evenly spread sizes the
# variance grows roughly as 1/width^5): in simulations at 1 % loss noise, +-4x spread the exponent
# a 3-6x as much as +-10x.
ISOFLOP_WINDOW = 10.0
ISOFLOP_MIN_SIZES = 5
HPARAM_RULE = ("per (N, D) group, the loss averaged over seeds at each value; a quadratic in log(value) "
               "(statsmodels OLS on every run) through the best value and its neighbour on each side; "
               "if the best value is the smallest or largest swept, the optimum is that edge value "
               "(edge: true, a wider sweep is needed) and the group is left out of the laws")


# --------------------------------------------------------------------------------------------
# Settings: every fit setting with its one default


@dataclass(frozen=True)
class FitSettings:
    """Every setting of `scalelab fit`; the CLI flags and `--spec` keys both land here.

    target: the loss column ('val_loss', the default, falls back to 'loss' in a CSV without it).
    params: 'non_embedding' (columns params/flops) or 'total' (params_total/flops_total).
    bootstrap: resamples for the Approach 3 and Approach 2 intervals (0: none; at most MAX_BOOTSTRAP).
    seed: seed of every resample (an integer >= 0).
    holdout: 'top' (refit without the top compute group and predict it) or 'none'.
    predict_flops: budgets for the allocation and the hyperparameter recommendation, numbers or
        counts as the config writes them ('1e21', '10T'); None: 10x and 100x the largest run.
    budgets: IsoFLOP budgets to group runs by when the CSV has no isoflop_budget column.
    select: 'best' (fit the best run of each sweep) or 'all' (every usable run).
    sweep_keys: the swept hyperparameter columns (e.g. ['lr']): they get hyperparameter laws, and
        without a best_in_sweep column they decide which runs share a sweep.
    grid_points: start values per parameter of Approach 3's start grid (grid_points**5 starts).
    workers: processes (None: the CPU count).
    """

    target: str = "val_loss"
    params: str = "non_embedding"
    bootstrap: int = 1000
    seed: int = 0
    holdout: str = "top"
    predict_flops: tuple | None = None
    budgets: tuple | None = None
    select: str = "best"
    sweep_keys: tuple = ()
    grid_points: int = GRID_POINTS
    workers: int | None = None

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, _check_setting(f.name, getattr(self, f.name), f.name))

    @classmethod
    def from_dict(cls, d, where="--spec") -> "FitSettings":
        """Settings from a dict of field values (e.g. the --spec JSON); one ScalelabError line
        naming the key for an unknown key or a bad value."""
        if not isinstance(d, dict):
            raise ScalelabError(f"{where}: expected a JSON object of fit settings, got {type(d).__name__}")
        known = [f.name for f in fields(cls)]
        for key in d:
            if key not in known:
                raise ScalelabError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
        return cls(**{key: _check_setting(key, value, f"{where}: {key}") for key, value in d.items()})

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


CHOICES = {"params": ("non_embedding", "total"), "holdout": ("top", "none"), "select": ("best", "all")}


def _count(item) -> float:
    """A number, or a count written as in the config ('1e21', '250_000', '2.5K', '10T'); NaN if neither."""
    if isinstance(item, bool):
        return math.nan
    if isinstance(item, (int, float)):
        return float(item)
    match = re.fullmatch(r"\s*([0-9_.eE+-]+?)\s*([KkMmGgTt]?)\s*", str(item))
    try:
        scale = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[match.group(2).upper()]
        return float(match.group(1).replace("_", "")) * scale
    except (AttributeError, ValueError):
        return math.nan


def _check_setting(key, value, label):
    """The value of setting `key` normalised (lists become tuples), or a ScalelabError naming `label`."""
    def integer(low, high=None, note=""):
        if isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise ScalelabError(f"{label}: expected an integer, got {value!r}")
        if number < low or (high is not None and number > high):
            bound = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise ScalelabError(f"{label}: must be {bound}{note}, got {number}")
        return number

    def numbers():
        if value is None:
            return None
        items = [value] if isinstance(value, (int, float, str)) and not isinstance(value, bool) else value
        if not isinstance(items, (list, tuple)) or not items:
            raise ScalelabError(f"{label}: expected a list of positive numbers (e.g. [1e21]), got {value!r}")
        out = []
        for item in items:
            number = _count(item)
            if not (math.isfinite(number) and number > 0):
                raise ScalelabError(f"{label}: must be positive numbers, got {item!r}")
            out.append(number)
        return tuple(out)

    if key in CHOICES:
        if value not in CHOICES[key]:
            raise ScalelabError(f"{label}: must be one of {', '.join(CHOICES[key])}, got {value!r}")
        return value
    if key == "target":
        if not isinstance(value, str) or not value.strip():
            raise ScalelabError(f"{label}: expected a column name, got {value!r}")
        return value
    if key == "bootstrap":
        return integer(0, MAX_BOOTSTRAP, " resamples (the cap keeps a run finite)")
    if key == "seed":
        return integer(0)
    if key == "grid_points":
        return integer(2, MAX_GRID_POINTS, f" ({MAX_GRID_POINTS}**5 = {MAX_GRID_POINTS**5} L-BFGS-B starts)")
    if key == "workers":
        return None if value is None else integer(1, 4096)
    if key in ("predict_flops", "budgets"):
        return numbers()
    if key == "sweep_keys":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(k, str) and k.strip() for k in items):
            raise ScalelabError(f"{label}: expected a list of column names, got {value!r}")
        if len(set(items)) != len(items):
            raise ScalelabError(f"{label}: a column is named twice in {list(items)}")
        return tuple(items)
    raise ScalelabError(f"{label}: unknown fit setting")


SETTINGS_DEFAULTS = FitSettings()


# --------------------------------------------------------------------------------------------
# The Chinchilla law and its objective


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
    grad = np.array([
        g_params.sum(),
        g_tokens.sum(),
        (slope * w_E).sum(),
        -(g_params * log_params).sum(),
        -(g_tokens * log_tokens).sum(),
    ])
    return huber(delta, residual).sum(), grad


def grid_objective(starts, log_params, log_tokens, log_loss, delta=HUBER_DELTA, per_point=False):
    """The objective at every row of `starts` at once (no gradient), for ranking starts.

    With per_point, the (starts × points) Huber terms instead: a resample's objective at every
    start is then one matrix-vector product with the resample's row counts.
    """
    values = np.empty((len(starts), len(log_params)) if per_point else len(starts))
    chunk = max(1, 2_000_000 // max(1, len(log_params)))  # bound the temporary arrays
    for lo in range(0, len(starts), chunk):
        cols = [starts[lo:lo + chunk, [i]] for i in range(5)]
        terms = huber(delta, _log_law(*cols, log_params, log_tokens)[0] - log_loss)
        values[lo:lo + chunk] = terms if per_point else terms.sum(axis=1)
    return values


def start_grid(points_per_axis: int = GRID_POINTS) -> np.ndarray:
    """Initial (log_A, log_B, log_E, alpha, beta): a, b in 0..25, e in -1..1.5, alpha, beta in 0..2."""
    p = points_per_axis
    axes = [np.linspace(0, 25, p), np.linspace(0, 25, p), np.linspace(-1, 1.5, p),
            np.linspace(0, 2, p), np.linspace(0, 2, p)]
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


def _parallel_map(func, tasks, workers):
    if workers <= 1 or len(tasks) <= 1:
        return [func(task) for task in tasks]
    # fork: workers inherit the imported modules, so a pool costs milliseconds, not seconds.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
        return list(pool.map(func, tasks))


def _n_chunks(n_items, n_runs, workers):
    """Several chunks per worker balance the load; one chunk when processes would not pay."""
    if workers <= 1 or n_runs < MIN_PARALLEL_RUNS:
        return 1
    return min(n_items, 4 * workers)


def _exp(value) -> float:
    """exp that gives inf (null in fit.json) instead of raising on a wild fit's huge logs."""
    with np.errstate(over="ignore"):
        return float(np.exp(value))


def _law_from_theta(theta) -> dict:
    log_A, log_B, log_E, alpha, beta = (float(v) for v in theta)
    with np.errstate(all="ignore"):
        a, b = beta / (alpha + beta), alpha / (alpha + beta)
    return {"E": _exp(log_E), "A": _exp(log_A), "B": _exp(log_B),
            "alpha": alpha, "beta": beta, "a": a, "b": b}


def fit_approach3(params, tokens, loss, starts=None, workers=1, delta=HUBER_DELTA) -> dict:
    """Global fit of the law: L-BFGS-B from every start (screening tolerances), the best
    FINAL_RERUNS starts again with tight ones, and the lowest summed Huber loss kept.

    Returns E, A, B, alpha, beta, a = beta/(alpha+beta), b = alpha/(alpha+beta), the objective,
    theta (the log-space optimum) and how many starts reached the optimum (a health check).
    """
    data = (np.log(np.asarray(params, float)), np.log(np.asarray(tokens, float)),
            np.log(np.asarray(loss, float)))
    starts = start_grid() if starts is None else np.atleast_2d(np.asarray(starts, float))
    chunks = np.array_split(starts, _n_chunks(len(starts), len(starts), workers))
    screened = np.concatenate(_parallel_map(_minimise_starts, [(c, data, delta, SCREEN_OPTIONS) for c in chunks],
                                            workers))[:, 0]
    best_starts = starts[np.argsort(screened, kind="stable")[:FINAL_RERUNS]]  # stable: worker count cannot matter
    finals = _minimise_starts((best_starts, data, delta, FINAL_OPTIONS))
    best = int(np.argmin(finals[:, 0]))
    objective, theta = finals[best, 0], finals[best, 1:]
    if not np.isfinite(objective):
        raise ScalelabError("Approach 3: L-BFGS-B failed from every start (non-finite objective)")
    # How many screened starts came within 1e-6 of the optimum: few means a rugged objective.
    at_optimum = int(np.sum(screened <= objective + max(1e-6 * abs(objective), 1e-9)))
    return {**_law_from_theta(theta), "objective": float(objective), "huber_delta": delta,
            "n_starts": len(starts), "starts_at_optimum": at_optimum, "theta": theta}


def bootstrap_approach3(params, tokens, loss, best_theta, n_resamples, seed=0, starts=None,
                        workers=1, grid_starts=BOOTSTRAP_GRID_STARTS, delta=HUBER_DELTA) -> pd.DataFrame:
    """Refit the law on `n_resamples` row resamples; one row of parameters per resample.

    All resample indices are drawn up front from `seed`, and each refit is deterministic, so the
    result does not depend on the number of workers.
    """
    data = (np.log(np.asarray(params, float)), np.log(np.asarray(tokens, float)),
            np.log(np.asarray(loss, float)))
    starts = start_grid() if starts is None else np.atleast_2d(np.asarray(starts, float))
    n = len(data[0])
    indices = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    n_chunks = _n_chunks(n_resamples, n_resamples * (1 + grid_starts), workers)
    tasks = [(chunk, data, np.asarray(best_theta, float), starts, grid_starts, delta)
             for chunk in np.array_split(indices, n_chunks) if len(chunk)]
    runs = np.concatenate(_parallel_map(_bootstrap_chunk, tasks, workers)) if tasks else np.empty((0, 6))
    rows = [{**_law_from_theta(theta), "objective": objective} if np.isfinite(objective)
            else dict.fromkeys((*PARAM_NAMES, "objective"), np.nan) for objective, *theta in runs]
    return pd.DataFrame(rows, columns=[*PARAM_NAMES, "objective"])


def _percentile_ci(values) -> list | None:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None
    return [float(v) for v in np.percentile(values, [2.5, 97.5])]


def _identifiable(points: pd.DataFrame) -> str | None:
    """Why the 5-parameter law cannot be fitted to these points, or None if it can.

    With the law additive in N and D, A and alpha need 3 model sizes and B and beta 3 token
    counts (2 sizes leave E, A and alpha with 2 equations), and we want more points than parameters.
    """
    if len(points) == 0:
        return "no usable rows"
    n_sizes, n_tokens = _n_distinct(points["params"]), _n_distinct(points["tokens"])
    if n_sizes < 3:
        return f"needs runs at 3 or more model sizes, found {n_sizes}"
    if n_tokens < 3:
        return f"needs runs at 3 or more token counts, found {n_tokens}"
    if len(points) < 6:
        return f"needs at least 6 points for 5 parameters, found {len(points)}"
    return None


# --------------------------------------------------------------------------------------------
# Grouping helpers


def _cluster(values, tolerance) -> np.ndarray:
    """Labels grouping positive values that lie within `tolerance` (relative) of a group's smallest."""
    values = np.asarray(values, dtype=float)
    labels = np.empty(len(values), dtype=int)
    label, anchor = -1, None
    for i in np.argsort(values, kind="stable"):
        if anchor is None or values[i] > anchor * (1 + tolerance):
            label, anchor = label + 1, values[i]
        labels[i] = label
    return labels


def _n_distinct(values, tolerance=SIZE_TOLERANCE) -> int:
    return 0 if len(values) == 0 else int(_cluster(values, tolerance).max() + 1)


# --------------------------------------------------------------------------------------------
# Power laws in one variable


def _power_law(log_size, E, log_A, exponent):
    return E + np.exp(log_A - exponent * log_size)


def fit_power_law(size, loss, names=("A", "k")) -> tuple[dict, list[str]]:
    """L = E + A·size^-k by scipy least squares, and log L = log A - k·log size by statsmodels
    OLS and RLM (Huber's T). Returns the section dict and the statsmodels summaries."""
    size, loss = np.asarray(size, float), np.asarray(loss, float)
    x, y = np.log(size), np.log(loss)
    summaries = []

    # Pure power law in log-log space: the linear model statsmodels is for.
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

    def loglog(result, r2):
        if result is None or not np.all(np.isfinite(result.params)):
            return None
        ci = np.asarray(result.conf_int(0.05))
        ok = np.all(np.isfinite(ci))
        return {"A": _exp(result.params[0]), "exponent": -float(result.params[1]),
                "ci95": {"A": [_exp(ci[0, 0]), _exp(ci[0, 1])] if ok else None,
                         "exponent": [-float(ci[1, 1]), -float(ci[1, 0])] if ok else None},
                "r2": r2}

    # With an irreducible term: nonlinear least squares from a few E guesses, best kept.
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
        nonlinear = {"E": float(E), "A": _exp(log_A), "exponent": float(exponent),
                     "r2": 1 - sse / sst if sst > 0 else None}
        se = np.sqrt(np.diag(pcov)) if np.all(np.isfinite(pcov)) else np.full(3, np.nan)
        if dof >= 1 and np.all(np.isfinite(se)):
            t = stats.t.ppf(0.975, dof)
            nonlinear["ci95"] = {"E": [E - t * se[0], E + t * se[0]],
                                 "A": [_exp(log_A - t * se[1]), _exp(log_A + t * se[1])],
                                 "exponent": [exponent - t * se[2], exponent + t * se[2]]}
        else:
            nonlinear["ci95"] = {"E": None, "A": None, "exponent": None}
    section = {**nonlinear, "n_points": len(loss), "loglog_ols": loglog(ols, float(ols.rsquared)),
               "loglog_rlm": loglog(rlm, None)}
    return section, summaries


def _slice_power_law(points, vary, fixed, coefficient, exponent):
    """Fit the one-variable law at the largest `fixed` value that has 3 or more `vary` sizes."""
    labels = _cluster(points[fixed], SIZE_TOLERANCE)
    for label in np.unique(labels)[::-1]:  # labels grow with the value: largest slice first
        slice_ = points[labels == label]
        if _n_distinct(slice_[vary]) >= 3:
            section, summaries = fit_power_law(slice_[vary], slice_["loss"], (coefficient, exponent))
            names = {"A": coefficient, "exponent": exponent}  # the contract's names for this slice

            def rename(d):
                return {names.get(k, k): rename(v) if isinstance(v, dict) else v for k, v in d.items()}

            return {f"slice_{fixed}": float(slice_[fixed].median()), **rename(section)}, summaries, None
    return None, [], f"no {fixed} value has runs at 3 or more distinct {vary} values"


# --------------------------------------------------------------------------------------------
# Approach 2: IsoFLOP profiles


def isoflop_groups(points: pd.DataFrame, budgets=None) -> tuple[list[tuple[float, np.ndarray]], str]:
    """[(budget FLOPs, row positions)] and how the runs were grouped."""
    flops = points["flops"].to_numpy(float)
    column = points.get("isoflop_budget")
    if column is not None and np.isfinite(column.to_numpy(float)).any():
        values = column.to_numpy(float)
        groups = [(float(c), np.flatnonzero(values == c)) for c in np.unique(values[np.isfinite(values)])]
        return groups, "isoflop_budget column"
    if budgets:
        budgets = np.asarray(sorted(budgets), float)
        distance = np.abs(np.log(flops[:, None] / budgets[None, :]))
        nearest = distance.argmin(axis=1)
        inside = distance[np.arange(len(flops)), nearest] <= math.log(1 + FLOPS_TOLERANCE)
        groups = [(float(c), np.flatnonzero(inside & (nearest == i))) for i, c in enumerate(budgets)]
        return groups, f"nearest of --budgets within {FLOPS_TOLERANCE:.0%}"
    labels = _cluster(flops, FLOPS_TOLERANCE)
    groups = [(float(np.exp(np.log(flops[labels == label]).mean())), np.flatnonzero(labels == label))
              for label in range(labels.max() + 1)]
    return groups, f"runs whose FLOPs agree within {FLOPS_TOLERANCE:.0%}"


def isoflop_window(labels, log_params, loss) -> np.ndarray:
    """Size labels fitted at one budget: the lowest-loss size (loss averaged over its runs) and every
    size within ISOFLOP_WINDOW of it, widened to the ISOFLOP_MIN_SIZES sizes nearest to it in log N
    (ties: the smaller size) when the window holds fewer. `labels` number the sizes of the rows."""
    present = np.flatnonzero(np.bincount(labels))
    counts = np.bincount(labels)[present]
    centre = np.bincount(labels, log_params)[present] / counts
    mean_loss = np.bincount(labels, loss)[present] / counts
    best = int(np.argmin(mean_loss))  # first minimum: the smaller size on a tie
    distance = np.abs(centre - centre[best])
    chosen = distance <= math.log(ISOFLOP_WINDOW) + 1e-12
    if chosen.sum() < ISOFLOP_MIN_SIZES:
        order = np.lexsort((centre, distance))  # nearest first, then the smaller size
        chosen = np.zeros(len(present), dtype=bool)
        chosen[order[:ISOFLOP_MIN_SIZES]] = True
    return present[chosen]


def _approach2_bootstrap(fitted, n_resamples, seed, chunk=4096):
    """Resample runs within each budget and redo its window and parabola (the rule of
    `isoflop_window`, every resample at once: a resample is a row of run multiplicities, and its
    least squares fit the weighted one). Per resample the budgets' log N_opt, NaN where a
    resample has under 3 sizes in its window or no minimum."""
    rng = np.random.default_rng([seed, 2])  # a stream of its own, apart from Approach 3's
    log_opt = np.full((n_resamples, len(fitted)), np.nan)
    for j, (labels, x, y) in enumerate(fitted):
        n, n_sizes = len(x), int(labels.max()) + 1
        onehot = np.zeros((n, n_sizes))
        onehot[np.arange(n), labels] = 1.0
        centre = (onehot.T @ x) / onehot.sum(axis=0)  # labels grow with the size
        ref = x.mean()
        u = x - ref
        basis = np.column_stack([np.ones(n), u, u**2, u**3, u**4, y, y * u, y * u**2])
        for lo in range(0, n_resamples, chunk):
            r = min(chunk, n_resamples - lo)
            idx = rng.integers(0, n, size=(r, n))
            weight = np.bincount((idx + n * np.arange(r)[:, None]).ravel(), minlength=r * n).reshape(r, n)
            count = weight @ onehot
            present = count > 0
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_loss = np.where(present, (weight * y) @ onehot / count, np.inf)
            best = np.argmin(mean_loss, axis=1)
            distance = np.where(present, np.abs(centre[None, :] - centre[best][:, None]), np.inf)
            chosen = distance <= math.log(ISOFLOP_WINDOW) + 1e-12
            short = chosen.sum(axis=1) < ISOFLOP_MIN_SIZES  # widen: the nearest sizes present
            if short.any():
                nearest = np.argsort(distance[short], axis=1, kind="stable")[:, :ISOFLOP_MIN_SIZES]
                widened = np.zeros((int(short.sum()), n_sizes), dtype=bool)
                np.put_along_axis(widened, nearest, True, axis=1)
                chosen[short] = widened & present[short]
            moments = (weight * chosen[:, labels]) @ basis
            A = np.stack([moments[:, [0, 1, 2]], moments[:, [1, 2, 3]], moments[:, [2, 3, 4]]], axis=1)
            ok = (chosen & present).sum(axis=1) >= 3
            coef = np.full((r, 3), np.nan)
            if ok.any():
                coef[ok] = np.linalg.solve(A[ok], moments[ok][:, 5:8, None])[:, :, 0]
            with np.errstate(invalid="ignore", divide="ignore"):
                vertex = np.where(coef[:, 2] > 0, ref - coef[:, 1] / (2 * coef[:, 2]), np.nan)
            log_opt[lo:lo + r, j] = vertex
    return log_opt


def fit_approach2(points: pd.DataFrame, budgets=None, bootstrap=0, seed=0) -> tuple[dict | None, str | None, list[str]]:
    """Per budget a quadratic of loss in log N (statsmodels OLS) near its minimum (`isoflop_window`)
    whose vertex is N_opt; then log N_opt = log G + a·log C and log D_opt = log G' + b·log C (OLS).

    With `bootstrap` resamples, runs are resampled within each budget and every step (window,
    parabola, exponents) redone: a_ci95 and b_ci95 are then the bootstrap's percentile intervals
    (the OLS ones stay as a_ci95_ols and b_ci95_ols), and each budget gets an n_opt_ci95.
    """
    groups, grouping = isoflop_groups(points, budgets) if len(points) else ([], "")
    rows, skipped, summaries, fitted = [], [], [], []
    for flops, where in groups:
        group = points.iloc[where]
        if _n_distinct(group["params"]) < 3:
            continue
        x_all = np.log(group["params"].to_numpy(float))
        y_all = group["loss"].to_numpy(float)
        labels = _cluster(group["params"], SIZE_TOLERANCE)
        in_window = np.isin(labels, isoflop_window(labels, x_all, y_all))
        x, y = x_all[in_window], y_all[in_window]
        center = x.mean()  # centring keeps the quadratic's columns well conditioned
        X = np.column_stack([np.ones_like(x), x - center, (x - center) ** 2])
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            ols = sm.OLS(y, X).fit()
            summaries.append(f"IsoFLOP budget {flops:.4g} FLOPs ({int(in_window.sum())} of {len(group)} runs, "
                             f"N {np.exp(x.min()):.4g} to {np.exp(x.max()):.4g})\n" + str(
                                 ols.summary(yname="loss", xname=["const", "log N - mean", "(log N - mean)^2"])))
        c0, c1, c2 = ols.params
        if not c2 > 0:
            skipped.append({"flops": flops, "reason": "loss is not convex in log N (no minimum)"})
            continue
        x_opt = -c1 / (2 * c2)
        n_opt = _exp(center + x_opt)
        if not 0 < n_opt < np.inf:
            skipped.append({"flops": flops, "reason": "the minimum is too far outside the sampled sizes"})
            continue
        fit_runs = group["run"][in_window].tolist()
        rows.append({"flops": flops, "n_opt": n_opt, "d_opt": flops / (6 * n_opt),
                     "loss_opt": c0 + c1 * x_opt + c2 * x_opt**2, "n_points": len(group),
                     "outside_sampled": bool(n_opt < group["params"].min() or n_opt > group["params"].max()),
                     "n_fit_points": int(in_window.sum()), "n_fit_sizes": int(len(np.unique(labels[in_window]))),
                     "fit_params_min": float(np.exp(x.min())), "fit_params_max": float(np.exp(x.max())),
                     # loss = p0 + p1·ln N + p2·ln² N over [fit_params_min, fit_params_max], for drawing
                     "parabola": [float(c0 - c1 * center + c2 * center**2), float(c1 - 2 * c2 * center), float(c2)],
                     "n_opt_ci95": None, "runs": group["run"].tolist(), "fit_runs": fit_runs})
        fitted.append((labels, x_all, y_all))
    if not rows:
        why = ("no compute budget has runs at 3 or more model sizes" if not skipped
               else "no budget's loss has a minimum in log N")
        return None, why, summaries
    section = {"budgets": rows, "a": None, "a_ci95": None, "b": None, "b_ci95": None, "G": None,
               "grouping": grouping, "skipped": skipped,
               "outside_sampled": [r["flops"] for r in rows if r["outside_sampled"]],
               "window": {"factor": ISOFLOP_WINDOW, "min_sizes": ISOFLOP_MIN_SIZES,
                          "rule": f"sizes within {ISOFLOP_WINDOW:g}x of the lowest-loss size, widened to the "
                                  f"{ISOFLOP_MIN_SIZES} nearest in log N"},
               "a_ci95_ols": None, "b_ci95_ols": None, "a_ci95_bootstrap": None, "b_ci95_bootstrap": None,
               "ci_method": None, "bootstrap": int(bootstrap), "bootstrap_failed": 0}
    log_opt = _approach2_bootstrap(fitted, bootstrap, seed) if bootstrap else np.empty((0, len(rows)))
    for j, row in enumerate(rows):
        row["n_opt_ci95"] = _percentile_ci(np.exp(log_opt[:, j])) if bootstrap else None
    if len(rows) < 2:
        section["exponents_why"] = "only one budget has a minimum; the exponents need two"
        return section, None, summaries
    log_c = np.log([r["flops"] for r in rows])
    for key, target in (("a", "n_opt"), ("b", "d_opt")):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            ols = sm.OLS(np.log([r[target] for r in rows]), sm.add_constant(log_c)).fit()
            summaries.append(str(ols.summary(yname=f"log {target}", xname=["log G", key])))
            ci = np.asarray(ols.conf_int(0.05))[1]
        section[key] = float(ols.params[1])
        section[f"{key}_ci95_ols"] = [float(ci[0]), float(ci[1])] if np.all(np.isfinite(ci)) else None
        if key == "a":
            section["G"] = _exp(ols.params[0])
    section["a_ci95"], section["b_ci95"], section["ci_method"] = section["a_ci95_ols"], section["b_ci95_ols"], "ols"
    if bootstrap:
        ok = np.all(np.isfinite(log_opt), axis=1)
        section["bootstrap_failed"] = int((~ok).sum())
        if ok.sum() >= 2:
            # Slopes of every resample at once: cov(log C, log N_opt) / var(log C); D_opt = C / (6 N_opt).
            dc = log_c - log_c.mean()
            slopes = (log_opt[ok] - log_opt[ok].mean(axis=1, keepdims=True)) @ dc / (dc @ dc)
            section["a_ci95_bootstrap"] = _percentile_ci(slopes)
            section["b_ci95_bootstrap"] = _percentile_ci(1 - slopes)
            section["a_ci95"], section["b_ci95"] = section["a_ci95_bootstrap"], section["b_ci95_bootstrap"]
            section["ci_method"] = "bootstrap"
    return section, None, summaries


# --------------------------------------------------------------------------------------------
# Reading any metrics CSV


def read_metrics(path) -> pd.DataFrame:
    path = Path(path)
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise ScalelabError(f"{path}: file not found") from None
    except pd.errors.EmptyDataError:
        raise ScalelabError(f"{path}: the file is empty (expected a CSV with a header row)") from None
    except (ValueError, UnicodeDecodeError, IsADirectoryError) as exc:  # ParserError is a ValueError
        raise ScalelabError(f"{path}: not a readable CSV ({' '.join(str(exc).split())})") from None


def _columns(df, loss_col, params_col, tokens_col, flops_col, source):
    def need(col, flag):
        if col not in df.columns:
            raise ScalelabError(f"{source}: no column '{col}' (set it with {flag}); "
                                f"columns are: {', '.join(map(str, df.columns)) or 'none'}")
        return col

    if loss_col is None:  # the default target: val_loss, else loss
        if "loss" not in df.columns and "val_loss" not in df.columns:
            raise ScalelabError(f"{source}: no 'loss' or 'val_loss' column (set one with --loss-col); "
                                f"columns are: {', '.join(map(str, df.columns)) or 'none'}")
        loss_col = "val_loss" if "val_loss" in df.columns else "loss"
    if flops_col is None:
        # `--params-col params_total` goes with `flops_total`, so grouping uses one convention.
        matching = "flops" + params_col[len("params"):] if params_col.startswith("params") else None
        flops_col = next((c for c in (matching, "flops") if c and c in df.columns), None)
    else:
        need(flops_col, "--flops-col")
    return need(loss_col, "--loss-col"), need(params_col, "--params-col"), need(tokens_col, "--tokens-col"), flops_col


def _flags(column: pd.Series, name: str, source: str) -> np.ndarray:
    """A true/false column (True/False, 1/0, yes/no) as 1.0/0.0, empty cells NaN."""
    words = {"true": 1.0, "1": 1.0, "1.0": 1.0, "yes": 1.0, "false": 0.0, "0": 0.0, "0.0": 0.0, "no": 0.0}
    out = np.full(len(column), np.nan)
    for i, value in enumerate(column):
        if pd.isna(value):
            continue
        text = str(value).strip().lower()
        if text not in words:
            raise ScalelabError(f"{source}: column '{name}' must be true or false, got {value!r} in row {i + 2}")
        out[i] = words[text]
    return out


def prepare(df, loss_col=None, params_col="params", tokens_col="tokens", flops_col=None, source="metrics",
            sweep_keys=()):
    """Usable points (run, params, tokens, flops, loss, isoflop_budget, and seed, sweep_group,
    best_in_sweep and the `sweep_keys` columns) in a canonical order, the excluded rows with
    reasons, and the columns used."""
    loss_col, params_col, tokens_col, flops_col = _columns(df, loss_col, params_col, tokens_col, flops_col, source)
    for key in sweep_keys:
        if key not in df.columns:
            raise ScalelabError(f"{source}: no column '{key}' for the swept hyperparameter (sweep_keys / "
                                f"--select-best-by); columns are: {', '.join(map(str, df.columns))}")
    runs = df["run"].astype(str).tolist() if "run" in df.columns else list(range(len(df)))
    values = {name: pd.to_numeric(df[col], errors="coerce").to_numpy(float)
              for name, col in (("loss", loss_col), ("params", params_col), ("tokens", tokens_col))}
    values["flops"] = (pd.to_numeric(df[flops_col], errors="coerce").to_numpy(float) if flops_col
                       else 6 * values["params"] * values["tokens"])
    excluded, keep = [], []
    # A status column counts only if it says something (a CSV may carry an empty one).
    status = df["status"] if "status" in df.columns and df["status"].notna().any() else None
    for i in range(len(df)):
        reason = None
        if status is not None and str(status.iloc[i]).strip() != "ok":
            reason = "no status" if pd.isna(status.iloc[i]) else str(status.iloc[i]).strip()
        else:
            for name, col in (("loss", loss_col), ("params", params_col), ("tokens", tokens_col),
                              ("flops", flops_col or "6*params*tokens")):
                if not np.isfinite(values[name][i]):
                    reason = f"{col} is missing or not a finite number"
                    break
                if values[name][i] <= 0:
                    reason = f"{col} is not positive"
                    break
        if reason:
            excluded.append({"run": runs[i], "reason": reason})
        else:
            keep.append(i)
    budget = (pd.to_numeric(df["isoflop_budget"], errors="coerce").to_numpy(float)
              if "isoflop_budget" in df.columns else np.full(len(df), np.nan))
    points = pd.DataFrame({"run": [runs[i] for i in keep], **{k: v[keep] for k, v in values.items()},
                           "isoflop_budget": budget[keep]})
    # The sweep columns: seed and sweep_group identify a grid point, best_in_sweep marks its best run.
    if "seed" in df.columns and df["seed"].notna().any():
        points["seed"] = df["seed"].iloc[keep].astype(str).where(df["seed"].iloc[keep].notna(), "").to_numpy()
    if "sweep_group" in df.columns and df["sweep_group"].notna().any():
        points["sweep_group"] = df["sweep_group"].iloc[keep].astype(str).where(
            df["sweep_group"].iloc[keep].notna(), "").to_numpy()
    if "best_in_sweep" in df.columns and df["best_in_sweep"].notna().any():
        points["best_in_sweep"] = _flags(df["best_in_sweep"], "best_in_sweep", source)[keep]
    for key in sweep_keys:
        points[f"hp:{key}"] = pd.to_numeric(df[key], errors="coerce").to_numpy(float)[keep]
    # A canonical order makes every result, bootstrap included, independent of the row order.
    points["_key"] = points["run"].astype(str)
    points = points.sort_values(["params", "tokens", "flops", "loss", "_key"], kind="mergesort")
    points = points.drop(columns="_key").reset_index(drop=True)
    columns = {"loss": loss_col, "params": params_col, "tokens": tokens_col, "flops": flops_col or "6*params*tokens"}
    return points, excluded, columns


# --------------------------------------------------------------------------------------------
# Sweeps: which runs the fits use, and the laws of the best hyperparameters


def _grid_point_keys(points: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """One label per row for the grid point it belongs to, and what identifies a grid point:
    the sweep_group column when there is one, else model size and token count (within 1 %),
    and the seed when there is a seed column."""
    if "sweep_group" in points.columns:
        return pd.factorize(points["sweep_group"], sort=True)[0], ["sweep_group"]
    parts = [_cluster(points["params"], SIZE_TOLERANCE), _cluster(points["tokens"], SIZE_TOLERANCE)]
    by = ["params", "tokens"]
    if "seed" in points.columns:
        parts.append(pd.factorize(points["seed"], sort=True)[0])
        by.append("seed")
    keys = pd.MultiIndex.from_arrays(parts) if len(points) else pd.MultiIndex.from_arrays([[]] * len(parts))
    return pd.factorize(keys, sort=True)[0], by


def select_runs(points: pd.DataFrame, settings: FitSettings) -> tuple[pd.DataFrame, dict]:
    """The points the fits use and the fit.json `selection` section.

    select 'all': every usable point. select 'best': with a best_in_sweep column, the rows it
    marks true (and rows it leaves empty: runs in no sweep); else, with sweep_keys, the lowest-loss
    usable row of each grid point (see `_grid_point_keys`), ties going to the run whose name sorts
    first; else (no sweep) every usable point.
    """
    section = {"select": settings.select, "by": list(settings.sweep_keys), "method": None, "group_by": None,
               "runs_used": [], "runs_dropped": 0}
    keep = np.ones(len(points), dtype=bool)
    if settings.select == "all":
        section["method"] = "every usable run"
    elif "best_in_sweep" in points.columns:
        flags = points["best_in_sweep"].to_numpy(float)
        keep = (flags == 1) | np.isnan(flags)
        section["method"] = "best_in_sweep column (empty cells: runs in no sweep, kept)"
    elif settings.sweep_keys:
        labels, section["group_by"] = _grid_point_keys(points)
        order = np.lexsort((points["run"].astype(str).to_numpy(), points["loss"].to_numpy(float), labels))
        first = np.ones(len(order), dtype=bool)
        first[1:] = labels[order][1:] != labels[order][:-1]
        keep = np.zeros(len(points), dtype=bool)
        keep[order[first]] = True
        section["method"] = ("lowest loss per grid point (ties: the run name that sorts first) among usable "
                             "runs")
    else:
        section["method"] = "no sweep: every usable run"
    section["runs_used"] = points["run"][keep].tolist()
    section["runs_dropped"] = int((~keep).sum())
    return points[keep].reset_index(drop=True), section


def _hparam_group(rows: pd.DataFrame, column: str, others: list[str]) -> dict:
    """The optimum of one swept value in one (N, D) group (see HPARAM_RULE)."""
    if others:  # other swept keys: the slice through the group's best run
        best_row = rows.iloc[int(np.argmin(rows["loss"].to_numpy(float)))]
        same = np.ones(len(rows), dtype=bool)
        for other in others:
            same &= np.isclose(rows[other].to_numpy(float), float(best_row[other]), rtol=1e-9, equal_nan=True)
        rows = rows[same]
    value, loss = rows[column].to_numpy(float), rows["loss"].to_numpy(float)
    values, inverse = np.unique(value, return_inverse=True)
    mean_loss = np.bincount(inverse, loss) / np.bincount(inverse)
    out = {"params": float(rows["params"].median()), "tokens": float(rows["tokens"].median()),
           "flops": float(np.exp(np.log(rows["flops"]).mean())), "n_values": len(values), "n_rows": len(rows),
           "value_min": float(values[0]) if len(values) else None,
           "value_max": float(values[-1]) if len(values) else None,
           "best_value": None, "optimum": None, "optimum_loss": None, "edge": None, "method": None}
    if len(values) < 3:
        out["reason"] = f"{len(values)} distinct values; the optimum needs 3 or more"
        return out
    best = int(np.argmin(mean_loss))
    out["best_value"] = float(values[best])
    if best in (0, len(values) - 1):
        out.update(optimum=float(values[best]), optimum_loss=float(mean_loss[best]), edge=True,
                   method="edge: the best value is the " + ("smallest" if best == 0 else "largest") + " swept")
        return out
    window = np.isin(inverse, [best - 1, best, best + 1])
    u = np.log(value[window]) - math.log(values[best])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        ols = sm.OLS(loss[window], np.column_stack([np.ones_like(u), u, u * u])).fit()
    c0, c1, c2 = ols.params
    if c2 > 0:
        u_opt = float(np.clip(-c1 / (2 * c2), math.log(values[best - 1] / values[best]),
                              math.log(values[best + 1] / values[best])))
        out.update(optimum=float(values[best] * math.exp(u_opt)), optimum_loss=float(c0 + c1 * u_opt + c2 * u_opt**2),
                   edge=False, method="quadratic in log(value) through the best value and its neighbours")
    else:  # ties: the loss is flat around the best value
        out.update(optimum=float(values[best]), optimum_loss=float(mean_loss[best]), edge=False,
                   method="best value (the loss is flat around it)")
    return out


def _loglog_law(x, y) -> dict:
    """log y = log coefficient + exponent·log x by statsmodels OLS, with 95 % intervals."""
    X = sm.add_constant(np.log(x))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        ols = sm.OLS(np.log(y), X).fit()
        ci = np.asarray(ols.conf_int(0.05))
    finite = np.all(np.isfinite(ci))
    return {"coefficient": _exp(ols.params[0]), "exponent": float(ols.params[1]),
            "ci95": {"coefficient": [_exp(ci[0, 0]), _exp(ci[0, 1])] if finite else None,
                     "exponent": [float(ci[1, 0]), float(ci[1, 1])] if finite else None},
            "r2": float(ols.rsquared), "n_groups": len(x), "_ols": ols}


HPARAM_COLUMNS = ["key", "params", "tokens", "flops", "n_values", "n_rows", "value_min", "value_max",
                  "best_value", "optimum", "optimum_loss", "edge", "method"]


def fit_hyperparameters(points: pd.DataFrame, keys, predict_at: float | None):
    """The fit.json `hyperparameters` section (None when nothing could be fitted), why not, the
    tidy table (one row per key and (N, D) group) and fit.txt lines.

    Per key, from every usable run (not only the best): the optimum of each (N, D) group (see
    HPARAM_RULE), then optimum = coefficient·N^exponent and coefficient·C^exponent by OLS in
    log-log space over the groups whose optimum is not at an edge of the sweep, and the optimum
    predicted at `predict_at` FLOPs with the law's 95 % confidence and prediction intervals.
    """
    table = pd.DataFrame(columns=HPARAM_COLUMNS)
    if not keys:
        return None, "no swept hyperparameters (set sweep_keys in --spec, or --select-best-by)", table, []
    if len(points) == 0:
        return None, "no usable rows", table, []
    section, rows, text, reasons = {}, [], [], []
    group_labels = pd.MultiIndex.from_arrays([_cluster(points["params"], SIZE_TOLERANCE),
                                              _cluster(points["tokens"], SIZE_TOLERANCE)])
    labels = pd.factorize(group_labels, sort=True)[0]
    for key in keys:
        column = f"hp:{key}"
        others = [f"hp:{k}" for k in keys if k != key]
        usable = np.isfinite(points[column].to_numpy(float)) & (points[column].to_numpy(float) > 0)
        groups, skipped = [], []
        for label in np.unique(labels[usable]):
            group = _hparam_group(points[usable & (labels == label)], column, others)
            if group.get("reason"):
                skipped.append({"params": group["params"], "tokens": group["tokens"], "reason": group.pop("reason")})
            else:
                groups.append(group)
        if not groups:
            reasons.append((key, f"no (N, D) group has runs at 3 or more values of {key}"
                            + ("" if usable.any() else f" (no run has a positive {key})")))
            continue
        entry = {"rule": HPARAM_RULE, "n_rows": int(usable.sum()), "n_rows_without_value": int((~usable).sum()),
                 "groups": groups, "n_groups": len(groups), "n_edge": sum(bool(g["edge"]) for g in groups),
                 "skipped": skipped, "law_N": None, "law_C": None, "recommended": None}
        inner = [g for g in groups if not g["edge"]]
        for law_key, var in (("law_N", "params"), ("law_C", "flops")):
            x = np.array([g[var] for g in inner])
            if len(inner) < 3:
                entry[f"{law_key}_why"] = (f"{len(inner)} groups have an optimum inside the sweep "
                                           f"({entry['n_edge']} at an edge); the law needs 3 or more")
            elif _n_distinct(x) < 2:
                entry[f"{law_key}_why"] = f"every group has the same {var}"
            else:
                entry[law_key] = _loglog_law(x, np.array([g["optimum"] for g in inner]))
        law_c = entry["law_C"]
        if law_c is None:
            entry["recommended_why"] = f"no law in C ({entry['law_C_why']})"
        elif predict_at is None:
            entry["recommended_why"] = "no compute budget to predict at"
        else:
            frame = law_c["_ols"].get_prediction(np.array([[1.0, math.log(predict_at)]])).summary_frame(alpha=0.05)
            entry["recommended"] = {"flops": float(predict_at), "value": _exp(frame["mean"].iloc[0]),
                                    "ci95": [_exp(frame["mean_ci_lower"].iloc[0]), _exp(frame["mean_ci_upper"].iloc[0])],
                                    "pi95": [_exp(frame["obs_ci_lower"].iloc[0]), _exp(frame["obs_ci_upper"].iloc[0])]}
        for law_key in ("law_N", "law_C"):
            if entry[law_key]:
                entry[law_key].pop("_ols")
        section[key] = entry
        rows += [{"key": key, **{c: g[c] for c in HPARAM_COLUMNS[1:]}} for g in groups]
        text += [f"-- {key}: optimum per (N, D) group ({entry['n_edge']} of {len(groups)} at an edge of the sweep)",
                 pd.DataFrame(groups)[["params", "tokens", "n_values", "best_value", "optimum", "edge"]].to_string(index=False)]
        for law_key, symbol in (("law_N", "N"), ("law_C", "C")):
            law = entry[law_key]
            if law:
                text.append(f"{key}_opt = {law['coefficient']:.4g} * {symbol}^{law['exponent']:.4f}, exponent 95 % CI "
                            f"[{law['ci95']['exponent'][0]:.4f}, {law['ci95']['exponent'][1]:.4f}] "
                            f"({law['n_groups']} groups, R2 {law['r2']:.3f})" if law["ci95"]["exponent"]
                            else f"{key}_opt = {law['coefficient']:.4g} * {symbol}^{law['exponent']:.4f}")
            else:
                text.append(f"{key}_opt ~ {symbol}: not fitted: {entry[law_key + '_why']}")
        rec = entry["recommended"]
        text.append(f"recommended {key} at C = {rec['flops']:.4g} FLOPs: {rec['value']:.4g} (95 % CI "
                    f"[{rec['ci95'][0]:.4g}, {rec['ci95'][1]:.4g}], prediction interval [{rec['pi95'][0]:.4g}, "
                    f"{rec['pi95'][1]:.4g}])" if rec else f"recommended {key}: none: {entry['recommended_why']}")
        if entry["n_edge"]:
            text.append(f"note: {entry['n_edge']} groups have their best {key} at an edge of the sweep: widen it there")
    if not section:
        return None, "; ".join(f"{key}: {why}" for key, why in reasons), table, []
    for key, why in reasons:  # the fit.json convention one level down: null and <key>_why
        section[key], section[f"{key}_why"] = None, why
        text.append(f"-- {key}: not fitted: {why}")
    return section, None, pd.DataFrame(rows, columns=HPARAM_COLUMNS), text


# --------------------------------------------------------------------------------------------
# The whole fit


@dataclass
class FitResult:
    result: dict  # the fit.json contract
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    text: str = ""


def fit_frame(df: pd.DataFrame, settings: FitSettings | None = None, **kwargs) -> dict:
    """Run every fit on a metrics DataFrame and return the fit.json dict (see `fit_all`)."""
    return fit_all(df, settings, **kwargs).result


def fit_all(df: pd.DataFrame, settings: FitSettings | None = None, *, loss_col=None, params_col=None,
            tokens_col="tokens", flops_col=None, source="metrics", progress=None, **overrides) -> FitResult:
    """Every fit on a metrics DataFrame: the fit.json dict, tidy tables and the fit.txt text.

    `settings` (default FitSettings()) with any FitSettings field overridden by keyword, e.g.
    fit_all(df, bootstrap=0). loss_col overrides settings.target; params_col defaults to params or
    params_total as settings.params says; the other *_col name the CSV's columns.
    """
    settings = settings or SETTINGS_DEFAULTS
    known = {f.name for f in fields(FitSettings)}
    for key in overrides:
        if key not in known:
            raise ScalelabError(f"unknown fit setting {key!r} (known: {', '.join(sorted(known))})")
    if overrides:
        settings = replace(settings, **overrides)  # __post_init__ checks every value
    if loss_col is None and settings.target != SETTINGS_DEFAULTS.target:
        loss_col = settings.target  # the default target alone falls back to 'loss'
    if params_col is None:
        params_col = "params_total" if settings.params == "total" else "params"
    bootstrap, seed, holdout = settings.bootstrap, settings.seed, settings.holdout
    predict_flops, budgets = settings.predict_flops, settings.budgets
    workers = max(1, settings.workers or len(os.sched_getaffinity(0)))
    say = progress or (lambda message: None)

    usable, excluded, columns = prepare(df, loss_col, params_col, tokens_col, flops_col, source, settings.sweep_keys)
    points, selection = select_runs(usable, settings)
    result = {"target": columns["loss"], "n_points": len(points), "excluded": excluded, "columns": columns,
              "settings": {k: v for k, v in settings.to_dict().items() if k != "workers"}, "selection": selection}
    text = [f"scalelab fit: {source}",
            f"target {columns['loss']}, params {columns['params']}, tokens {columns['tokens']}, "
            f"flops {columns['flops']}; {len(points)} points, {len(excluded)} excluded",
            f"selection ({settings.select}): {selection['method']}; {len(points)} runs used, "
            f"{selection['runs_dropped']} left out"]
    tables = {"excluded": pd.DataFrame(excluded, columns=["run", "reason"])}
    starts = start_grid(settings.grid_points)

    # Approach 3 with bootstrap intervals.
    why3 = _identifiable(points)
    samples = pd.DataFrame(columns=[*PARAM_NAMES, "objective"])
    law = None
    if why3 is None:
        say(f"approach 3: {len(starts)} starts on {len(points)} points")
        law = fit_approach3(points["params"], points["tokens"], points["loss"], starts, workers)
        if bootstrap:
            say(f"approach 3: {bootstrap} bootstrap resamples")
            samples = bootstrap_approach3(points["params"], points["tokens"], points["loss"], law["theta"],
                                          bootstrap, seed, starts, workers)
        ci = {name: _percentile_ci(samples[name]) if bootstrap else None for name in PARAM_NAMES}
        result["approach3"] = {k: law[k] for k in ("E", "A", "B", "alpha", "beta", "objective", "huber_delta",
                                                   "n_starts")}
        result["approach3"].update({"ci95": ci, "a": law["a"], "b": law["b"], "bootstrap": bootstrap,
                                    "bootstrap_failed": int(samples["E"].isna().sum()),
                                    "starts_at_optimum": law["starts_at_optimum"], "seed": seed})
        tables["approach3"] = pd.DataFrame([_estimate_row(k, law[k], ci[k]) for k in PARAM_NAMES])
        text += ["", "== Approach 3: L = E + A/N^alpha + B/D^beta (summed Huber, delta "
                 f"{HUBER_DELTA:g}, on log loss) ==",
                 f"L-BFGS-B from {law['n_starts']} starts; {law['starts_at_optimum']} reached the best "
                 f"objective {law['objective']:.6g}; {bootstrap} bootstrap resamples (seed {seed})",
                 tables["approach3"].to_string(index=False)]
    else:
        result["approach3"], result["approach3_why"] = None, why3
        tables["approach3"] = pd.DataFrame(columns=["parameter", "estimate", "ci_low", "ci_high"])
        text += ["", f"== Approach 3: not fitted: {why3} =="]
    tables["bootstrap"] = samples

    # Power laws in one variable.
    for key, vary, fixed, coefficient, symbol, exponent in (("power_law_N", "params", "tokens", "A", "N", "alpha"),
                                                            ("power_law_D", "tokens", "params", "B", "D", "beta")):
        section, summaries, why = (_slice_power_law(points, vary, fixed, coefficient, exponent) if len(points)
                                   else (None, [], "no usable rows"))
        result[key] = section
        if why:
            result[f"{key}_why"] = why
            text += ["", f"== {key}: not fitted: {why} =="]
            continue
        text += ["", f"== {key}: L = E + {coefficient}/{symbol}^{exponent} at "
                 f"{fixed} = {section[f'slice_{fixed}']:.4g} ({section['n_points']} points) ==",
                 f"nonlinear (scipy): E {section['E']}, {exponent} {section[exponent]}, R2 {section['r2']}",
                 "log-log fits (statsmodels OLS, then RLM with Huber's T):", *summaries]
    tables["power_laws"] = _power_law_table(result)

    # Approach 2.
    section, why, summaries = fit_approach2(points, budgets, bootstrap, seed)
    result["approach2"] = section
    isoflop_columns = ["flops", "n_opt", "d_opt", "loss_opt", "n_points", "outside_sampled", "n_fit_points",
                       "fit_params_min", "fit_params_max", "n_opt_ci_low", "n_opt_ci_high"]
    if why:
        result["approach2_why"] = why
        text += ["", f"== Approach 2 (IsoFLOP): not fitted: {why} =="]
        tables["isoflop"] = pd.DataFrame(columns=isoflop_columns)
    else:
        tables["isoflop"] = pd.DataFrame([{**row, "n_opt_ci_low": (row["n_opt_ci95"] or [None, None])[0],
                                           "n_opt_ci_high": (row["n_opt_ci95"] or [None, None])[1]}
                                          for row in section["budgets"]], columns=isoflop_columns)
        text += ["", f"== Approach 2 (IsoFLOP), grouped by {section['grouping']}; each parabola fitted to "
                 f"{section['window']['rule']} ==",
                 tables["isoflop"].to_string(index=False),
                 f"a (N_opt ~ C^a) = {section['a']} CI {section['a_ci95']}; "
                 f"b (D_opt ~ C^b) = {section['b']} CI {section['b_ci95']} ({section['ci_method']}"
                 + (f", {bootstrap} resamples of the runs within each budget, {section['bootstrap_failed']} failed"
                    if section["ci_method"] == "bootstrap" else "") + ")", *summaries]
        if section["outside_sampled"]:
            text.append(f"note: the minimum lies outside the sampled sizes at budgets {section['outside_sampled']}")
    tables["approach2"] = pd.DataFrame([_estimate_row(k, section[k], section[f"{k}_ci95"]) for k in ("a", "b")]
                                       if section else [], columns=["parameter", "estimate", "ci_low", "ci_high"])

    # Compute-optimal allocation from Approach 3.
    tables["allocation"] = pd.DataFrame(columns=["flops", "n_opt", "d_opt", "tokens_per_param", "loss_pred",
                                                 "loss_ci_low", "loss_ci_high"])
    if law is None:
        result["allocation"], result["allocation_why"] = None, f"Approach 3 was not fitted ({why3})"
    elif not (law["alpha"] > 0 and law["beta"] > 0):
        result["allocation"] = None
        result["allocation_why"] = (f"the fitted exponents are not both positive (alpha {law['alpha']:.3g}, "
                                    f"beta {law['beta']:.3g}), so there is no compute-optimal split")
    else:
        flops = _prediction_budgets(points, predict_flops)
        result["allocation"] = allocation(law, flops, samples if bootstrap else None)
        tables["allocation"] = pd.DataFrame([{**{k: v for k, v in row.items() if not k.endswith("ci95")},
                                              "loss_ci_low": (row["loss_ci95"] or [None, None])[0],
                                              "loss_ci_high": (row["loss_ci95"] or [None, None])[1]}
                                             for row in result["allocation"]])
        text += ["", "== Compute-optimal allocation (Approach 3) ==", tables["allocation"].to_string(index=False)]
    if result["allocation"] is None:
        text += ["", f"== Compute-optimal allocation: not computed: {result['allocation_why']} =="]

    # Held-out check: refit without the top compute group and predict it.
    result["holdout"], why, tables["holdout"] = _holdout(points, holdout, starts, workers, say)
    if why:
        result["holdout_why"] = why
        text += ["", f"== Held-out check: not done: {why} =="]
    else:
        text += ["", f"== Held-out check: refit without the top compute group, max |relative error| "
                 f"{result['holdout']['max_abs_rel_error']:.4g} ==", tables["holdout"].to_string(index=False)]

    # Hyperparameter laws, from every usable run of the sweeps (not only the best).
    budgets_ahead = _prediction_budgets(usable, predict_flops)
    section, why, tables["hyperparameters"], lines = fit_hyperparameters(
        usable, settings.sweep_keys, max(budgets_ahead) if budgets_ahead else None)
    result["hyperparameters"] = section
    if why:
        result["hyperparameters_why"] = why
        text += ["", f"== Hyperparameters: not fitted: {why} =="]
    else:
        text += ["", f"== Hyperparameters: {HPARAM_RULE} ==", *lines]

    if excluded:
        text += ["", "== Excluded rows ==", tables["excluded"].to_string(index=False)]
    return FitResult(result, tables, "\n".join(text) + "\n")


def _prediction_budgets(points, predict_flops) -> list[float]:
    """The budgets to predict at: predict_flops, else 10x and 100x the largest run."""
    if predict_flops:
        return list(predict_flops)
    return [10 * points["flops"].max(), 100 * points["flops"].max()] if len(points) else []


def _estimate_row(parameter, estimate, ci) -> dict:
    low, high = ci or (None, None)
    return {"parameter": parameter, "estimate": estimate, "ci_low": low, "ci_high": high}


def allocation(law: dict, flops, samples: pd.DataFrame | None = None) -> list[dict]:
    """N_opt, D_opt and predicted loss per budget; bootstrap bands from each resample's own optimum."""
    rows = []
    for c in flops:
        n_opt, d_opt = compute_optimal(c, law["A"], law["B"], law["alpha"], law["beta"])
        row = {"flops": float(c), "n_opt": float(n_opt), "d_opt": float(d_opt),
               "tokens_per_param": float(d_opt / n_opt),
               "loss_pred": float(predict_loss(n_opt, d_opt, *(law[k] for k in ("E", "A", "B", "alpha", "beta")))),
               "loss_ci95": None, "n_opt_ci95": None, "d_opt_ci95": None}
        if samples is not None and len(samples):
            with np.errstate(all="ignore"):
                s = {k: samples[k].to_numpy(float) for k in ("E", "A", "B", "alpha", "beta")}
                n_b, d_b = compute_optimal(c, s["A"], s["B"], s["alpha"], s["beta"])
                loss_b = predict_loss(n_b, d_b, s["E"], s["A"], s["B"], s["alpha"], s["beta"])
            row.update(loss_ci95=_percentile_ci(loss_b), n_opt_ci95=_percentile_ci(n_b), d_opt_ci95=_percentile_ci(d_b))
        rows.append(row)
    return rows


def _holdout(points, rule, starts, workers, say):
    columns = ["run", "params", "tokens", "flops", "actual", "predicted", "rel_error"]
    empty = pd.DataFrame(columns=columns)
    if rule == "none":
        return None, "disabled (--holdout none)", empty
    if len(points) == 0:
        return None, "no usable rows", empty
    held = points["flops"].to_numpy() >= points["flops"].max() / (1 + FLOPS_TOLERANCE)
    why = _identifiable(points[~held])
    if why:
        return None, f"without the top compute group the law cannot be fitted: {why}", empty
    say(f"held-out check: refit on {int((~held).sum())} points, predict {int(held.sum())}")
    law = fit_approach3(points["params"][~held], points["tokens"][~held], points["loss"][~held], starts, workers)
    test = points[held]
    predicted = predict_loss(test["params"], test["tokens"], *(law[k] for k in ("E", "A", "B", "alpha", "beta")))
    actual = test["loss"].to_numpy(float)
    rel_error = (predicted - actual) / actual
    section = {"held_out": test["run"].tolist(), "predicted": predicted.tolist(), "actual": actual.tolist(),
               "rel_error": rel_error.tolist(), "max_abs_rel_error": float(np.max(np.abs(rel_error))),
               "flops_min": float(test["flops"].min()), "n_fit_points": int((~held).sum()),
               "fit": {k: law[k] for k in ("E", "A", "B", "alpha", "beta")}}
    table = pd.DataFrame({"run": test["run"].tolist(), "params": test["params"].to_numpy(),
                          "tokens": test["tokens"].to_numpy(), "flops": test["flops"].to_numpy(),
                          "actual": actual, "predicted": predicted, "rel_error": rel_error})
    return section, None, table


def _power_law_table(result) -> pd.DataFrame:
    rows = []
    for key, name, exponent in (("power_law_N", "A", "alpha"), ("power_law_D", "B", "beta")):
        section = result.get(key)
        if not section:
            continue
        for param in ("E", name, exponent):
            ci = section["ci95"].get(param) or [None, None]
            rows.append({"law": key, "method": "nonlinear", "parameter": param, "estimate": section[param],
                         "ci_low": ci[0], "ci_high": ci[1], "r2": section["r2"]})
        for method in ("loglog_ols", "loglog_rlm"):
            fit = section.get(method)
            if not fit:
                continue
            for param in (name, exponent):
                ci = fit["ci95"][param] or [None, None]
                rows.append({"law": key, "method": method, "parameter": param, "estimate": fit[param],
                             "ci_low": ci[0], "ci_high": ci[1], "r2": fit["r2"]})
    return pd.DataFrame(rows, columns=["law", "method", "parameter", "estimate", "ci_low", "ci_high", "r2"])


def write_outputs(fit: FitResult, out_dir) -> None:
    """fit.json, one CSV per table and fit.txt, each written atomically; fit.json is checked
    against its written contract (schemas/fit.schema.yaml) before anything is written."""
    from .files import _jsonable
    from .fitjson import check_fit_json

    out_dir = Path(out_dir)
    check_fit_json(json.loads(json.dumps(_jsonable(fit.result))), out_dir / "fit.json")
    for name, table in fit.tables.items():
        write_text(out_dir / f"{name}.csv", table.to_csv(index=False))
    write_text(out_dir / "fit.txt", fit.text)
    write_json(out_dir / "fit.json", fit.result)  # last: its presence means the rest is there


# --------------------------------------------------------------------------------------------
# CLI


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


# Flags that set a FitSettings field: (flag, field). Their argparse default is None ("not given"):
# the default lives in FitSettings alone, and a flag given overrides the --spec value.
SETTING_FLAGS = (("--loss-col", "target"), ("--bootstrap", "bootstrap"), ("--seed", "seed"),
                 ("--predict-flops", "predict_flops"), ("--budgets", "budgets"), ("--holdout", "holdout"),
                 ("--select", "select"), ("--select-best-by", "sweep_keys"), ("--workers", "workers"),
                 ("--grid-points", "grid_points"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SETTINGS_DEFAULTS
    parser.add_argument("metrics", help="metrics CSV (one row per run)")
    parser.add_argument("--out", required=True, help="output folder for fit.json, *.csv and fit.txt")
    parser.add_argument("--spec", metavar="JSON",
                        help="fit settings as a JSON object with any of the keys "
                        f"{', '.join(f.name for f in fields(FitSettings))}; flags given as well override it")
    parser.add_argument("--loss-col", help=f"target column (default: {d.target}, else loss)")
    parser.add_argument("--params-col", help="model size N (default: params, or params_total when the spec "
                        "says params: total)")
    parser.add_argument("--tokens-col", default="tokens", help="training tokens D (default: tokens)")
    parser.add_argument("--flops-col", help="compute C (default: flops_<x> for --params-col params_<x>, "
                        "else flops, else 6*params*tokens)")
    parser.add_argument("--bootstrap", type=int, help=f"bootstrap resamples (default: {d.bootstrap}; 0: none; "
                        f"at most {MAX_BOOTSTRAP})")
    parser.add_argument("--seed", type=int, help=f"seed of the bootstrap resamples (default: {d.seed})")
    parser.add_argument("--predict-flops", type=_positive_number, nargs="+", metavar="C",
                        help="budgets for the compute-optimal allocation and the hyperparameter recommendation, "
                        "e.g. 1e19 (default: 10x and 100x the largest run)")
    parser.add_argument("--budgets", type=_positive_number, nargs="+", metavar="C",
                        help="IsoFLOP budgets to group runs by when the CSV has no isoflop_budget column")
    parser.add_argument("--holdout", choices=CHOICES["holdout"],
                        help=f"held-out check: refit without the top compute group, or skip it (default: {d.holdout})")
    parser.add_argument("--select", choices=CHOICES["select"],
                        help=f"fit the best run of each sweep or every run (default: {d.select})")
    parser.add_argument("--select-best-by", nargs="+", metavar="COLUMN",
                        help="swept hyperparameter columns (e.g. lr): without a best_in_sweep column, keep the "
                        "lowest-loss run per (params, tokens, seed); and fit the hyperparameters' laws")
    parser.add_argument("--workers", type=int, help="processes (default: CPU count)")
    parser.add_argument("--grid-points", type=int,
                        help=f"start values per parameter; the grid has this^5 starts (default: {d.grid_points}, "
                        f"at most {MAX_GRID_POINTS})")


def settings_from_args(args: argparse.Namespace) -> FitSettings:
    """FitSettings defaults, then --spec, then the flags given; errors name the key or flag."""
    settings = SETTINGS_DEFAULTS
    if args.spec is not None:
        settings = FitSettings.from_dict(loads_json(args.spec, "--spec"), where="--spec")
    given = {}
    for flag, name in SETTING_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            given[name] = _check_setting(name, value, flag)
    return replace(settings, **given)


def _check_out_dir(out) -> Path:
    """--out must be a folder or creatable as one; checked before any work."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ScalelabError(f"--out {out}: exists and is not a folder")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ScalelabError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ScalelabError(f"--out {out}: {parent} is not writable")
    return out


def run(args: argparse.Namespace) -> None:
    settings = settings_from_args(args)
    out = _check_out_dir(args.out)
    df = read_metrics(args.metrics)
    fit = fit_all(df, settings, loss_col=args.loss_col, params_col=args.params_col, tokens_col=args.tokens_col,
                  flops_col=args.flops_col, source=str(args.metrics),
                  progress=lambda message: print(f"scalelab fit: {message}", flush=True))
    try:
        write_outputs(fit, out)
    except OSError as exc:
        raise ScalelabError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    a3 = fit.result["approach3"]
    if a3:
        print(f"scalelab fit: alpha {a3['alpha']:.4g}, beta {a3['beta']:.4g}, E {a3['E']:.4g} "
              f"({fit.result['n_points']} points)")
    else:
        print(f"scalelab fit: Approach 3 not fitted: {fit.result['approach3_why']}")
    print(f"scalelab fit: wrote {out}/fit.json")
