"""The uncertainty the design works over: the fit's N_opt interval (scalelab.laws.fitted.FittedLaw.allocate),
its forms mixed by their evidence weights, each with its bootstrap and its drift beyond the fitted compute.

In the normal approximation that interval mixes, per form f of weight w_f, Normal(c_f, s_f^2 + (d_f b)^2)
in log N_opt at the target: c_f the form's own N_opt, s_f its bootstrap spread, d_f its `optimum_drift`
per e-fold of compute, b the e-folds from the largest fitted run to the target. Its variance splits into

    reducible  sum_f w_f s_f^2        what new runs narrow: each form's share by its own linearised
                                      variance ratio r_f(S) (scalelab.suggest.design)
    floor      sum_f w_f (d_f b)^2 + sum_f w_f (c_f - c)^2
                                      what runs inside the fitted compute do not remove: the drift, which
                                      shrinks only as a run moves the largest fitted compute toward the
                                      target (b(S)), and the forms' disagreement

The design narrows the reducible part (`Mixed`); the forecast of the fit's interval after the runs is
the interval now times sqrt((reducible(S) + floor(S)) / (reducible + floor)): never narrower than the
floor (`forecast`).

Both forecasts carry the bootstrap's small-sample bias too (`bootstrap_bias`): a case bootstrap of n
runs and p parameters reports about (n - p)/n of the sampling variance (as HC0 against HC1 for a
linear model's sandwich variance), so the width a refit reports after k more runs is the linearised
forecast times sqrt(((n + k - p)/(n + k)) / ((n - p)/n)). From a 3 x 3 start that is most of why the
measured width after the first round was 1.6x the plain forecast (docs/benchmarks.md).

And they carry the noise the fit has measured (`noise_factor`): a width now is in units of the noise scale s the
fit estimated from nu = n - p residual degrees of freedom, the width after in units of the refit's. With
s^2 ~ sigma^2 chi2_nu / nu, E[sigma / s] = sqrt(nu / 2) Gamma((nu - 1)/2) / Gamma(nu / 2) (1.25 at nu = 4) and
E[s_after / sigma] = c4(nu + k), so a forecast scaled from the width now alone is short by their product
wherever s came out low by chance: from a 3 x 3 start, a median 1.71x in round 1 on 6 of 12 studies of
bench/suggest_vs_grid.py, 1.40x with the factor (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import gammaln

IQR_SD = 1.349  # the interquartile range of a standard normal: the fit's robust bootstrap spread


@dataclass
class Component:
    """One form of the fit: its weight, its bootstrap as an Ensemble, its drift of log N_opt per e-fold."""

    weight: float
    ensemble: Any  # scalelab.suggest.design.Ensemble
    drift: float = 0.0
    name: str = ""


@dataclass
class Uncertainty:
    """The forms the design works over, the point law's first; `top_flops` the largest fitted run's FLOPs
    (the drift grows beyond it); `stated_width` the fit's 95 % width of log N_opt at the target now."""

    components: list
    top_flops: float | None = None
    stated_width: float | None = None
    parts: dict = field(default_factory=dict)  # filled by `variance_parts`
    drift_measured: bool = True  # False: no form had a rolling check to measure its drift on

    @property
    def point(self):
        return self.components[0].ensemble


def as_uncertainty(model) -> Uncertainty:
    """An Uncertainty as is; a bare Ensemble as the one form, without drift."""
    return model if isinstance(model, Uncertainty) else Uncertainty([Component(1.0, model)])


def robust_spread(values) -> float:
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) < 4:
        return 0.0
    q1, q3 = np.percentile(values, [25, 75])
    return float((q3 - q1) / IQR_SD)


def e_folds_beyond(target_flops, top_flops) -> float:
    if not top_flops:
        return 0.0
    return float(max(0.0, np.log(target_flops / top_flops)))


