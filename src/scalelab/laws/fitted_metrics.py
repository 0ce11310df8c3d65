"""Laws of evaluation metrics (task accuracy, BLEU, ROUGE, bits per byte) read back from a fit:
`scalelab.load_fit(folder).predict(N, D, metric="COL")` answers through `MetricLaw`.

Two methods, each a numpy formula of (N, D) whose parameters `scalelab fit` estimates
(scalelab.fit.metric_laws) and writes to fit.json's `metrics.<COL>` and metrics_bootstrap.csv:

- `direct` (Krajewski et al. 2025): the metric as a function of compute C = 6·N·D (x = ln C);
- `direct_nd` (the same paper's law across token-to-parameter ratios): the metric from (N, D) in one
  step, lo + (hi - lo)·exp(-(A/N^alpha + B/D^beta)) for a bounded metric, E + A/N^alpha + B/D^beta
  for a loss;
- `two_step` (Bhagia et al. 2024, the OLMo ladder): a task loss L(N, D) = E + A/N^alpha + B/D^beta,
  then the metric as a function of x = L.

and two links from x to the metric, by the metric's kind:

- `sigmoid` for bounded scores (accuracies, BLEU, ROUGE): lo + (hi - lo) / (1 + exp(-k (x - x0))),
  lo the chance floor and hi a ceiling at most the scale (1 or 100);
- `loglinear` for losses (bits per byte, perplexity): exp(a + b ln x), a power law in x (x = C, or L).

The 95 % interval, as the loss law's (scalelab.fitted): each method is Normal about its point
prediction with, in quadrature, the robust spread of its bootstrap resamples' predictions (both
steps refitted on the same resampled runs) and the scatter of a new run about its law (the
residual sigma plus the extrapolation scatter learnt from the out-of-sample checks, per e-fold of
`log_distance` outside the fitted runs). A fit whose forecast is the methods' weighted mean
(fit.json's `point`: "weighted", scalelab.fit.metric_mix) treats that mean as one method: its
resamples are the weighted mean of the methods' resamples (row i of each refitted on the same
resampled runs), its scatter fit.json's `combined`. Otherwise the methods are mixed by their
weights and the interval is the central 95 % of the mixture. Either way it is widened to hold
every weighted method's point. Bounded metrics are clipped to [0, scale]; losses work in log units.
Numpy and pandas only.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd

from ..errors import ScalelabError

__all__ = [
    "DIRECT_ND_PARAMS",
    "LINK_PARAMS",
    "METHODS",
    "STEP1_PARAMS",
    "MetricLaw",
    "method_params",
    "metric_interval",
    "metric_values",
    "slope_param",
    "forecast_methods",
]

METHODS = ("direct", "direct_nd", "two_step")
STEP1_PARAMS = ("E", "A", "alpha", "B", "beta")
LINK_PARAMS = {"sigmoid": ("lo", "hi", "k", "x0"), "loglinear": ("a", "b")}
# direct_nd, Krajewski et al.'s law across token-to-parameter ratios: a bounded metric is
# lo + (hi - lo)·exp(-(A/N^alpha + B/D^beta)) (their -log Q = A N^-alpha + B D^-beta with a floor
# and a ceiling), a loss E + A/N^alpha + B/D^beta.
DIRECT_ND_PARAMS = {"sigmoid": ("lo", "hi", "A", "alpha", "B", "beta"), "loglinear": STEP1_PARAMS}
SLOPE = {"sigmoid": "k", "loglinear": "b"}  # the parameter whose interval says whether there is a trend


def slope_param(method: str, link: str) -> str:
    """The parameter reported as a method's slope (metrics.csv)."""
    return "alpha" if method == "direct_nd" else SLOPE[link]


def forecast_methods(entry: dict) -> str:
    """The method(s) a metric's forecast comes from, in words: "direct_nd + two_step" for the
    weighted mean of several (fit.json's `point`: "weighted"), else the chosen method."""
    weighted = [m for m, s in (entry.get("methods") or {}).items() if (s.get("weight") or 0) > 0]
    if entry.get("point") == "weighted" and len(weighted) > 1:
        return " + ".join(weighted)
    return str(entry.get("chosen_method") or "–")


def method_params(method: str, link: str) -> tuple[str, ...]:
    """The parameter names of one method with one link, in the order of metrics_bootstrap.csv."""
    if method == "direct_nd":
        return DIRECT_ND_PARAMS[link]
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
        if method == "direct_nd" and link == "sigmoid":
            gap = params["A"] * N ** -params["alpha"] + params["B"] * D ** -params["beta"]
            return params["lo"] + (params["hi"] - params["lo"]) * np.exp(-gap)
        if method == "direct_nd":
            return task_loss(params, N, D)
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


