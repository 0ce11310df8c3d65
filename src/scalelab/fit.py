"""`scalelab fit`: scaling laws from any metrics CSV.

Four views of one ladder of runs, each written to `DIR/fit.json` (the contract read by later
stages), tidy CSV tables and a human-readable `fit.txt`:

- Approach 3 (Hoffmann et al. 2022, as replicated by Besiroglu et al. 2024): the law
  L(N, D) = E + A/N^alpha + B/D^beta, fitted in log space by minimising the *sum* of Huber
  losses (delta 1e-3) of log-loss residuals with L-BFGS-B from a grid of starts, with bootstrap
  95 % intervals. It gives the compute-optimal allocation and a held-out check.
- Power laws in one variable at the largest-D and largest-N slices (scipy and statsmodels).
- Approach 2 (IsoFLOP): a parabola in log N per compute budget, then N_opt ~ C^a by OLS.

A section that the data cannot identify is null, with `<section>_why` saying why.
"""
from __future__ import annotations

import os

# L-BFGS-B on five parameters calls BLAS on tiny vectors; a threaded OpenBLAS spends 10-20x
# more time spinning its threads than computing (measured on 2 cores), so the fit asks for one
# BLAS thread unless the user chose otherwise. This only works before numpy/scipy load.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import itertools
import math
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from scipy.optimize import curve_fit, minimize
from scipy.special import huber

from .errors import ScalelabError
from .files import write_json, write_text
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


