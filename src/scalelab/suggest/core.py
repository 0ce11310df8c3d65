"""`suggest_runs`: from the runs done and the fit's uncertainty (an Ensemble, or the Uncertainty of
every form: scalelab.suggest.uncertainty) to the table of suggested runs.

Candidates stay where the law has been checked: no size below the smallest trained, tokens per
parameter within TOKENS_PER_PARAM_REACH x the trained runs' range, and at least FRONTIER_SHARE of
the suggested runs' own FLOPs (each run's FLOPs alone; not of the budget, which a design that
spends less would leave to off-frontier runs) on runs whose N lies within `frontier_band` (default
2x, or the fit's own spread of that frontier where wider) of the compute-optimal N for their own
FLOPs, in at least FRONTIER_CONFIDENCE of the draws of the fit's own N_opt uncertainty
(`frontier_draws`: every form's resamples by its weight, with its drift). Against the point law
alone the share held by the fitted frontier, and runs at the band's edge fell on either side of the
true one (47 % within 2x of the true frontier in bench/suggest_vs_grid.py); asked of the draws, the
share holds in the truth about as often as the fit's uncertainty is right (docs/benchmarks.md). A
trusted range as a share only (sizes below the smallest allowed) narrowed the bootstrap interval
2.8x more than the hand-made extension on a misspecified truth but covered its true N_opt in 0 of 6
studies (docs/benchmarks.md): the narrowing came from trusting the form where it is wrong. Far from
that frontier (tiny models trained on thousands of tokens per parameter) a c-optimal design would
trust the form most exactly where a wrong form errs most; the rest of the budget may still buy the
off-frontier runs that pin the exponents.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

from .candidates import SAME, Costs, candidates
from .design import Design, choose
from .uncertainty import as_uncertainty, e_folds_beyond

TOKENS_PER_PARAM_REACH = 4.0
FRONTIER_SHARE = 0.5
FRONTIER_CONFIDENCE = 0.8  # the share must hold in this part of the fit's draws of the frontier
DRIFT_DRAWS = 5  # normal quantiles of a form's drift per resample
FRONTIER_STEP = 0.1  # e-folds of C between the points log N_opt is interpolated from
TABLE_COLUMNS = ["params", "tokens", "flops", "expected_width_after", "expected_loss_width_after"]


def suggest_runs(
    ensemble,
    points: pd.DataFrame,
    target_flops: float,
    budget_flops: float,
    max_runs: int,
    extra_sizes=(),
    cooldown: float | None = None,
    realise=None,
    tokens_per_step: int | None = None,
    max_tokens: int | None = None,
    frontier_band: float | None = 2.0,
    endpoint_noise: tuple[float, float] | None = None,
    trusted_range: bool = True,
    size_reach: float = 1.0,
) -> tuple[pd.DataFrame, Design]:
    """The suggested runs (one row each, in the order of what they add) and the design behind them.

    `points` has the runs done: params, tokens and, when the CSV has one, flops (their FLOPs per
    token price new runs; otherwise 6·N per token). `cooldown` (WSD's) makes runs of one size
    share a trunk. `realise(N)` maps a new size to the parameters of the shape that would be
    built for it, and `tokens_per_step` rounds new token counts up to whole optimizer steps, so the
    runs suggested are exactly the runs a config can train. `endpoint_noise` (WSD with predicted
    endpoints): (the curve law's sd of a predicted log loss, the fit's residual sigma): a new D of a size
    the study ran is then priced at its trunk extension and weighted as one observation of that sd.
    `trusted_range` False keeps only the frontier share (sizes below the smallest and any tokens per
    parameter allowed: for measuring what the range costs, bench/suggest_vs_grid.py --range share-only);
    `size_reach` lets the trusted range take sizes down to the smallest trained / size_reach (1: none below).
    """
    done_params = points["params"].to_numpy(float)
    done_tokens = points["tokens"].to_numpy(float)
    per_token = (points["flops"].to_numpy(float) / done_tokens) if "flops" in points else None
    cand_params, cand_tokens = _candidate_set(
        done_params, done_tokens, extra_sizes, realise, tokens_per_step, max_tokens
    )
    if frontier_band and trusted_range:
        keep = trusted(done_params, done_tokens, cand_params, cand_tokens, size_reach)
        cand_params, cand_tokens = cand_params[keep], cand_tokens[keep]
    predicted, weights = predicted_candidates(done_params, cand_params, cooldown, endpoint_noise)
    costs = Costs(done_params, done_tokens, cand_params, cand_tokens, per_token, cooldown, predicted)
    capped, half_width = _frontier_capped(ensemble, costs, frontier_band)
    design = choose(
        ensemble,
        done_params,
        done_tokens,
        cand_params,
        cand_tokens,
        target_flops,
        budget_flops,
        max_runs,
        capped,
        weights=weights,
        cand_flops=costs.per_token * cand_tokens,
    )
    if not np.isfinite(design.width_now):  # a fit without an optimum at the target: one line, no table
        design.chosen, design.width_after, design.loss_width_after, design.cost = [], [], [], 0.0
        design.forms_width_after, design.floor_after = [], []
        design.why_none = design.why_none or "the fit has no finite compute-optimal N at the target (no optimum)"
    if design.chosen and half_width is not None:  # how far "near the frontier" reached for these runs
        design.frontier_band_used = float(np.exp(np.max(half_width[design.chosen])))
    return _table(design, costs, predicted, endpoint_noise), design


def _frontier_capped(model, costs: Costs, frontier_band):
    """(set_cost for the design, each candidate's half-width of "near" in log N, or None without a band):
    a set's FLOPs, or infinity unless at least FRONTIER_SHARE of its own FLOPs (each run's alone; of the
    set's, not of the budget: a set that spends less than the budget keeps the share too) is on runs near
    the frontier in FRONTIER_CONFIDENCE of the fit's draws (`frontier_draws`)."""
    if not frontier_band:
        return costs, None
    inside, weights, half_width = frontier_draws(model, costs.cand_params, costs.cand_tokens, frontier_band)
    alone = np.array([costs.single(i) for i in range(len(costs.cand_params))])

    def capped(indices) -> float:
        chosen = list(indices)
        near_flops = alone[chosen] @ inside[chosen]  # per draw
        held = weights[near_flops >= FRONTIER_SHARE * float(np.sum(alone[chosen])) * (1 - 1e-9)].sum()
        return costs(chosen) if held >= FRONTIER_CONFIDENCE * (1 - 1e-9) else np.inf

    return capped, half_width


def _table(design: Design, costs: Costs, predicted, endpoint_noise) -> pd.DataFrame:
    """One row per chosen run; a run's FLOPs are what it adds to the runs before it (under WSD a shared
    trunk is paid once)."""
    rows, so_far = [], []
    for i, width, loss_width in zip(design.chosen, design.width_after, design.loss_width_after):
        before = costs(so_far)
        so_far.append(i)
        rows.append(
            {
                "params": float(costs.cand_params[i]),
                "tokens": float(costs.cand_tokens[i]),
                "flops": costs(so_far) - before,
                "expected_width_after": width,
                "expected_loss_width_after": loss_width,
                "predicted": bool(predicted[i]),
            }
        )
    columns = [*TABLE_COLUMNS, "predicted"] if endpoint_noise else TABLE_COLUMNS
    return pd.DataFrame(rows, columns=columns)


def predicted_candidates(done_params, cand_params, cooldown, endpoint_noise):
    """(which candidates would be predicted endpoints, their weights or None): under WSD with
    `endpoint_noise` = (sd, sigma), a candidate of a size the study ran, weighted sigma^2 / (sigma^2 + sd^2):
    one run measured with the runs' scatter sigma informs as much as 1/weight predicted endpoints."""
    predicted = np.zeros(len(cand_params), bool)
    if cooldown is None or endpoint_noise is None:
        return predicted, None
    sd, sigma = endpoint_noise
    done = np.unique(np.asarray(done_params, float))
    predicted = np.array([np.any(np.abs(done / n - 1) <= SAME) for n in np.asarray(cand_params, float)], bool)
    weight = sigma**2 / (sigma**2 + sd**2) if sigma > 0 else 0.0
    return predicted, np.where(predicted, weight, 1.0)


def _candidate_set(done_params, done_tokens, extra_sizes, realise, tokens_per_step, max_tokens):
    """(params, tokens) of every distinct candidate run the corpus can feed."""
    cand_params, cand_tokens = candidates(done_params, done_tokens, extra_sizes, realise, tokens_per_step)
    # Shapes can realise two ideal sizes as one: each (N, D) is one candidate, so never one row twice.
    pairs = np.unique(np.column_stack([cand_params, cand_tokens]), axis=0)
    cand_params, cand_tokens = pairs[:, 0], pairs[:, 1]
    if max_tokens:  # the corpus cannot feed more (a config without data.allow_repeat)
        fits = cand_tokens <= max_tokens
        cand_params, cand_tokens = cand_params[fits], cand_tokens[fits]
    return cand_params, cand_tokens


def trusted(done_params, done_tokens, cand_params, cand_tokens, size_reach: float = 1.0) -> np.ndarray:
    """Candidates at or above the smallest trained size (divided by `size_reach`), with tokens per
    parameter within TOKENS_PER_PARAM_REACH x the trained runs' range."""
    ratio = np.asarray(done_tokens, float) / np.asarray(done_params, float)
    cand_ratio = np.asarray(cand_tokens, float) / np.asarray(cand_params, float)
    return (
        (np.asarray(cand_params, float) >= np.min(done_params) / size_reach * (1 - SAME))  # within SAME: one size
        & (cand_ratio >= ratio.min() / TOKENS_PER_PARAM_REACH)
        & (cand_ratio <= ratio.max() * TOKENS_PER_PARAM_REACH)
    )


def frontier_draws(model, cand_params, cand_tokens, band: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inside, weights, half_width): whether each candidate's N lies near the compute-optimal N at its own
    C = 6·N·D in each draw of the fit's N_opt uncertainty (candidates x draws), each draw's weight (they sum
    to 1), and each candidate's half-width of near (log N). The draws are every form's resamples, by the
    form's weight, each shifted by the form's drift per e-fold times the e-folds of C beyond the largest
    fitted run, at DRIFT_DRAWS normal quantiles: the uncertainty the fit's N_opt interval states
    (scalelab.suggest.uncertainty). Near is within `band`, or within the draws' own spread where that is
    wider (the FRONTIER_CONFIDENCE quantile of their distance to their median): the fit cannot place a run
    nearer its frontier than it knows that frontier, and without the widening a run past the largest fitted
    compute met the share in no set once the drift spread the draws beyond the band (the design then spent
    a median 19-23 % of the hand-made FLOPs in bench/suggest_vs_grid.py --fit forms; docs/benchmarks.md)."""
    model = as_uncertainty(model)
    params = np.asarray(cand_params, float)
    log_flops = np.log(6 * params * np.asarray(cand_tokens, float))
    beyond = np.array([e_folds_beyond(np.exp(c), model.top_flops) for c in log_flops])
    form_weights = np.array([max(c.weight, 0.0) for c in model.components], float)
    form_weights = form_weights / form_weights.sum() if form_weights.sum() > 0 else np.ones(len(form_weights))
    draws, weights = [], []
    for form_weight, component in zip(form_weights, model.components):
        log_opt = _log_n_opt_at(component.ensemble, log_flops)  # (candidates, resamples)
        if not log_opt.shape[1]:
            continue
        quantiles = (np.arange(DRIFT_DRAWS) + 0.5) / DRIFT_DRAWS if component.drift else np.array([0.5])
        for z in norm.ppf(quantiles):
            draws.append(log_opt + (component.drift * beyond * z)[:, None])
            weights.append(np.full(log_opt.shape[1], form_weight / (log_opt.shape[1] * len(quantiles))))
    if not draws:  # no finite frontier in any draw: no candidate is near it
        return np.zeros((len(params), 1)), np.ones(1), np.full(len(params), np.log(band))
    draws, weights = np.concatenate(draws, axis=1), np.concatenate(weights)
    weights = weights / weights.sum()
    median = _row_quantile(draws, weights, 0.5)
    spread = _row_quantile(np.abs(draws - median[:, None]), weights, FRONTIER_CONFIDENCE)
    half_width = np.maximum(np.log(band), spread)
    return (np.abs(np.log(params)[:, None] - draws) <= half_width[:, None]).astype(float), weights, half_width


def _row_quantile(values, weights, q) -> np.ndarray:
    """The weighted q quantile of each row of `values` (rows x draws; the draws' weights sum to 1)."""
    order = np.argsort(values, axis=1)
    reached = np.cumsum(weights[order], axis=1) >= q * (1 - 1e-12)
    return np.take_along_axis(values, order, axis=1)[np.arange(len(values)), np.argmax(reached, axis=1)]


def _log_n_opt_at(ensemble, log_flops) -> np.ndarray:
    """log N_opt of each finite resample at each log C (candidates x resamples), interpolated in log C
    between points FRONTIER_STEP e-folds apart (log N_opt is smooth in log C; a form without a closed
    form searches once per point, not once per candidate); resamples without a finite frontier left out."""
    rows = np.asarray(ensemble.samples, float)
    rows = rows[np.all(np.isfinite(rows), axis=1)]
    grid = np.arange(log_flops.min(), log_flops.max() + FRONTIER_STEP, FRONTIER_STEP)
    with np.errstate(all="ignore"):
        at_grid = np.log(np.array([ensemble.optimum(rows, np.exp(c))[0] for c in grid], float).reshape(len(grid), -1))
    at_grid = at_grid[:, np.all(np.isfinite(at_grid), axis=0)]
    if len(grid) == 1:
        return np.repeat(at_grid, len(log_flops), axis=0)
    where = np.clip(np.searchsorted(grid, log_flops) - 1, 0, len(grid) - 2)
    frac = ((log_flops - grid[where]) / FRONTIER_STEP)[:, None]
    return at_grid[where] * (1 - frac) + at_grid[where + 1] * frac
