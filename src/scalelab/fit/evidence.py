"""What the rolling-origin checks say about each law form: its walk-forward errors, its extrapolation
scatter, which form is the point law, and each form's weight in the intervals.

Every form is refitted on the training runs of each check of `scalelab.fit.validation.rolling_checks`
and predicts that check's larger runs. From those misses:

- `extrapolation_sigma`: how much a prediction's scatter grows per e-fold outside the fitted runs:
  log(actual/predicted) ~ Normal(0, s^2 + (k d)^2) at every predicted run outside its refit's runs,
  d its `log_distance` (e-folds beyond the refit's runs) and s the scatter the refit explains
  itself (its residual scatter and, by the delta method, its parameters' uncertainty at that run).
  The value written is the one-sided 75 % profile-likelihood upper bound of k, not the
  maximum-likelihood k, which is exactly 0 on most ladders (the runs of one check share a refit,
  so they are not independent: the bound is a floor against collapse, not a calibrated 75 %).
- the point law (`choose_form`): Chinchilla's form stays the point law unless another form predicts
  the checks better by more than the spread of the difference: mean over checks of
  (Chinchilla's mean |log miss| − the other's) > MARGIN_SDS × their standard deviation, over at
  least MIN_COMMON checks. Walk-forward checks are nested and correlated, so a margin of standard
  errors would switch on noise; a margin of the spread itself asks that the other form win nearly
  every check.
- the weights (`evidence_weights`): pseudo-BMA+ (Yao et al. 2018): each form's log predictive
  density of each check's misses (Normal(0, s^2 + (k d)^2), k its extrapolation sigma), averaged
  over the check's runs; the weights are softmax of the summed densities, averaged over Bayesian-
  bootstrap redraws of the checks (Dirichlet(1)), which keeps a form whose advantage rests on one
  check from taking all the weight.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq, minimize_scalar

MARGIN_SDS = 1.0
MIN_COMMON = 3
UPPER_LR = 0.455  # chi^2_1 median: a one-sided 75 % upper bound
BAYES_DRAWS = 1000
RULE = (
    "Chinchilla's form is the point law unless another form's mean |log miss| over the rolling-origin "
    f"checks is lower by more than their spread ({MARGIN_SDS:g} x the standard deviation of the per-check "
    "differences) "
    f"(over {MIN_COMMON}+ shared checks); every form enters the intervals with its pseudo-BMA+ weight"
)


def per_check(misses) -> np.ndarray:
    """(z^2, d^2, s^2) per predicted run outside its refit's runs, from [(log misses, distances, scatter), ...]."""
    rows = []
    for z, d, s in misses:
        s = np.broadcast_to(np.asarray(s, float), np.shape(z))
        keep = np.isfinite(z) & np.isfinite(d) & np.isfinite(s) & (d > 1e-9)
        if keep.any():
            rows += list(zip(z[keep] ** 2, d[keep] ** 2, np.maximum(s[keep] ** 2, 1e-12)))
    return np.array(rows).reshape(-1, 3)


def extrapolation_sigma(misses) -> float | None:
    """The one-sided 75 % upper bound of the scatter per e-fold (see the module), None without a
    check that left its refit's range."""
    table = per_check(misses)
    if not len(table):
        return None
    r2, d2, s2 = table.T

    def nll(k):
        variance = s2 + k * k * d2
        return float(np.sum(np.log(variance) + r2 / variance))

    top = 10 * float(np.sqrt(np.max(r2 / d2))) + 1e-6
    best = minimize_scalar(nll, bounds=(0.0, top), method="bounded", options={"xatol": 1e-7})
    k_hat = 0.0 if nll(0.0) <= nll(best.x) else float(best.x)
    floor = nll(k_hat)
    excess = lambda k: 2 * (nll(k) - floor) - UPPER_LR  # noqa: E731
    high = max(top, 2 * k_hat + 1e-6)
    while excess(high) < 0 and high < 1e3:
        high *= 4
    return float(brentq(excess, k_hat, high, xtol=1e-7)) if excess(high) > 0 else float(high)


def choose_form(errors: dict[str, dict[str, float]], fitted: list[str]) -> tuple[str | None, str]:
    """The point law and why, from form -> check -> mean |log miss| (see the module)."""
    if not fitted:
        return None, "no form could be fitted"
    if "chinchilla" not in fitted:
        scored = {k: np.mean(list(errors[k].values())) for k in fitted if errors.get(k)}
        if not scored:
            return fitted[0], "no rolling check was possible; the first fitted form"
        best = min(scored, key=scored.get)
        return best, f"Chinchilla's form was not fitted; lowest mean |log miss| over the rolling checks ({best})"
    base = errors.get("chinchilla") or {}
    winners, notes = {}, []
    for name in fitted:
        if name == "chinchilla":
            continue
        common = [c for c in base if c in (errors.get(name) or {})]
        if len(common) < MIN_COMMON:
            notes.append(f"{name}: {len(common)} shared checks, too few to compare")
            continue
        diff = np.array([base[c] - errors[name][c] for c in common])
        mean, spread = float(diff.mean()), float(diff.std(ddof=1))
        notes.append(f"{name} better by {100 * mean:+.3f} % (spread {100 * spread:.3f} %, {len(common)} checks)")
        if mean > 0 and mean > MARGIN_SDS * spread:
            winners[name] = mean
    if winners:
        best = max(winners, key=winners.get)
        return best, f"{best} wins the rolling checks by more than their spread: " + "; ".join(notes)
    return "chinchilla", "no form wins the rolling checks by more than their spread" + (
        ": " + "; ".join(notes) if notes else ""
    )


def log_density(misses, k: float) -> float:
    """Mean over the check's runs of log Normal(z; 0, s^2 + (k d)^2)."""
    z, d, s = misses
    s = np.broadcast_to(np.asarray(s, float), np.shape(z))
    keep = np.isfinite(z) & np.isfinite(d) & np.isfinite(s)
    if not keep.any():
        return -np.inf
    variance = np.maximum(s[keep], 1e-6) ** 2 + (k * d[keep]) ** 2
    return float(np.mean(-0.5 * (np.log(2 * np.pi * variance) + z[keep] ** 2 / variance)))


def evidence_weights(densities: dict[str, dict[str, float]], seed: int = 0) -> dict[str, float]:
    """Pseudo-BMA+ weights from form -> check -> log predictive density (checks every form has)."""
    names = [k for k, v in densities.items() if v]
    if not names:
        return {}
    common = sorted(set.intersection(*(set(densities[k]) for k in names)))
    if not common:
        return {k: 1 / len(names) for k in names}
    table = np.array([[densities[k][c] for c in common] for k in names])  # forms x checks
    table = np.nan_to_num(table, nan=-1e6, neginf=-1e6)
    alphas = np.random.default_rng(seed).dirichlet(np.ones(len(common)), size=BAYES_DRAWS)
    scores = len(common) * alphas @ table.T  # draws x forms
    scores -= scores.max(axis=1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=1, keepdims=True)
    return {k: float(w) for k, w in zip(names, weights.mean(axis=0))}
