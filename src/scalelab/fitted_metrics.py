"""Laws of evaluation metrics (task accuracy, BLEU, ROUGE, bits per byte) read back from a fit:
`scalelab.load_fit(folder).predict(N, D, metric="COL")` answers through `MetricLaw`.

Two methods, each a numpy formula of (N, D) whose parameters `scalelab fit` estimates
(scalelab.fit.metric_laws) and writes to fit.json's `metrics.<COL>` and metrics_bootstrap.csv:

- `direct` (Krajewski et al. 2025): the metric as a function of compute C = 6·N·D (x = ln C);
- `two_step` (Bhagia et al. 2024, the OLMo ladder): a task loss L(N, D) = E + A/N^alpha + B/D^beta,
  then the metric as a function of x = L.

and two links from x to the metric, by the metric's kind:

- `sigmoid` for bounded scores (accuracies, BLEU, ROUGE): lo + (hi - lo) / (1 + exp(-k (x - x0))),
  lo the chance floor and hi a ceiling at most the scale (1 or 100);
- `loglinear` for losses (bits per byte, perplexity): exp(a + b ln x), a power law in x (x = C, or L).

The 95 % interval is Normal about the point prediction with, in quadrature, the robust spread of
every bootstrap resample's prediction (both steps refitted on the same resampled runs) and the
scatter of a new run about its law: the residual sigma plus the extrapolation scatter learnt from
the out-of-sample checks, per e-fold of `log_distance` outside the fitted runs (as the loss law's
intervals, scalelab.fitted). Bounded metrics are clipped to [0, scale]; losses work in log units.
Numpy and pandas only.
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd

from .errors import ScalelabError

__all__ = ["LINK_PARAMS", "METHODS", "STEP1_PARAMS", "MetricLaw", "method_params", "metric_interval", "metric_values"]

METHODS = ("direct", "two_step")
STEP1_PARAMS = ("E", "A", "alpha", "B", "beta")
LINK_PARAMS = {"sigmoid": ("lo", "hi", "k", "x0"), "loglinear": ("a", "b")}
SLOPE = {"sigmoid": "k", "loglinear": "b"}  # the parameter whose interval says whether there is a trend


def method_params(method: str, link: str) -> tuple[str, ...]:
    """The parameter names of one method with one link, in the order of metrics_bootstrap.csv."""
    return (STEP1_PARAMS if method == "two_step" else ()) + LINK_PARAMS[link]


def task_loss(params: dict, N, D):
    """Step one of the two-step method: E + A/N^alpha + B/D^beta."""
    return params["E"] + params["A"] * N ** -params["alpha"] + params["B"] * D ** -params["beta"]


def link_values(link: str, params: dict, x):
    """Step two (or the direct law): the metric from x through the link."""
    if link == "sigmoid":
        return params["lo"] + (params["hi"] - params["lo"]) / (1 + np.exp(-params["k"] * (x - params["x0"])))
    return np.exp(params["a"] + params["b"] * np.log(x))


def metric_inputs(method: str, link: str, params: dict, N, D):
    """x of the link: compute (ln compute for the sigmoid) for `direct`, the task loss for `two_step`."""
    if method == "direct":
        flops = 6.0 * np.asarray(N, float) * np.asarray(D, float)
        return np.log(flops) if link == "sigmoid" else flops
    return task_loss(params, N, D)


def metric_values(method: str, link: str, params: dict, N, D):
    """The metric at (N, D); params values are numbers or columns (B × 1) for B resamples at once."""
    with np.errstate(all="ignore"):
        return link_values(link, params, metric_inputs(method, link, params, N, D))


def robust_spread(preds: np.ndarray) -> np.ndarray:
    """Per-column spread of resampled predictions: the interquartile range / 1.349, as the loss
    law's intervals use (a nonlinear link refitted on a resample can jump to a bound: the ceiling of
    a sigmoid seen only at its foot is anywhere up to the scale, and a plain percentile would let
    those few jumps set the interval)."""
    if len(preds) < 4:
        return np.zeros(preds.shape[1])
    q1, q3 = np.nanpercentile(preds, [25, 75], axis=0)
    return (q3 - q1) / 1.349


def metric_interval(point, preds: np.ndarray, scatter, level: float, space: str, bounds) -> tuple:
    """(low, high) of a new run's metric: Normal about the point prediction with the resamples'
    robust spread and the scatter (a number or (m,)) added in quadrature, in `space` ('log' for
    losses, else the metric's own units), clipped to `bounds`."""
    preds = np.atleast_2d(np.asarray(preds, float))
    preds = preds[np.all(np.isfinite(preds), axis=1)]
    with np.errstate(all="ignore"):
        centre = np.log(point) if space == "log" else np.asarray(point, float)
        values = np.log(preds) if space == "log" else preds
    sd = np.sqrt(robust_spread(values) ** 2 + np.nan_to_num(np.asarray(scatter, float)) ** 2)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    low, high = centre - z * sd, centre + z * sd
    if space == "log":
        low, high = np.exp(low), np.exp(high)
    return np.clip(low, *bounds), np.clip(high, *bounds)


class MetricLaw:
    """One metric's law as fit.json's `metrics.<COL>` and its rows of metrics_bootstrap.csv."""

    def __init__(self, name: str, section: dict, samples: pd.DataFrame, ranges: dict, where="fit"):
        self.name, self.section, self.where, self.ranges = name, section, str(where), ranges or {}
        self.method = section.get("chosen_method")
        self.link = section.get("link")
        if self.method not in METHODS or self.link not in LINK_PARAMS:
            raise ScalelabError(f"{where}: metrics.{name} has no usable law "
                                f"(method {self.method!r}, link {self.link!r})")
        names = method_params(self.method, self.link)
        chosen = (section.get("methods") or {}).get(self.method) or {}
        values = chosen.get("params") or {}
        if any(not isinstance(values.get(k), (int, float)) for k in names):
            raise ScalelabError(f"{where}: metrics.{name}.methods.{self.method}.params lacks one of {', '.join(names)}")
        self.params = {k: float(values[k]) for k in names}
        self.residual_sigma = float(chosen.get("residual_sigma") or 0.0)
        self.extrapolation_sigma = float(chosen.get("extrapolation_sigma") or 0.0)
        rows = samples[(samples["metric"] == name) & (samples["method"] == self.method)] if len(samples) else samples
        missing = [k for k in names if len(rows) and k not in rows.columns]
        if missing:
            raise ScalelabError(f"{where}: metrics_bootstrap.csv lacks the column(s) {', '.join(missing)}")
        self.samples = rows[list(names)].apply(pd.to_numeric, errors="coerce") if len(rows) else None

    @property
    def verdict(self) -> str:
        return str(self.section.get("verdict") or "")

    @property
    def predictable(self) -> bool:
        return bool(self.section.get("predictable"))

    def bounds(self) -> tuple:
        scale = self.section.get("scale")
        return (0.0, float(scale)) if self.link == "sigmoid" and scale else (0.0, np.inf)

    def point(self, params, tokens):
        return metric_values(self.method, self.link, self.params, params, tokens)

    def interval(self, params, tokens, distance, level: float):
        """(low, high) of a new run at (params, tokens), `distance` e-folds outside the fitted runs."""
        if self.samples is not None and len(self.samples):
            cols = {k: self.samples[k].to_numpy(float)[:, None] for k in self.samples.columns}
            preds = metric_values(self.method, self.link, cols, params[None, :], tokens[None, :])
        else:
            preds = self.point(params, tokens)[None, :]
        scatter = np.sqrt(self.residual_sigma**2 + (self.extrapolation_sigma * distance) ** 2)
        space = "log" if self.link == "loglinear" else "linear"
        return metric_interval(self.point(params, tokens), preds, scatter, level, space, self.bounds())

    def predict(self, params, tokens, distance, level: float) -> pd.DataFrame:
        """One row per (N, D): params, tokens, the metric, low, high and `verdict`. A metric with
        no usable trend (verdict NOT PREDICTABLE) gets no numbers, only the verdict."""
        if self.predictable:
            value = self.point(params, tokens)
            low, high = self.interval(params, tokens, distance, level)
        else:
            value = low = high = np.full(len(params), np.nan)
        return pd.DataFrame({"params": params, "tokens": tokens, self.name: value, "low": low, "high": high,
                             "verdict": self.verdict})
