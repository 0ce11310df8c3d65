"""How a metric's methods make one forecast: their weights, and the scatter of their weighted mean.

Walk-forward checks on a ladder of a few sizes rarely tell the methods apart: their errors one
e-fold beyond a refit say little about which method is better 10x or 100x further out, and a
choice by the lower mean error often picks the worse one. So the forecast is the weighted mean of
the methods (fit.json's `point`: "weighted"), each method the checks do not clearly beat getting
an equal share (`set_weights`): the methods' errors are far from perfectly correlated (one
extrapolates a law of the task loss, the other of the metric itself), so their mean is closer to
the truth than either on average. A method is clearly beaten when another beats it by more than
the spread of the per-check differences, the rule the loss law's forms are chosen by
(scalelab.fit.evidence).

The weighted mean is then checked as one predictor (`combined_section`): its miss at each
held-out run is the weighted mean of the methods' misses, its out-of-sample error is their mean
absolute value, and its extrapolation scatter per e-fold is learnt from those misses as each
method's is. Its interval (scalelab.laws.fitted_metrics) is Normal about the weighted mean with
the robust spread of the same weighted mean over the bootstrap resamples (both methods refitted
on the same resampled runs) and that scatter; where the methods disagree more than the checks
showed, the interval still reaches the other method's point.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from .evidence import MARGIN_SDS, MIN_COMMON


def clearly_beaten(methods: dict) -> dict:
    """method -> a method that beats it on the rolling checks by more than their spread: over
    MIN_COMMON+ shared checks, the mean of (its error - the other's) exceeds MARGIN_SDS x their
    standard deviation."""
    beaten = {}
    for loser, lose in methods.items():
        for winner, win in methods.items():
            common = [c for c in lose["checks"] if c in win["checks"]] if winner != loser else []
            if len(common) < MIN_COMMON:
                continue
            diff = np.array([lose["checks"][c] - win["checks"][c] for c in common])
            if diff.mean() > 0 and diff.mean() > MARGIN_SDS * diff.std(ddof=1):
                beaten.setdefault(loser, winner)
    return beaten


def set_weights(methods: dict, chosen: str | None) -> str:
    """Each method's `weight` (an equal share for every method no other clearly beats; the chosen
    method alone when every method is beaten by another), and why in words."""
    beaten = clearly_beaten(methods)
    kept = [m for m in methods if m not in beaten] or [m for m in methods if m == chosen]
    for method, section in methods.items():
        section["weight"] = 1.0 / len(kept) if method in kept else 0.0
    dropped = "; ".join(f"{m} is beaten by {w} by more than the checks' spread" for m, w in beaten.items())
    mixed = " and ".join(kept) + " averaged with equal weights" if len(kept) > 1 else f"{''.join(kept)} alone"
    return f"forecast: {mixed or 'none'}" + (f" ({dropped})" if dropped else "")


def scatter_per_efold(misses) -> float:
    """The maximum-likelihood k >= 0 of miss ~ Normal(0, s^2 + (k d)^2) over [(misses, distances
    outside their refit's runs, scatter s the refit explains), ...]; 0 without misses outside
    their refit's runs."""
    if not misses:
        return 0.0
    z, d, s = (np.concatenate(parts) for parts in zip(*misses))
    s = np.maximum(np.nan_to_num(s, nan=0.0), 1e-9)
    if not np.any(d > 1e-9):
        return 0.0

    def negative_log_likelihood(k):
        variance = s**2 + (k * d) ** 2
        return float(np.sum(np.log(variance) + z**2 / variance))

    upper = 10 * float(np.max(np.abs(z) / np.maximum(d, 1e-9)))
    best = minimize_scalar(negative_log_likelihood, bounds=(0.0, max(upper, 1e-9)), method="bounded")
    return float(best.x) if negative_log_likelihood(best.x) < negative_log_likelihood(0.0) else 0.0


def combined_section(methods: dict, misses: dict) -> dict | None:
    """fit.json's `combined`: the weighted mean's out-of-sample error per check (over the checks
    every weighted method ran), residual and extrapolation scatter. `misses`: method -> check ->
    (misses, distances, explained scatter) at the same held-out runs. None with no weighted method."""
    weights = {m: s["weight"] for m, s in methods.items() if s.get("weight", 0) > 0}
    if not weights:
        return None
    total = sum(weights.values())
    common = set.intersection(*(set(misses.get(m) or {}) for m in weights))
    checks, combined = {}, []
    for name in sorted(common):
        parts = [misses[m][name] for m in weights]
        if len({len(p[0]) for p in parts}) != 1:
            continue
        miss = sum(weights[m] * misses[m][name][0] for m in weights) / total
        explained = sum(weights[m] * np.asarray(misses[m][name][2], float) for m in weights) / total
        checks[name] = float(np.mean(np.abs(miss)))
        combined.append((miss, parts[0][1], explained))
    return {
        "weights": {m: w / total for m, w in weights.items()},
        "checks": checks,
        "oos_error": float(np.mean(list(checks.values()))) if checks else None,
        "residual_sigma": float(sum(weights[m] * methods[m]["residual_sigma"] for m in weights) / total),
        "extrapolation_sigma": scatter_per_efold(combined),
    }
