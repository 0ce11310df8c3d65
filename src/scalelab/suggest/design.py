"""The design: which new (N, D) runs most narrow the interval of log N_opt at a compute target.

A Bayesian, linearised c-optimal design averaged over the bootstrap ensemble (Chaloner & Verdinelli
1995, section 2.4; Atkinson, Donev & Tobias 2007, ch. 17 for c-optimality). For each bootstrap
parameter vector theta_b, in a well-conditioned parametrisation z (the log of every parameter that
is positive across the ensemble):

    J_b(N, D)  = d log L(N, D) / dz at theta_b          (central differences: any law form works)
    I_b(S)     = sum over the runs done and the set S of J J^T  (+ a weak ridge for directions no run
                 identifies, e.g. a loss floor E pinned at its bound)
    var_b(S)   = grad g_b^T I_b(S)^-1 grad g_b,   g = log N_opt(C)

The noise sigma^2 is common to all runs, so it cancels in var_b(S) / var_b(now). A set S is scored by
the mean of that ratio over the ensemble (robust to where it is linearised, and free of the scale of
any one member), and the expected width after S is the current bootstrap width times the square
root of the mean ratio. Ties within 1e-4 go to the set that better narrows log L at the optimum.

Over several forms (scalelab.suggest.uncertainty: the fit's N_opt interval mixes them by weight) the
score is sum_f share_f x ratio_f, share_f a form's part of the interval's reducible variance
(w_f s_f^2), so the runs narrow what the fit's interval is made of; one form is exactly the above.
The forecasts carry the bootstrap's small-sample factor (uncertainty.bootstrap_bias) and the noise the fit
has measured (uncertainty.noise_factor), and the fit's interval after the runs is forecast with its floor
(the forms' disagreement and the drift beyond the largest run), which the runs narrow only by moving the
largest run toward the target.

The set is chosen greedily by width (not width per FLOP, which underspends) among the candidates
the remaining budget affords, then improved by exchange passes (Fedorov's exchange: swap one chosen
run for any affordable candidate while that narrows the width). Each step is a rank-one update, so
scoring every candidate costs a few vectorised operations over the ensemble.

numpy only; the law comes in as two vectorised functions of the parameter rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .uncertainty import (
    as_uncertainty,
    bootstrap_bias,
    forecast,
    noise_factor,
    reducible_shares,
    total_ratios,
    variance_parts,
)

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal
STEP = 1e-5  # central-difference step in z for log L
# and for log N_opt: larger, so that an optimum found by a search (a form without a closed form,
# accurate to ~1e-7) still differentiates cleanly; the O(step^2) error of a closed form stays ~1e-8
STEP_OPTIMUM = 1e-4
RIDGE = 1e-8  # weak prior precision, relative to the mean diagonal of the information
TIE = 1e-4  # width ratios this close are a tie, broken by the loss at C
MIN_GAIN = 0.005  # a run that narrows the expected width by less than 0.5 % is not worth running
EXCHANGE_PASSES = 3


@dataclass
class Ensemble:
    """The fit's uncertainty as parameter rows: the bootstrap resamples (finite rows only).

    loss(theta_rows, N, D) -> (rows, points) losses; optimum(theta_rows, C) -> (N_opt, D_opt), each (rows,).
    """

    names: tuple
    samples: np.ndarray  # (rows, parameters)
    loss: Callable
    optimum: Callable
    point: np.ndarray | None = None  # the full-data estimate


@dataclass
class Design:
    chosen: list  # indices into the candidates, in the order picked
    width_now: float  # the bootstrap's 95 % width of log N_opt at C
    width_after: list  # expected width after each chosen run (cumulative)
    loss_width_after: list  # expected 95 % width of log L at the optimum after each run
    loss_width_now: float
    cost: float  # FLOPs of the chosen set
    why_none: str | None = None
    # The fit's interval (forms by weight, drift: scalelab.suggest.uncertainty) now and forecast after
    # each run, and the floor the runs cannot narrow: the bootstrap's width when the fit states none.
    forms_width_now: float = float("nan")
    forms_width_after: list = field(default_factory=list)
    floor_after: list = field(default_factory=list)
    # how far "near the frontier" reached for the chosen runs (a factor in N): the band, or the fit's own
    # spread of the frontier where wider (scalelab.suggest.core.frontier_draws); nan without a band
    frontier_band_used: float = float("nan")


def _to_z(theta, positive):
    z = np.array(theta, float, copy=True)
    z[..., positive] = np.log(z[..., positive])
    return z


def _from_z(z, positive):
    theta = np.array(z, float, copy=True)
    theta[..., positive] = np.exp(theta[..., positive])
    return theta


def _jacobians(ensemble: Ensemble, z, positive, params, tokens):
    """d log L / dz at each row of z: (rows, points, parameters)."""
    rows, p = z.shape
    out = np.empty((rows, len(params), p))
    for k in range(p):
        up, down = z.copy(), z.copy()
        up[:, k] += STEP
        down[:, k] -= STEP
        with np.errstate(all="ignore"):
            high = np.log(ensemble.loss(_from_z(up, positive), params, tokens))
            low = np.log(ensemble.loss(_from_z(down, positive), params, tokens))
        out[:, :, k] = (high - low) / (2 * STEP)
    return out


def _gradients(func, z, positive, step=STEP_OPTIMUM):
    """d func / dz at each row of z: (rows, parameters)."""
    rows, p = z.shape
    out = np.empty((rows, p))
    for k in range(p):
        up, down = z.copy(), z.copy()
        up[:, k] += step
        down[:, k] -= step
        with np.errstate(all="ignore"):
            out[:, k] = (func(_from_z(up, positive)) - func(_from_z(down, positive))) / (2 * step)
    return out


def log_n_opt(ensemble: Ensemble, theta, flops):
    with np.errstate(all="ignore"):
        return np.log(ensemble.optimum(theta, flops)[0])


def log_loss_opt(ensemble: Ensemble, theta, flops):
    """log L at the compute-optimal (N, D) of each row at C."""
    with np.errstate(all="ignore"):
        n_opt, d_opt = ensemble.optimum(theta, flops)
        # loss() evaluates every row at every point; the diagonal is each row at its own optimum.
        return np.log(np.array([ensemble.loss(theta[[i]], n_opt[[i]], d_opt[[i]])[0, 0] for i in range(len(theta))]))


def width_now(ensemble: Ensemble, flops) -> float:
    """The 95 % percentile interval width of log N_opt at C over the ensemble."""
    values = log_n_opt(ensemble, ensemble.samples, flops)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(high - low)


class _State:
    """Per ensemble row: the inverse information M and the gradients of log N_opt and log L_opt."""

    def __init__(self, info, grad_g, grad_h):
        self.info = info
        self.M = np.linalg.inv(info)
        self.grad_g, self.grad_h = grad_g, grad_h
        self.var_g0 = np.einsum("bi,bij,bj->b", grad_g, self.M, grad_g)
        self.var_h0 = np.einsum("bi,bij,bj->b", grad_h, self.M, grad_h)

    def ratios_after_each(self, M, J):
        """Mean variance ratios (log N_opt, log L_opt) after adding each candidate to the set whose
        inverse information is M: J is (rows, candidates, p)."""
        MJ = np.einsum("bij,bcj->bci", M, J)
        s = 1.0 + np.einsum("bci,bci->bc", J, MJ)
        var_g = (
            np.einsum("bi,bij,bj->b", self.grad_g, M, self.grad_g)[:, None]
            - np.einsum("bi,bci->bc", self.grad_g, MJ) ** 2 / s
        )
        var_h = (
            np.einsum("bi,bij,bj->b", self.grad_h, M, self.grad_h)[:, None]
            - np.einsum("bi,bci->bc", self.grad_h, MJ) ** 2 / s
        )
        return (var_g / self.var_g0[:, None]).mean(axis=0), (var_h / self.var_h0[:, None]).mean(axis=0)

    def inverse_with(self, J_rows):
        """M after adding the runs whose Jacobians are J_rows (rows, k, p)."""
        return np.linalg.inv(self.info + np.einsum("bki,bkj->bij", J_rows, J_rows))

    def ratios_of(self, M):
        var_g = np.einsum("bi,bij,bj->b", self.grad_g, M, self.grad_g)
        var_h = np.einsum("bi,bij,bj->b", self.grad_h, M, self.grad_h)
        return float((var_g / self.var_g0).mean()), float((var_h / self.var_h0).mean())


def _best(ratio_g, ratio_h, allowed):
    """The allowed candidate with the lowest width ratio, ties (within TIE) to the lowest loss ratio."""
    if not allowed.any():
        return None
    g = np.where(allowed, ratio_g, np.inf)
    near = allowed & (g <= g.min() + TIE)
    return int(np.argmin(np.where(near, ratio_h, np.inf)))


class _Mixed:
    """The forms' linearised states scored together: the reducible variance ratio sum_f share_f r_f(S)
    (scalelab.suggest.uncertainty), the fit's whole interval's ratio (the reducible part and the floor
    that only a run closer to the target lowers) and the point law's loss ratio; one form without
    drift: exactly its own ratios."""

    def __init__(self, parts, shares, model, cand_flops):
        self.parts, self.shares = parts, np.asarray(shares, float)  # parts: [(state, J_cand)], point first
        self.model, self.cand_flops = model, np.asarray(cand_flops, float)

    def _inverse(self, state, J_cand, chosen):
        return state.inverse_with(J_cand[:, chosen]) if chosen else state.M

    def after_each(self, chosen):
        """(the whole interval's variance ratio, the loss ratio, the reducible ratio) after adding each
        candidate to `chosen`."""
        ratio_g, ratio_h = 0.0, None
        for share, (state, J_cand) in zip(self.shares, self.parts):
            g, h = state.ratios_after_each(self._inverse(state, J_cand, chosen), J_cand)
            ratio_g = ratio_g + share * g
            ratio_h = h if ratio_h is None else ratio_h
        top = float(np.max(self.cand_flops[chosen])) if chosen else 0.0
        return total_ratios(self.model, ratio_g, np.maximum(self.cand_flops, top)), ratio_h, ratio_g


def _finite_samples(ensemble: Ensemble, flops, max_rows: int) -> np.ndarray:
    """The resamples with finite parameters and a finite log N_opt at `flops`, evenly thinned to max_rows."""
    samples = np.asarray(ensemble.samples, float)
    samples = samples[np.all(np.isfinite(samples), axis=1)]
    g_all = log_n_opt(ensemble, samples, flops)
    samples = samples[np.isfinite(g_all)]
    if len(samples) > max_rows:  # an even subsample keeps the cost bounded for large bootstraps
        samples = samples[np.linspace(0, len(samples) - 1, max_rows).round().astype(int)]
    return samples


def _linearised(ensemble: Ensemble, samples, flops, done_params, done_tokens, cand_params, cand_tokens):
    """(state, the candidates' Jacobians, the width of log L_opt now) on the resamples whose
    derivatives are finite, or None when fewer than 2 are."""
    positive = np.all(samples > 0, axis=0)
    z = _to_z(samples, positive)
    done_params, done_tokens = np.asarray(done_params, float), np.asarray(done_tokens, float)
    cand_params, cand_tokens = np.asarray(cand_params, float), np.asarray(cand_tokens, float)
    J_done = _jacobians(ensemble, z, positive, done_params, done_tokens)
    J_cand = _jacobians(ensemble, z, positive, cand_params, cand_tokens)
    info = np.einsum("bki,bkj->bij", J_done, J_done)
    scale = np.einsum("bii->b", info) / info.shape[1]
    info += (RIDGE * scale)[:, None, None] * np.eye(info.shape[1])
    grad_g = _gradients(lambda t: log_n_opt(ensemble, t, flops), z, positive)
    grad_h = _gradients(lambda t: log_loss_opt(ensemble, t, flops), z, positive)
    keep = (
        np.all(np.isfinite(J_cand), axis=(1, 2))
        & np.all(np.isfinite(J_done), axis=(1, 2))
        & np.all(np.isfinite(grad_g), axis=1)
        & np.all(np.isfinite(grad_h), axis=1)
        # a resample whose log N_opt or log L_opt does not move with its parameters (a search clamped at
        # its bound) makes every ratio 0/0, and one NaN in the mean over resamples left no run to suggest
        & np.any(grad_g != 0, axis=1)
        & np.any(grad_h != 0, axis=1)
    )
    if keep.sum() < 2:
        return None
    h_now = log_loss_opt(ensemble, samples[keep], flops)
    loss_width = float(np.subtract(*np.percentile(h_now[np.isfinite(h_now)], [97.5, 2.5])))
    return _State(info[keep], grad_g[keep], grad_h[keep]), J_cand[keep], loss_width


def _worth_it(score, reducible, current) -> bool:
    """Whether a run narrows the fit's whole interval or its reducible part by MIN_GAIN (`current`: the
    two before it). The linearised widths: the bootstrap's small-sample bias is in the forecasts, not
    in what is worth running."""
    return bool(
        np.sqrt(score) <= np.sqrt(current[0]) * (1 - MIN_GAIN)
        or np.sqrt(reducible) <= np.sqrt(current[1]) * (1 - MIN_GAIN)
    )


def _greedy(scorer: _Mixed, affordable: Callable, max_runs: int) -> tuple[list[int], float]:
    """(chosen, its score): the largest expected narrowing among what the budget still affords."""
    chosen: list[int] = []
    current = (1.0, 1.0)
    while len(chosen) < max_runs:
        score, ratio_h, ratio_g = scorer.after_each(chosen)
        pick = _best(score, ratio_h, affordable(chosen))
        if pick is None or not _worth_it(score[pick], ratio_g[pick], current):
            break
        chosen.append(pick)
        current = (float(score[pick]), float(ratio_g[pick]))
    return chosen, current[0]


def _exchange(scorer: _Mixed, affordable: Callable, chosen: list[int], current: float) -> list[int]:
    """Exchange passes: swap one chosen run for a better affordable candidate (in place)."""
    for _ in range(EXCHANGE_PASSES if chosen else 0):
        improved = False
        for slot in range(len(chosen)):
            others = chosen[:slot] + chosen[slot + 1 :]
            score, ratio_h, _ = scorer.after_each(others)
            pick = _best(score, ratio_h, affordable(others))
            if pick is not None and pick != chosen[slot] and score[pick] < current - TIE:
                chosen[slot] = pick
                current = float(score[pick])
                improved = True
        if not improved:
            break
    return chosen


def _in_order(scorer: _Mixed, chosen: list[int]):
    """(runs, reducible width ratios after each, loss ratios after each): the chosen runs ordered by
    what each adds (greedy again, within the chosen set), for the table."""
    ordered, ratios, loss_ratios = [], [], []
    rest = list(chosen)
    while rest:
        score, ratio_h, ratio_g = scorer.after_each(ordered)
        mask = np.zeros(len(score), bool)
        mask[rest] = True
        pick = _best(score, ratio_h, mask)
        ordered.append(pick)
        rest.remove(pick)
        ratios.append(float(ratio_g[pick]))
        loss_ratios.append(float(ratio_h[pick]))
    return ordered, ratios, loss_ratios


def _linearised_forms(
    model, flops, max_rows, done_params, done_tokens, cand_params, cand_tokens, cand_flops, weights=None
):
    """(scorer, the point law's loss width now) over the forms whose derivatives are finite (the point
    law's first), or (None, why) when the point law's are not. `weights`: a candidate measured with more
    noise than the runs (a predicted endpoint) informs less, by its weight."""
    kept, parts, loss_width = [], [], None
    for k, component in enumerate(model.components):
        samples = _finite_samples(component.ensemble, flops, max_rows)
        linearised = (
            _linearised(component.ensemble, samples, flops, done_params, done_tokens, cand_params, cand_tokens)
            if len(samples) >= 2
            else None
        )
        if linearised is None:
            if k == 0:
                return None, (
                    "fewer than 2 bootstrap resamples have a finite N_opt at the target"
                    if len(samples) < 2
                    else "the law's derivatives are not finite on the bootstrap resamples"
                )
            continue
        kept.append(component)
        state, J_cand = linearised[:2]
        if weights is not None:
            J_cand = J_cand * np.sqrt(np.asarray(weights, float))[None, :, None]
        parts.append((state, J_cand))
        loss_width = linearised[2] if loss_width is None else loss_width
    model.components = kept
    variance_parts(model, lambda ensemble, rows: log_n_opt(ensemble, rows, flops), flops)
    return _Mixed(parts, reducible_shares(model.parts), model, cand_flops), loss_width


def _forecasts(model, ordered, ratios, loss_ratios, width, loss_width, bias: Callable, cand_flops) -> Design:
    """The Design with its forecasts after each run: the bootstrap's widths (the linearised ratio and the
    bootstrap's small-sample factor) and the fit's whole interval with its floor."""
    design = Design(
        ordered,
        width,
        [width * float(np.sqrt(r * bias(k))) for k, r in enumerate(ratios, 1)],
        [loss_width * float(np.sqrt(r * bias(k))) for k, r in enumerate(loss_ratios, 1)],
        loss_width,
        0.0,
    )
    design.forms_width_now = forecast(model, 1.0, 1.0, None, width)[0]
    for k, ratio in enumerate(ratios, 1):
        after, floor = forecast(model, ratio, bias(k), float(np.max(np.asarray(cand_flops)[ordered[:k]])), width)
        design.forms_width_after.append(after)
        design.floor_after.append(floor)
    return design


def choose(
    ensemble,
    done_params,
    done_tokens,
    cand_params,
    cand_tokens,
    flops,
    budget,
    max_runs,
    set_cost: Callable,
    max_rows: int = 200,
    cand_flops=None,
    weights=None,
) -> Design:
    """The runs (indices into the candidates) that most narrow the 95 % interval of log N_opt at C.

    `ensemble`: an Ensemble, or an Uncertainty (scalelab.suggest.uncertainty: the fit's forms by weight,
    with their drift). set_cost(indices) -> FLOPs of running that set of candidates (it may share work
    between them, e.g. WSD trunks); the chosen set costs at most `budget` and has at most `max_runs`
    runs. `cand_flops`: each candidate's FLOPs (6·N·D without), for how far it moves the largest
    fitted compute toward C. `weights`: each candidate's information relative to a measured run (a
    predicted endpoint's is below 1; None: all 1).
    """
    model = as_uncertainty(ensemble)
    width = width_now(model.point, flops)
    empty = Design([], width, [], [], float("nan"), 0.0)
    if cand_flops is None:
        cand_flops = 6 * np.asarray(cand_params, float) * np.asarray(cand_tokens, float)
    scorer, loss_width = _linearised_forms(
        model, flops, max_rows, done_params, done_tokens, cand_params, cand_tokens, cand_flops, weights
    )
    if scorer is None:
        empty.why_none = loss_width
        return empty
    n_cand, n_done, n_params = len(cand_params), len(done_params), np.asarray(model.point.samples).shape[1]

    def affordable(chosen):
        """Which candidates the budget still affords beside `chosen` (set_cost may share work)."""
        return np.array([i not in chosen and set_cost(chosen + [i]) <= budget * (1 + 1e-9) for i in range(n_cand)])

    def bias(k):
        return bootstrap_bias(n_done, n_params, k) * noise_factor(n_done, n_params, k)

    chosen, current = _greedy(scorer, affordable, max_runs)
    chosen = _exchange(scorer, affordable, chosen, current)
    ordered, ratios, loss_ratios = _in_order(scorer, chosen)
    design = _forecasts(model, ordered, ratios, loss_ratios, width, loss_width, bias, cand_flops)
    design.cost = float(set_cost(ordered))
    if not ordered:
        design.why_none = (
            f"no affordable run narrows the interval of log N_opt by {MIN_GAIN:.1%} or more "
            "(the interval is as narrow as these candidates and the noise allow)"
        )
    return design