def fit_approach2(points: pd.DataFrame, budgets=None) -> tuple[dict | None, str | None, list[str]]:
    """Per budget a quadratic of loss in log N (OLS) whose minimum is N_opt; then
    log N_opt = log G + a·log C and log D_opt = log G' + b·log C (OLS)."""
    groups, grouping = isoflop_groups(points, budgets) if len(points) else ([], "")
    rows, skipped, summaries = [], [], []
    for flops, where in groups:
        group = points.iloc[where]
        if _n_distinct(group["params"]) < 3:
            continue
        x = np.log(group["params"].to_numpy(float))
        center = x.mean()  # centring keeps the quadratic's columns well conditioned
        X = np.column_stack([np.ones_like(x), x - center, (x - center) ** 2])
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            ols = sm.OLS(group["loss"].to_numpy(float), X).fit()
            summaries.append(f"IsoFLOP budget {flops:.4g} FLOPs\n" + str(
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
        rows.append({"flops": flops, "n_opt": n_opt, "d_opt": flops / (6 * n_opt),
                     "loss_opt": c0 + c1 * x_opt + c2 * x_opt**2, "n_points": len(group),
                     "outside_sampled": bool(n_opt < group["params"].min() or n_opt > group["params"].max())})
    if not rows:
        why = ("no compute budget has runs at 3 or more model sizes" if not skipped
               else "no budget's loss has a minimum in log N")
        return None, why, summaries
    section = {"budgets": rows, "a": None, "a_ci95": None, "b": None, "b_ci95": None, "G": None,
               "grouping": grouping, "skipped": skipped,
               "outside_sampled": [r["flops"] for r in rows if r["outside_sampled"]]}
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
        section[f"{key}_ci95"] = [float(ci[0]), float(ci[1])] if np.all(np.isfinite(ci)) else None
        if key == "a":
            section["G"] = _exp(ols.params[0])
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

    if loss_col is None:
        if "loss" not in df.columns and "val_loss" not in df.columns:
            raise ScalelabError(f"{source}: no 'loss' or 'val_loss' column (set one with --loss-col); "
                                f"columns are: {', '.join(map(str, df.columns)) or 'none'}")
        loss_col = "loss" if "loss" in df.columns else "val_loss"
    if flops_col is None:
        # `--params-col params_total` goes with `flops_total`, so grouping uses one convention.
        matching = "flops" + params_col[len("params"):] if params_col.startswith("params") else None
        flops_col = next((c for c in (matching, "flops") if c and c in df.columns), None)
    else:
        need(flops_col, "--flops-col")
    return need(loss_col, "--loss-col"), need(params_col, "--params-col"), need(tokens_col, "--tokens-col"), flops_col


def prepare(df, loss_col=None, params_col="params", tokens_col="tokens", flops_col=None, source="metrics"):
    """Usable points (run, params, tokens, flops, loss, isoflop_budget) in a canonical order,
    the excluded rows with reasons, and the columns used."""
    loss_col, params_col, tokens_col, flops_col = _columns(df, loss_col, params_col, tokens_col, flops_col, source)
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
    # A canonical order makes every result, bootstrap included, independent of the row order.
    points["_key"] = points["run"].astype(str)
    points = points.sort_values(["params", "tokens", "flops", "loss", "_key"], kind="mergesort")
    points = points.drop(columns="_key").reset_index(drop=True)
    columns = {"loss": loss_col, "params": params_col, "tokens": tokens_col, "flops": flops_col or "6*params*tokens"}
    return points, excluded, columns


# --------------------------------------------------------------------------------------------
# The whole fit


@dataclass
class FitResult:
    result: dict  # the fit.json contract
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    text: str = ""


def fit_frame(df: pd.DataFrame, **kwargs) -> dict:
    """Run every fit on a metrics DataFrame and return the fit.json dict (see `fit_all`)."""
    return fit_all(df, **kwargs).result


def fit_all(df: pd.DataFrame, *, loss_col=None, params_col="params", tokens_col="tokens", flops_col=None,
            bootstrap=1000, seed=0, predict_flops=None, budgets=None, holdout="top", workers=None,
            grid_points=GRID_POINTS, source="metrics", progress=None) -> FitResult:
    """Every fit on a metrics DataFrame: the fit.json dict, tidy tables and the fit.txt text."""
    if bootstrap < 0:
        raise ScalelabError(f"--bootstrap must be 0 or more, got {bootstrap}")
    if holdout not in ("top", "none"):
        raise ScalelabError(f"--holdout must be 'top' or 'none', got {holdout!r}")
    if grid_points < 2:
        raise ScalelabError(f"--grid-points must be 2 or more, got {grid_points}")
    for name, values in (("--predict-flops", predict_flops), ("--budgets", budgets)):
        if values is not None and not all(np.isfinite(v) and v > 0 for v in values):
            raise ScalelabError(f"{name} must be positive numbers, got {list(values)}")
    workers = max(1, workers or len(os.sched_getaffinity(0)))
    say = progress or (lambda message: None)

    points, excluded, columns = prepare(df, loss_col, params_col, tokens_col, flops_col, source)
    result = {"target": columns["loss"], "n_points": len(points), "excluded": excluded, "columns": columns}
    text = [f"scalelab fit: {source}",
            f"target {columns['loss']}, params {columns['params']}, tokens {columns['tokens']}, "
            f"flops {columns['flops']}; {len(points)} points, {len(excluded)} excluded"]
    tables = {"excluded": pd.DataFrame(excluded, columns=["run", "reason"])}
    starts = start_grid(grid_points)

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
    section, why, summaries = fit_approach2(points, budgets)
    result["approach2"] = section
    if why:
        result["approach2_why"] = why
        text += ["", f"== Approach 2 (IsoFLOP): not fitted: {why} =="]
        tables["isoflop"] = pd.DataFrame(columns=["flops", "n_opt", "d_opt", "loss_opt", "n_points", "outside_sampled"])
    else:
        tables["isoflop"] = pd.DataFrame(section["budgets"])
        text += ["", f"== Approach 2 (IsoFLOP), grouped by {section['grouping']} ==",
                 tables["isoflop"].to_string(index=False),
                 f"a (N_opt ~ C^a) = {section['a']} CI {section['a_ci95']}; "
                 f"b (D_opt ~ C^b) = {section['b']} CI {section['b_ci95']}", *summaries]
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
        flops = list(predict_flops) if predict_flops else [10 * points["flops"].max(), 100 * points["flops"].max()]
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

    if excluded:
        text += ["", "== Excluded rows ==", tables["excluded"].to_string(index=False)]
    return FitResult(result, tables, "\n".join(text) + "\n")


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
    """fit.json, one CSV per table and fit.txt, each written atomically."""
    out_dir = Path(out_dir)
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("metrics", help="metrics CSV (one row per run)")
    parser.add_argument("--out", required=True, help="output folder for fit.json, *.csv and fit.txt")
    parser.add_argument("--loss-col", help="target column (default: loss, else val_loss)")
    parser.add_argument("--params-col", default="params", help="model size N (default: params)")
    parser.add_argument("--tokens-col", default="tokens", help="training tokens D (default: tokens)")
    parser.add_argument("--flops-col", help="compute C (default: flops_<x> for --params-col params_<x>, "
                        "else flops, else 6*params*tokens)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: 1000; 0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default: 0)")
    parser.add_argument("--predict-flops", type=_positive_number, nargs="+", metavar="C",
                        help="budgets for the compute-optimal allocation, e.g. 1e19 (default: 10x and 100x the "
                        "largest run)")
    parser.add_argument("--budgets", type=_positive_number, nargs="+", metavar="C",
                        help="IsoFLOP budgets to group runs by when the CSV has no isoflop_budget column")
    parser.add_argument("--holdout", choices=("top", "none"), default="top",
                        help="held-out check: refit without the top compute group (default) or skip it")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    parser.add_argument("--grid-points", type=int, default=GRID_POINTS,
                        help=f"start values per parameter; the grid has this^5 starts (default: {GRID_POINTS})")


def run(args: argparse.Namespace) -> None:
    if args.workers is not None and args.workers < 1:
        raise ScalelabError(f"--workers must be 1 or more, got {args.workers}")
    df = read_metrics(args.metrics)
    fit = fit_all(df, loss_col=args.loss_col, params_col=args.params_col, tokens_col=args.tokens_col,
                  flops_col=args.flops_col, bootstrap=args.bootstrap, seed=args.seed,
                  predict_flops=args.predict_flops, budgets=args.budgets, holdout=args.holdout,
                  workers=args.workers, grid_points=args.grid_points, source=str(args.metrics),
                  progress=lambda message: print(f"scalelab fit: {message}", flush=True))
    write_outputs(fit, args.out)
    a3 = fit.result["approach3"]
    if a3:
        print(f"scalelab fit: alpha {a3['alpha']:.4g}, beta {a3['beta']:.4g}, E {a3['E']:.4g} "
              f"({fit.result['n_points']} points)")
    else:
        print(f"scalelab fit: Approach 3 not fitted: {fit.result['approach3_why']}")
    print(f"scalelab fit: wrote {args.out}/fit.json")
