"""Approach 2 (IsoFLOP profiles), for fit.json's `approach2` section, the way Porian et al.
(2024, "Resolving Discrepancies in Compute-Optimal Scaling of Language Models") estimate it.

Runs are grouped by compute budget (`isoflop_groups`). At each budget the loss of every sampled
size (averaged over its runs) is interpolated in log N by an Akima spline of log loss, whose
minimum is N_opt: a local interpolant, so no single curve is forced through a wide span of sizes
(a parabola over the span is pulled towards the flatter side). The loss noise is estimated from
the runs (`loss_noise`) and every budget's curve redrawn `bootstrap` times with that noise; a
budget's N_opt is the median of the redrawn minima, and their spread weighs it. Then
log N_opt = log G + a·log C by weighted least squares (statsmodels WLS, weights 1/sd²), and the
interval of a is the percentile interval of the same regression through the redrawn minima.
D_opt = C / (6 N_opt), so b = 1 - a.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy.interpolate import Akima1DInterpolator

from .common import FLOPS_TOLERANCE, SIZE_TOLERANCE, cluster, safe_exp, n_distinct, percentile_ci

# The loss noise is the residual scatter of single runs (in log loss) around a parabola in log N
# fitted near each budget's minimum, pooled over budgets: the sizes within NOISE_WINDOW of the
# lowest-loss size, widened to the NOISE_MIN_SIZES sizes nearest to it. Narrow, because a parabola
# over a wider span also measures how far the curve is from a parabola: on Porian et al.'s
# constant-lr curves a 2x window gives 0.2 % (their seed-to-seed noise is about 0.06 %), a 10x one
# 2.6 %; on simulated curves with 0.2 % and 1 % noise the 2x window recovers 0.2 % and 0.7-1.3 %.
NOISE_WINDOW = 2.0
NOISE_MIN_SIZES = 5
# A budget's weight is 1/sd² of its redrawn log N_opt, the sd no smaller than this fraction of the
# mean log spacing of its sizes (a spline's minimum is no more precise than the sampling), and
# inflated by (redraws / redraws with an interior minimum). Fewer than MIN_INTERIOR of the redraws
# with an interior minimum and the budget is left out: its minimum is not bracketed. Both as in
# Porian et al.'s analysis.py (interp_flop, vectorized_interp_with_seed_noise).
SD_FLOOR_SPACING = 0.33
MIN_INTERIOR = 0.5
METHOD = (
    "akima: per budget an Akima spline of log loss over log N (size means), its minimum N_opt; "
    "redrawn with the estimated loss noise, N_opt the median of the redrawn minima; "
    "N_opt ~ C^a by weighted least squares (weights 1/sd² of the redrawn log N_opt)"
)
NO_ISOFLOP_GROUPS = (
    "no IsoFLOP groups: Approach 2 needs an isoflop_budget column or --budgets (runs of a grid "
    "whose FLOPs merely agree are not IsoFLOP profiles)"
)


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
    # Runs of a plain N x D grid whose FLOPs happen to agree are not IsoFLOP profiles: a curve
    # through 3-4 accidental points says nothing reliable (it once gave a zero-width interval).
    return [], NO_ISOFLOP_GROUPS


def isoflop_window(labels, log_params, loss, factor=NOISE_WINDOW, min_sizes=NOISE_MIN_SIZES) -> np.ndarray:
    """Size labels near one budget's minimum: the lowest-loss size (loss averaged over its runs) and
    every size within `factor` of it, widened to the `min_sizes` sizes nearest to it in log N
    (ties: the smaller size) when the window holds fewer. `labels` number the sizes of the rows."""
    present = np.flatnonzero(np.bincount(labels))
    counts = np.bincount(labels)[present]
    centre = np.bincount(labels, log_params)[present] / counts
    mean_loss = np.bincount(labels, loss)[present] / counts
    best = int(np.argmin(mean_loss))  # first minimum: the smaller size on a tie
    distance = np.abs(centre - centre[best])
    chosen = distance <= math.log(factor) + 1e-12
    if chosen.sum() < min_sizes:
        order = np.lexsort((centre, distance))  # nearest first, then the smaller size
        chosen = np.zeros(len(present), dtype=bool)
        chosen[order[:min_sizes]] = True
    return present[chosen]


def loss_noise(budgets) -> tuple[float | None, int]:
    """(sd of a single run's log loss, its degrees of freedom): the residuals of a parabola in
    log N fitted, per budget, to the runs near its minimum (`isoflop_window`), pooled. None when
    no budget has more runs there than a parabola has coefficients. `budgets` holds each budget's
    (size labels, log N, log loss) of its runs."""
    rss, dof = 0.0, 0
    for labels, x, y in budgets:
        keep = np.isin(labels, isoflop_window(labels, x, y))
        if keep.sum() <= 3 or len(np.unique(labels[keep])) < 3:
            continue
        u = x[keep] - x[keep].mean()  # centred: well-conditioned columns
        design = np.column_stack([np.ones_like(u), u, u**2])
        residual = y[keep] - design @ np.linalg.lstsq(design, y[keep], rcond=None)[0]
        rss, dof = rss + float(residual @ residual), dof + int(keep.sum()) - 3
    return (math.sqrt(rss / dof), dof) if dof else (None, 0)


def spline_minima(x, y):
    """The minimum of the Akima spline through (x, y[:, j]) for every column j at once, exactly
    (each piece is a cubic): (its x, its value, whether it lies strictly inside (x[0], x[-1]))."""
    y = np.asarray(y, float).reshape(len(x), -1)
    spline = Akima1DInterpolator(x, y, axis=0)
    c3, c2, c1, c0 = spline.c  # each (pieces, columns); piece i is sum c_p (x - x[i])^p
    width = np.diff(x)[:, None]
    # Stationary points: 3 c3 t² + 2 c2 t + c1 = 0, solved the stable way (no cancellation, and
    # c3 = 0 leaves the one root c1 / q of a parabola).
    with np.errstate(all="ignore"):
        root = np.sqrt(c2**2 - 3 * c3 * c1)
        q = -(c2 + np.where(c2 >= 0, root, -root))
        roots = np.stack([q / (3 * c3), c1 / q])
        inside = np.isfinite(roots) & (roots > 0) & (roots < width)
        t = np.where(inside, roots, 0.0)
        value = np.where(inside, ((c3 * t + c2) * t + c1) * t + c0, np.inf)
    # Candidates: every data point, then every piece's stationary points.
    where = np.concatenate([np.broadcast_to(x[:, None], y.shape), (x[:-1, None] + t).reshape(-1, y.shape[1])])
    values = np.concatenate([y, value.reshape(-1, y.shape[1])])
    best = np.argmin(values, axis=0)
    columns = np.arange(y.shape[1])
    interior = (best != 0) & (best != len(x) - 1)
    return where[best, columns], values[best, columns], interior


def fit_approach2(points: pd.DataFrame, budgets=None, bootstrap=0, seed=0) -> tuple[dict | None, str | None, list[str]]:
    """Per budget the minimum of an Akima spline of log loss over log N (`spline_minima`); with
    `bootstrap` redraws of every budget's losses (the noise `loss_noise` estimates), N_opt is the
    median of the redrawn minima and a the weighted least squares slope of log N_opt on log C
    (weights 1/sd² of the redrawn log N_opt), its interval (a_ci95) the percentile interval of the
    same regression through the redrawn minima; the regression's own interval stays as
    a_ci95_ols. Without redraws, N_opt is the spline's minimum and the regression unweighted.
    """
    groups, grouping = isoflop_groups(points, budgets) if len(points) else ([], "")
    if not groups:
        return None, grouping or "no usable rows", []
    runs = []
    for flops, where in groups:
        group = points.iloc[where]
        if n_distinct(group["params"]) >= 3:
            runs.append(
                (
                    flops,
                    group,
                    (
                        cluster(group["params"], SIZE_TOLERANCE),
                        np.log(group["params"].to_numpy(float)),
                        np.log(group["loss"].to_numpy(float)),
                    ),
                )
            )
    if not runs:
        return None, "no compute budget has runs at 3 or more model sizes", []
    sigma, dof = loss_noise([r[2] for r in runs])
    draws = int(bootstrap) if sigma is not None else 0
    rng = np.random.default_rng([seed, 2])  # a stream of its own, apart from Approach 3's
    rows, skipped, minima = [], [], []
    for flops, group, sizes in runs:
        row, reason, redrawn = _fit_budget(flops, group, sizes, sigma, draws, rng)
        if reason:
            skipped.append({"flops": flops, "reason": reason})
        else:
            rows.append(row)
            minima.append(redrawn)
    if not rows:
        return None, "no budget's loss has a minimum inside its sampled sizes", []
    section = _new_section(rows, grouping, skipped, bootstrap, sigma, dof, draws)
    summaries = [
        f"IsoFLOP loss noise: sd of a run's log loss {_text(sigma)} ({dof} degrees of freedom: "
        f"{section['noise']['rule']})"
    ]
    if len(rows) < 2:
        section["exponents_why"] = "only one budget has a minimum; the exponents need two"
        return section, None, summaries
    log_c = np.log([r["flops"] for r in rows])
    weights = np.array([r["log_n_opt_sd"] ** -2.0 for r in rows]) if draws else np.ones(len(rows))
    summaries += _exponents_wls(section, rows, log_c, weights)
    if draws:
        _exponents_bootstrap(section, minima, log_c, weights)
    return section, None, summaries


def _text(value) -> str:
    return "none" if value is None else f"{value:.4g}"


def _fit_budget(flops, group: pd.DataFrame, sizes, sigma, draws, rng):
    """One budget: its row of the `budgets` list (None with the reason it has no usable minimum),
    and the redrawn log N_opt that have an interior minimum (empty without redraws)."""
    labels, x_runs, y_runs = sizes
    counts = np.bincount(labels)
    x = np.bincount(labels, x_runs) / counts  # sizes in increasing order: labels grow with the size
    y = np.log(np.bincount(labels, np.exp(y_runs)) / counts)  # log of the mean loss of each size's runs
    x_min, y_min, interior = (v[0] for v in spline_minima(x, y))
    if not interior:
        side = "smallest" if x_min <= x[0] else "largest"
        return None, f"the lowest loss is at the {side} sampled size (no minimum inside the sizes)", []
    row = {
        "flops": flops,
        "n_opt": safe_exp(x_min),
        "loss_opt": float(np.exp(y_min)),
        "n_points": len(group),
        "outside_sampled": False,
        "n_fit_points": len(group),
        "n_fit_sizes": len(x),
        "fit_params_min": float(np.exp(x[0])),
        "fit_params_max": float(np.exp(x[-1])),
        "n_opt_ci95": None,
        "log_n_opt_sd": None,
        "interior_fraction": None,
    }
    redrawn = np.empty(0)
    if draws:
        # Each size's mean log loss redrawn with the noise of a mean of its runs.
        noisy = y[:, None] + sigma / np.sqrt(counts)[:, None] * rng.standard_normal((len(x), draws))
        stars, _, ok = spline_minima(x, noisy)
        row["interior_fraction"] = float(ok.mean())
        if ok.mean() < MIN_INTERIOR:
            return (
                None,
                (
                    f"only {ok.mean():.0%} of the redrawn curves have their minimum inside the sampled "
                    "sizes (the minimum is not bracketed)"
                ),
                [],
            )
        redrawn = stars[ok]
        floor = SD_FLOOR_SPACING * (x[-1] - x[0]) / (len(x) - 1)
        row["log_n_opt_sd"] = float(max(redrawn.std(), floor) / ok.mean())
        row["n_opt"] = safe_exp(np.median(redrawn))
        row["n_opt_ci95"] = percentile_ci(np.exp(redrawn))
        row["loss_opt"] = float(np.exp(Akima1DInterpolator(x, y)(np.log(row["n_opt"]))))
    row["d_opt"] = flops / (6 * row["n_opt"])
    # The spline itself, for drawing: loss over the sampled sizes.
    grid = np.linspace(x[0], x[-1], 60)
    row["curve"] = {"params": np.exp(grid).tolist(), "loss": np.exp(Akima1DInterpolator(x, y)(grid)).tolist()}
    row["runs"] = group["run"].tolist()
    row["fit_runs"] = row["runs"]
    return row, None, redrawn


def _new_section(rows, grouping, skipped, bootstrap, sigma, dof, draws) -> dict:
    """The `approach2` section before the exponents are fitted."""
    return {
        "budgets": rows,
        "a": None,
        "a_ci95": None,
        "b": None,
        "b_ci95": None,
        "G": None,
        "grouping": grouping,
        "skipped": skipped,
        "method": METHOD,
        "outside_sampled": [r["flops"] for r in rows if r["outside_sampled"]],
        "noise": {
            "sd_log_loss": sigma,
            "dof": dof,
            "rule": f"residuals of a parabola in log N through the runs within {NOISE_WINDOW:g}x of "
            f"each budget's lowest-loss size (at least the {NOISE_MIN_SIZES} nearest sizes), "
            "pooled over budgets",
        },
        "window": {
            "factor": NOISE_WINDOW,
            "min_sizes": NOISE_MIN_SIZES,
            "rule": f"noise: sizes within {NOISE_WINDOW:g}x of the lowest-loss size, widened to the "
            f"{NOISE_MIN_SIZES} nearest in log N; N_opt: every size, Akima spline",
        },
        "weights": "1/sd² of the redrawn log N_opt" if draws else "equal",
        "a_ci95_ols": None,
        "b_ci95_ols": None,
        "a_ci95_bootstrap": None,
        "b_ci95_bootstrap": None,
        "ci_method": None,
        "bootstrap": int(draws),
        "bootstrap_failed": 0,
        "bootstrap_why": None
        if draws or not bootstrap
        else "the loss noise cannot be estimated (no budget has more than 3 runs near its minimum), so the "
        "curves are not redrawn",
    }


def _exponents_wls(section: dict, rows, log_c, weights) -> list[str]:
    """a, b and G by weighted least squares of log N_opt and log D_opt on log C, into `section`;
    the summaries."""
    summaries = []
    for key, target in (("a", "n_opt"), ("b", "d_opt")):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            wls = sm.WLS(np.log([r[target] for r in rows]), sm.add_constant(log_c), weights=weights).fit()
            summaries.append(str(wls.summary(yname=f"log {target}", xname=["log G", key])))
            ci = np.asarray(wls.conf_int(0.05))[1]
        section[key] = float(wls.params[1])
        section[f"{key}_ci95_ols"] = [float(ci[0]), float(ci[1])] if np.all(np.isfinite(ci)) else None
        if key == "a":
            section["G"] = safe_exp(wls.params[0])
    section["a_ci95"], section["b_ci95"], section["ci_method"] = section["a_ci95_ols"], section["b_ci95_ols"], "ols"
    return summaries


def _exponents_bootstrap(section: dict, minima, log_c, weights) -> None:
    """The percentile intervals of a and b from the regression through the redrawn minima, into
    `section` (they replace the regression's own when 2 or more redraws remain). Redraw i takes
    every budget's i-th redrawn minimum that lies inside its sizes (the redraws are independent
    across budgets), so as many remain as the budget with the fewest such minima has."""
    n = min(len(m) for m in minima)
    section["bootstrap_failed"] = section["bootstrap"] - n
    if n >= 2:
        log_opt = np.stack([m[:n] for m in minima], axis=1)  # (redraws, budgets)
        dc = log_c - np.average(log_c, weights=weights)
        slopes = log_opt @ (weights * dc) / ((weights * dc) @ dc)
        section["a_ci95_bootstrap"] = percentile_ci(slopes)
        section["b_ci95_bootstrap"] = percentile_ci(1 - slopes)
        section["a_ci95"], section["b_ci95"] = section["a_ci95_bootstrap"], section["b_ci95_bootstrap"]
        section["ci_method"] = "bootstrap"