MIXTURE_DRAWS = np.array([NormalDist().inv_cdf((i + 0.5) / 400) for i in range(400)])  # fixed quantiles


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, probs) -> list[np.ndarray]:
    """Per column of values (k × m), the weighted quantiles at probs."""
    order = np.argsort(values, axis=0)
    ranked = np.take_along_axis(values, order, axis=0)
    cumulative = np.cumsum(weights[order], axis=0) / weights.sum()
    return [np.take_along_axis(ranked, np.argmax(cumulative >= p, axis=0)[None, :], axis=0)[0] for p in probs]


def metric_interval(components, level: float, space: str, bounds) -> tuple:
    """(low, high) of a new run's metric from components [(weight, point (m,), resampled
    predictions (B × m), scatter (m,))]: each method is Normal about its point prediction with its
    resamples' robust spread and its scatter in quadrature, in `space` ('log' for losses, else the
    metric's own units); the interval is the central `level` of their weighted mixture (where the
    methods disagree it widens toward the other, as the loss law's forms do), clipped to `bounds`."""
    values, weights = [], []
    for weight, point, preds, scatter in components:
        preds = np.atleast_2d(np.asarray(preds, float))
        preds = preds[np.all(np.isfinite(preds), axis=1)]
        with np.errstate(all="ignore"):
            centre = np.log(point) if space == "log" else np.asarray(point, float)
            spread = robust_spread(np.log(preds) if space == "log" else preds) if len(preds) else 0.0
        sd = np.sqrt(spread**2 + np.nan_to_num(np.asarray(scatter, float)) ** 2)
        if weight > 0 and np.all(np.isfinite(centre)):
            values.append(centre[None, :] + MIXTURE_DRAWS[:, None] * sd[None, :])
            weights.append(np.full(len(MIXTURE_DRAWS), weight))
    if not values:
        return None, None
    low, high = _weighted_quantiles(np.vstack(values), np.concatenate(weights), [(1 - level) / 2, (1 + level) / 2])
    if space == "log":
        low, high = np.exp(low), np.exp(high)
    return np.clip(low, *bounds), np.clip(high, *bounds)


