"""The forms' mixture in log loss and its central interval (scalelab.laws.fitted's steps 1 to 4).

Numpy only, so a notebook loads it fast.
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.95


def _normal_cdf(x):
    """Standard normal CDF, vectorised (Abramowitz and Stegun 7.1.26, |error| < 1.5e-7)."""
    z = np.abs(x) / np.sqrt(2)
    t = 1 / (1 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1 - poly * np.exp(-z * z)
    return 0.5 * (1 + np.sign(x) * erf)


def robust_sd(values: np.ndarray) -> np.ndarray:
    """Per-column spread of bootstrap predictions: the interquartile range / 1.349 (a few wild
    resamples of a nonlinear law would inflate a plain standard deviation)."""
    if len(values) < 4:
        return np.zeros(values.shape[1])
    q1, q3 = np.percentile(values, [25, 75], axis=0)
    return (q3 - q1) / 1.349


def predictive_interval(components, level=LEVEL):
    """(low, high) in log loss from components [(weight, log_preds (B × m), sigma (a number or
    (m,)), centre (m,) or None)]: each form is Normal(centre, bootstrap spread^2 + sigma^2) in log loss, and the
    interval is the central `level` of their mixture (solved by bisection on its CDF). Rows of
    log_preds that are not finite are dropped."""
    parts = []
    for component in components:
        weight, log_preds, sigma = component[:3]
        centre = component[3] if len(component) > 3 else None
        log_preds = np.atleast_2d(log_preds)
        log_preds = log_preds[np.all(np.isfinite(log_preds), axis=1)]
        if weight <= 0 or not len(log_preds):
            continue
        sigma = np.nan_to_num(np.asarray(sigma, float), nan=0.0)  # a number, or one per prediction
        centre = np.median(log_preds, axis=0) if centre is None else np.asarray(centre, float)
        spread = np.sqrt(robust_sd(log_preds) ** 2 + sigma**2)
        parts.append((weight, centre, np.maximum(spread, 1e-12)))
    if not parts:
        return None
    total = sum(w for w, _, _ in parts)

    def cdf(x):
        return sum(w * _normal_cdf((x - c) / sd) for w, c, sd in parts) / total

    lo = min(np.min(c - 10 * sd) for _, c, sd in parts)
    hi = max(np.max(c + 10 * sd) for _, c, sd in parts)
    m = len(parts[0][1])
    tail = (1 - level) / 2
    out = []
    for target in (tail, 1 - tail):
        a, b = np.full(m, lo), np.full(m, hi)
        for _ in range(60):
            mid = (a + b) / 2
            below = cdf(mid) < target
            a, b = np.where(below, mid, a), np.where(below, b, mid)
        out.append((a + b) / 2)
    return out[0], out[1]
