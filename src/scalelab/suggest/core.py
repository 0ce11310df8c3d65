"""`suggest_runs`: from the runs done and the fit's uncertainty (an Ensemble, or the Uncertainty of
every form: scalelab.suggest.uncertainty) to the table of suggested runs.

Candidates stay where the law has been checked: no size below the smallest trained, tokens per
parameter within TOKENS_PER_PARAM_REACH x the trained runs' range, and at least FRONTIER_SHARE of
the suggested runs' own FLOPs (each run's FLOPs alone; not of the budget, which a design that
spends less would leave to off-frontier runs) on runs whose N lies within `frontier_band` (default
2x) of the point law's compute-optimal N for their own FLOPs (`near_frontier`). A trusted range as a
share only (sizes below the smallest allowed) narrowed the bootstrap interval 2.8x more than the
hand-made extension on a misspecified truth but covered its true N_opt in 0 of 6 studies
(docs/benchmarks.md): the narrowing came from trusting the form where it is wrong. Far from that frontier (tiny models
trained on thousands of tokens per parameter) a c-optimal design would trust the form most
exactly where a wrong form errs most; the rest of the budget may still buy the off-frontier runs
that pin the exponents.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .candidates import SAME, Costs, candidates
from .design import Design, choose
from .uncertainty import as_uncertainty

TOKENS_PER_PARAM_REACH = 4.0
FRONTIER_SHARE = 0.5
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
    parameter allowed: for measuring what the range costs, bench/suggest_vs_grid.py --range share-only).
    """
    done_params = points["params"].to_numpy(float)
    done_tokens = points["tokens"].to_numpy(float)
    per_token = (points["flops"].to_numpy(float) / done_tokens) if "flops" in points else None
    cand_params, cand_tokens = _candidate_set(
        done_params, done_tokens, extra_sizes, realise, tokens_per_step, max_tokens
    )
    if frontier_band and trusted_range:
        keep = trusted(done_params, done_tokens, cand_params, cand_tokens)
        cand_params, cand_tokens = cand_params[keep], cand_tokens[keep]
    predicted, weights = predicted_candidates(done_params, cand_params, cooldown, endpoint_noise)
    costs = Costs(done_params, done_tokens, cand_params, cand_tokens, per_token, cooldown, predicted)
    capped = _frontier_capped(ensemble, costs, frontier_band)
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
    return _table(design, costs, predicted, endpoint_noise), design


def _frontier_capped(model, costs: Costs, frontier_band):
    """set_cost for the design: a set's FLOPs, or infinity when less than FRONTIER_SHARE of its own
    FLOPs (each run's alone; of the set's, not of the budget: a set that spends less than the budget
    keeps the share too) is on runs near the point law's frontier."""
    params, tokens = costs.cand_params, costs.cand_tokens
    near = near_frontier(model, params, tokens, frontier_band).astype(float) if frontier_band else np.ones(len(params))
    alone = np.array([costs.single(i) for i in range(len(params))])

    def capped(indices) -> float:
        chosen = list(indices)
        near_flops = float(np.sum(near[chosen] * alone[chosen]))
        return costs(chosen) if near_flops >= FRONTIER_SHARE * float(np.sum(alone[chosen])) * (1 - 1e-9) else np.inf

    return capped


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


def trusted(done_params, done_tokens, cand_params, cand_tokens) -> np.ndarray:
    """Candidates at or above the smallest trained size, with tokens per parameter within
    TOKENS_PER_PARAM_REACH x the trained runs' range."""
    ratio = np.asarray(done_tokens, float) / np.asarray(done_params, float)
    cand_ratio = np.asarray(cand_tokens, float) / np.asarray(cand_params, float)
    return (
        (np.asarray(cand_params, float) >= np.min(done_params) * (1 - 1e-9))
        & (cand_ratio >= ratio.min() / TOKENS_PER_PARAM_REACH)
        & (cand_ratio <= ratio.max() * TOKENS_PER_PARAM_REACH)
    )


def near_frontier(model, cand_params, cand_tokens, band: float) -> np.ndarray:
    """Candidates whose N lies within `band` of the point law's (else the ensemble median's)
    compute-optimal N at their own C = 6·N·D."""
    ensemble = as_uncertainty(model).point
    point = ensemble.point if ensemble.point is not None else np.nanmedian(ensemble.samples, axis=0)
    flops = 6 * np.asarray(cand_params, float) * np.asarray(cand_tokens, float)
    with np.errstate(all="ignore"):
        n_opt = np.array([ensemble.optimum(np.asarray(point, float)[None, :], c)[0] for c in flops]).ravel()
    ratio = np.abs(np.log(np.asarray(cand_params, float) / n_opt))
    return np.isfinite(ratio) & (ratio <= np.log(band))
