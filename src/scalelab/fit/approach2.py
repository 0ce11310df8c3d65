"""Approach 2 (IsoFLOP profiles), for fit.json's `approach2` section.

Runs are grouped by compute budget (`isoflop_groups`); at each budget a parabola of loss in
log N is fitted near its minimum (`isoflop_window`) and its vertex is N_opt; then N_opt ~ C^a
and D_opt ~ C^b by OLS across budgets. With a bootstrap, runs are resampled within each budget
and every step redone (`_approach2_bootstrap`, all resamples at once).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm

from .common import FLOPS_TOLERANCE, SIZE_TOLERANCE, _cluster, _exp, _n_distinct, _percentile_ci

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
NO_ISOFLOP_GROUPS = ("no IsoFLOP groups: Approach 2 needs an isoflop_budget column or --budgets (runs of a grid "
                     "whose FLOPs merely agree are not IsoFLOP profiles)")


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
    # Runs of a plain N x D grid whose FLOPs happen to agree are not IsoFLOP profiles: a parabola
    # through 3-4 accidental points says nothing reliable (it once gave a zero-width interval).
    return [], NO_ISOFLOP_GROUPS


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
        row, reason, summary, runs = _fit_budget(flops, group)
        summaries.append(summary)
        if reason:
            skipped.append({"flops": flops, "reason": reason})
        else:
            rows.append(row)
            fitted.append(runs)
    if not groups:
        return None, grouping or "no usable rows", summaries
    if not rows:
        why = ("no compute budget has runs at 3 or more model sizes" if not skipped
               else "no budget's loss has a minimum in log N")
        return None, why, summaries
    section = _new_section(rows, grouping, skipped, bootstrap)
    log_opt = _approach2_bootstrap(fitted, bootstrap, seed) if bootstrap else np.empty((0, len(rows)))
    for j, row in enumerate(rows):
        row["n_opt_ci95"] = _percentile_ci(np.exp(log_opt[:, j])) if bootstrap else None
    if len(rows) < 2:
        section["exponents_why"] = "only one budget has a minimum; the exponents need two"
        return section, None, summaries
    log_c = np.log([r["flops"] for r in rows])
    summaries += _exponents_ols(section, rows, log_c)
    if bootstrap:
        _exponents_bootstrap(section, log_opt, log_c)
    return section, None, summaries


def _fit_budget(flops, group: pd.DataFrame):
    """One budget's parabola: its row of the `budgets` list (None if it has no usable minimum),
    why not, the OLS summary, and (size labels, log N, loss) of all its runs for the bootstrap."""
    x_all = np.log(group["params"].to_numpy(float))
    y_all = group["loss"].to_numpy(float)
    labels = _cluster(group["params"], SIZE_TOLERANCE)
    runs = (labels, x_all, y_all)
    in_window = np.isin(labels, isoflop_window(labels, x_all, y_all))
    x, y = x_all[in_window], y_all[in_window]
    center = x.mean()  # centring keeps the quadratic's columns well conditioned
    X = np.column_stack([np.ones_like(x), x - center, (x - center) ** 2])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        ols = sm.OLS(y, X).fit()
        summary = (f"IsoFLOP budget {flops:.4g} FLOPs ({int(in_window.sum())} of {len(group)} runs, "
                   f"N {np.exp(x.min()):.4g} to {np.exp(x.max()):.4g})\n" + str(
                       ols.summary(yname="loss", xname=["const", "log N - mean", "(log N - mean)^2"])))
    c0, c1, c2 = ols.params
    if not c2 > 0:
        return None, "loss is not convex in log N (no minimum)", summary, runs
    x_opt = -c1 / (2 * c2)
    n_opt = _exp(center + x_opt)
    if not 0 < n_opt < np.inf:
        return None, "the minimum is too far outside the sampled sizes", summary, runs
    row = {"flops": flops, "n_opt": n_opt, "d_opt": flops / (6 * n_opt),
           "loss_opt": c0 + c1 * x_opt + c2 * x_opt**2, "n_points": len(group),
           "outside_sampled": bool(n_opt < group["params"].min() or n_opt > group["params"].max()),
           "n_fit_points": int(in_window.sum()), "n_fit_sizes": int(len(np.unique(labels[in_window]))),
           "fit_params_min": float(np.exp(x.min())), "fit_params_max": float(np.exp(x.max())),
           # loss = p0 + p1·ln N + p2·ln² N over [fit_params_min, fit_params_max], for drawing
           "parabola": [float(c0 - c1 * center + c2 * center**2), float(c1 - 2 * c2 * center), float(c2)],
           "n_opt_ci95": None, "runs": group["run"].tolist(), "fit_runs": group["run"][in_window].tolist()}
    return row, None, summary, runs


def _new_section(rows, grouping, skipped, bootstrap) -> dict:
    """The `approach2` section before the exponents are fitted."""
    return {"budgets": rows, "a": None, "a_ci95": None, "b": None, "b_ci95": None, "G": None,
            "grouping": grouping, "skipped": skipped,
            "outside_sampled": [r["flops"] for r in rows if r["outside_sampled"]],
            "window": {"factor": ISOFLOP_WINDOW, "min_sizes": ISOFLOP_MIN_SIZES,
                       "rule": f"sizes within {ISOFLOP_WINDOW:g}x of the lowest-loss size, widened to the "
                               f"{ISOFLOP_MIN_SIZES} nearest in log N"},
            "a_ci95_ols": None, "b_ci95_ols": None, "a_ci95_bootstrap": None, "b_ci95_bootstrap": None,
            "ci_method": None, "bootstrap": int(bootstrap), "bootstrap_failed": 0}


def _exponents_ols(section: dict, rows, log_c) -> list[str]:
    """a, b and G by OLS of log N_opt and log D_opt on log C, into `section`; the OLS summaries."""
    summaries = []
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
    return summaries


def _exponents_bootstrap(section: dict, log_opt, log_c) -> None:
    """The bootstrap's percentile intervals of a and b, into `section` (they replace the OLS ones
    when 2 or more resamples have every budget's minimum)."""
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