def variance_parts(model: Uncertainty, log_n_opt, target_flops) -> dict:
    """Each form's weight share, bootstrap variance s_f^2 and centre c_f (log N_opt of its point law,
    else its median), and the forms' disagreement sum_f w_f (c_f - c)^2; `log_n_opt(ensemble, rows)`."""
    weights = np.array([max(c.weight, 0.0) for c in model.components], float)
    weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(weights), 1 / len(weights))
    spreads, centres = [], []
    for component in model.components:
        ensemble = component.ensemble
        spreads.append(robust_spread(log_n_opt(ensemble, np.asarray(ensemble.samples, float))))
        if ensemble.point is not None:
            centre = float(np.asarray(log_n_opt(ensemble, np.asarray(ensemble.point, float)[None, :])).ravel()[0])
        else:
            centre = float(np.nanmedian(log_n_opt(ensemble, np.asarray(ensemble.samples, float))))
        centres.append(centre)
    centres = np.array(centres)
    finite = np.isfinite(centres)
    mean = float(np.sum(weights[finite] * centres[finite]) / max(np.sum(weights[finite]), 1e-300))
    model.parts = {
        "weights": weights,
        "variances": np.array(spreads) ** 2,
        "disagreement": float(np.sum(weights[finite] * (centres[finite] - mean) ** 2)),
        "drifts": np.array([float(c.drift or 0.0) for c in model.components]),
        "target_flops": float(target_flops),
    }
    return model.parts


def reducible_shares(parts: dict) -> np.ndarray:
    """Each form's share of the reducible variance sum_f w_f s_f^2 (equal shares when it is 0)."""
    share = parts["weights"] * parts["variances"]
    return share / share.sum() if share.sum() > 0 else parts["weights"]


def bootstrap_bias(n_done: int, n_params: int, added: int) -> float:
    """The factor on a bootstrap's variance after `added` more runs (see the module); 1 without room."""
    n_after = n_done + added
    if n_done <= n_params or n_after <= n_params:
        return 1.0
    return ((n_after - n_params) / n_after) / ((n_done - n_params) / n_done)


def noise_factor(n_done: int, n_params: int, added: int) -> float:
    """The factor on a forecast variance for the noise scale the refit will measure (see the module):
    (E[sigma / s_now] E[s_after / sigma])^2 with nu = n - p residual degrees of freedom now and nu + added
    after; 1 without room (nu <= 1, where E[sigma / s] is not finite)."""
    nu_now, nu_after = n_done - n_params, n_done + added - n_params
    if nu_now <= 1:
        return 1.0
    inverse_now = np.sqrt(nu_now / 2) * np.exp(gammaln((nu_now - 1) / 2) - gammaln(nu_now / 2))
    after = np.sqrt(2 / nu_after) * np.exp(gammaln((nu_after + 1) / 2) - gammaln(nu_after / 2))
    return float((inverse_now * after) ** 2)


def floor_variance(model: Uncertainty, top_flops) -> float:
    """The variance the runs cannot narrow with the largest fitted compute at `top_flops`."""
    parts = model.parts
    beyond = e_folds_beyond(parts["target_flops"], top_flops)
    return float(np.sum(parts["weights"] * (parts["drifts"] * beyond) ** 2) + parts["disagreement"])


def total_ratios(model: Uncertainty, reducible_ratio, tops) -> np.ndarray:
    """The fit's interval variance after each candidate set relative to now, (reducible x ratio +
    floor(largest compute)) / (reducible + floor now), from the reducible ratios and the largest fitted
    compute after each set (`tops`, one per set); the reducible ratio itself when nothing drifts."""
    parts = model.parts
    reducible = float(np.sum(parts["weights"] * parts["variances"]))
    tops = np.maximum(np.asarray(tops, float), model.top_flops or 0.0)
    drift = float(np.sum(parts["weights"] * parts["drifts"] ** 2))
    if drift == 0 and parts["disagreement"] == 0:
        return np.asarray(reducible_ratio, float)
    with np.errstate(divide="ignore"):
        beyond = np.maximum(0.0, np.log(parts["target_flops"] / tops)) if model.top_flops else np.zeros(len(tops))
    floors = drift * beyond**2 + parts["disagreement"]
    now = reducible + floor_variance(model, model.top_flops)
    return (reducible * np.asarray(reducible_ratio, float) + floors) / now


def forecast(model: Uncertainty, ratio, bias, top_flops, width_now: float) -> tuple[float, float]:
    """(the fit's interval width after the runs, its floor) from the reducible part's variance ratio
    `ratio` (bootstrap bias `bias` included), the largest fitted compute after them and the fit's
    width now (the bootstrap's when the fit states none)."""
    parts = model.parts
    reducible = float(np.sum(parts["weights"] * parts["variances"]))
    now = reducible + floor_variance(model, model.top_flops)
    stated = model.stated_width if model.stated_width else width_now
    if not (now > 0 and np.isfinite(stated)):
        return float("nan"), float("nan")
    floor = floor_variance(model, max(top_flops or 0.0, model.top_flops or 0.0) or None)
    after = reducible * ratio * bias + floor
    return float(stated * np.sqrt(after / now)), float(stated * np.sqrt(floor / now))