class MetricLaw:
    """One metric's law as fit.json's `metrics.<COL>` and its rows of metrics_bootstrap.csv: the
    methods' point predictions averaged by `methods.<m>.weight` (the chosen method's alone in a fit
    without `point`: "weighted"), and the interval of every method mixed by the same weights (the
    chosen method alone when no weights are written)."""

    def __init__(self, name: str, section: dict, samples: pd.DataFrame, ranges: dict, where="fit"):
        self.name, self.section, self.where, self.ranges = name, section, str(where), ranges or {}
        self.method = section.get("chosen_method")
        self.link = section.get("link")
        methods = section.get("methods") or {}
        if self.method not in METHODS or self.method not in methods or self.link not in LINK_PARAMS:
            raise ScalelabError(
                f"{where}: metrics.{name} has no usable law (method {self.method!r}, link {self.link!r})"
            )
        self.parts = {m: self._part(m, methods[m], samples) for m in methods if m in METHODS}
        self.params, self.samples, self.residual_sigma, _ = self.parts[self.method][1:]
        if not any(part[0] > 0 for part in self.parts.values()):
            self.parts[self.method] = (1.0, *self.parts[self.method][1:])

    def _part(self, method: str, section: dict, samples: pd.DataFrame) -> tuple:
        """(weight, params, resamples or None, residual sigma, extrapolation sigma) of one method."""
        names = method_params(method, self.link)
        values = section.get("params") or {}
        if any(not isinstance(values.get(k), (int, float)) for k in names):
            raise ScalelabError(
                f"{self.where}: metrics.{self.name}.methods.{method}.params lacks one of {', '.join(names)}"
            )
        rows = samples[(samples["metric"] == self.name) & (samples["method"] == method)] if len(samples) else samples
        missing = [k for k in names if len(rows) and k not in rows.columns]
        if missing:
            raise ScalelabError(f"{self.where}: metrics_bootstrap.csv lacks the column(s) {', '.join(missing)}")
        table = rows[list(names)].apply(pd.to_numeric, errors="coerce") if len(rows) else None
        weight = float(section.get("weight") or 0.0) if "weight" in section else float(method == self.method)
        return (
            weight,
            {k: float(values[k]) for k in names},
            table,
            float(section.get("residual_sigma") or 0.0),
            float(section.get("extrapolation_sigma") or 0.0),
        )

    @property
    def verdict(self) -> str:
        return str(self.section.get("verdict") or "")

    @property
    def predictable(self) -> bool:
        return bool(self.section.get("predictable"))

    def bounds(self) -> tuple:
        scale = self.section.get("scale")
        return (0.0, float(scale)) if self.link == "sigmoid" and scale else (0.0, np.inf)

    @property
    def weighted(self) -> bool:
        """Whether the forecast is the methods' weighted mean (fit.json's `point`: "weighted"); a
        fit written before that is the chosen method's law alone."""
        return self.section.get("point") == "weighted" and sum(part[0] for part in self.parts.values()) > 0

    def point(self, params, tokens):
        """The forecast at (params, tokens): the weighted mean of the methods' laws (in log units for
        a loss), or the chosen method's."""
        if not self.weighted:
            return metric_values(self.method, self.link, self.params, params, tokens)
        total, weights = 0.0, 0.0
        for method, (weight, values, *_) in self.parts.items():
            if weight > 0:
                value = metric_values(method, self.link, values, params, tokens)
                total = total + weight * (np.log(value) if self.link == "loglinear" else value)
                weights += weight
        total = total / weights
        return np.exp(total) if self.link == "loglinear" else total

    def _predictions(self, method: str, values: dict, table, params, tokens) -> tuple:
        """(point (m,), resampled predictions (B × m)) of one method."""
        point = metric_values(method, self.link, values, params, tokens)
        if table is None or not len(table):
            return point, point[None, :]
        cols = {k: table[k].to_numpy(float)[:, None] for k in table.columns}
        return point, metric_values(method, self.link, cols, params[None, :], tokens[None, :])

    def ensemble(self, params, tokens):
        """The forecast's bootstrap resamples at (params, tokens) (B × m, the metric's units): the
        weighted mean of the methods' resamples refitted on the same runs (the rows of
        metrics_bootstrap.csv, in order) for a weighted forecast, else the chosen method's; None
        when the weighted methods' resamples do not pair up."""
        if not self.weighted:
            return self._predictions(self.method, self.params, self.samples, params, tokens)[1]
        used = [(w, self._predictions(m, v, t, params, tokens)[1]) for m, (w, v, t, *_) in self.parts.items() if w > 0]
        if len({len(preds) for _, preds in used}) != 1:
            return None
        log = self.link == "loglinear"
        with np.errstate(all="ignore"):
            mean = sum(w * (np.log(preds) if log else preds) for w, preds in used) / sum(w for w, _ in used)
        return np.exp(mean) if log else mean

    def _combined_component(self, params, tokens, distance) -> list:
        """The weighted mean as one method (scalelab.fit.metric_mix): its resamples (`ensemble`),
        its scatter fit.json's `combined`."""
        combined = self.section["combined"]
        sigma, per_efold = float(combined.get("residual_sigma") or 0), float(combined.get("extrapolation_sigma") or 0)
        scatter = np.sqrt(sigma**2 + (per_efold * distance) ** 2)
        point, preds = self.point(params, tokens), self.ensemble(params, tokens)
        if preds is None:  # resamples that do not pair up: each method's spread about the forecast
            used = [(w, self._predictions(m, v, t, params, tokens)[1]) for m, (w, v, t, *_) in self.parts.items()]
            return [(w, point, p - np.nanmedian(p, axis=0) + point, scatter) for w, p in used if w > 0]
        return [(1.0, point, preds, scatter)]

    def interval(self, params, tokens, distance, level: float):
        """(low, high) of a new run at (params, tokens), `distance` e-folds outside the fitted runs,
        widened to hold every weighted method's point."""
        if self.weighted and self.section.get("combined"):
            components = self._combined_component(params, tokens, distance)
        else:
            components = []
            for method, (weight, values, table, sigma, per_efold) in self.parts.items():
                point, preds = self._predictions(method, values, table, params, tokens)
                components.append((weight, point, preds, np.sqrt(sigma**2 + (per_efold * distance) ** 2)))
        space = "log" if self.link == "loglinear" else "linear"
        low, high = metric_interval(components, level, space, self.bounds())
        if low is None:
            return np.full(len(params), np.nan), np.full(len(params), np.nan)
        for method, (weight, values, *_) in self.parts.items():
            if weight > 0 or method == self.method:
                point = metric_values(method, self.link, values, params, tokens)
                low, high = np.minimum(low, point), np.maximum(high, point)
        point = self.point(params, tokens)
        return np.minimum(low, point), np.maximum(high, point)

    def predict(self, params, tokens, distance, level: float) -> pd.DataFrame:
        """One row per (N, D): params, tokens, the metric, low, high and `verdict`. A metric with
        no usable trend (verdict NOT PREDICTABLE) gets no numbers, only the verdict."""
        if self.predictable:
            value = self.point(params, tokens)
            low, high = self.interval(params, tokens, distance, level)
        else:
            value = low = high = np.full(len(params), np.nan)
        return pd.DataFrame(
            {"params": params, "tokens": tokens, self.name: value, "low": low, "high": high, "verdict": self.verdict}
        )
