"""A law for every evaluation metric, beside the loss law: fit.json's `metrics`.

For each metric (scalelab.fit.metric_spec) both methods of scalelab.laws.fitted_metrics are fitted
(scalelab.fit.metric_models), `direct` (the metric in compute) and `two_step` (N, D -> task loss
-> metric), and checked out of sample: `checks(runs)` gives (name, train mask, test mask) triples
(by default `holdout_checks`: the loss law's rolling-origin checks, scalelab.fit.validation: fit on
the smallest sizes, token counts or compute, predict every larger run); each method is refitted on
the train runs and scored by its mean
absolute error at the test runs (metric units; |ln(actual/predicted)| for losses). The method
with the lower mean error over the checks is `chosen_method` (its slope is the verdict's trend);
the forecast is the equal-weight mean of every method the checks do not clearly beat
(scalelab.fit.metric_mix), checked as one predictor (fit.json's `combined`).

Intervals: the runs are resampled (scipy.stats.bootstrap's resampling, both steps refitted on
each resample); a new run's scatter is the residual sigma plus the extrapolation scatter learnt
from the checks' misses (maximum likelihood of k in miss ~ Normal(0, s^2 + (k d)^2), d the
e-folds a held-out run lies outside its refit's runs, s the refit's residual sigma and the spread
of its own CHECK_BOOTSTRAP resamples' predictions there).

Verdict: NOT PREDICTABLE, with no forecast, when fewer than MIN_RUNS runs have the metric, fewer
than MIN_SIZES_ABOVE model sizes score clearly above the floor, the slope's 95 % interval contains
0 (the law's gain from the smallest- to the largest-compute run, over the resamples), or the
chosen method's out-of-sample error exceeds the spread of the runs' values.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

from ..laws.fitted import log_distance
from ..laws.fitted_metrics import METHODS, MetricLaw, metric_values, robust_spread
from .validation import largest_size_check, rolling_checks
from .common import SIZE_TOLERANCE, n_distinct
from .inputs import data_range
from .metric_mix import combined_section, scatter_per_efold, set_weights
from .metric_models import fit_method, param_names, residual_sigma, task_loss_column
from .metric_spec import MetricSpec

MIN_RUNS = 5
MIN_SIZES_ABOVE = 3  # model sizes scoring clearly above the floor, for a bounded metric's trend
ABOVE_FLOOR = 0.02  # "clearly above": by this share of the range (scale - floor) or 2 residual sigmas
MIN_TRAIN_RUNS = 4
METRIC_BOOTSTRAP = 200  # resamples at most (fit.bootstrap caps it)
# The direct law in compute alone holds at one token-to-parameter ratio (Krajewski et al. 2025);
# runs whose D/N span more than this factor get direct_nd, their law across ratios, instead.
ONE_RATIO_SPAN = 2.0


CHECK_MIN_RUNS = 6  # training runs a walk-forward check needs here (a metric law has 4-5 parameters)
CHECK_BOOTSTRAP = 20  # resamples of each check's refit, for the scatter it explains itself
CHECK_MIN_BOOTSTRAP = 8


def holdout_checks(runs: pd.DataFrame):
    """(name, train mask, test mask) for each walk-forward check of the runs, as the loss law's
    forms are checked (scalelab.fit.validation); with too few runs for any, the largest size's runs
    predicted from the rest."""
    checks = [(c.name, c.train, c.test) for c in rolling_checks(runs, min_points=CHECK_MIN_RUNS)]
    if not checks and (last := largest_size_check(runs, min_points=MIN_TRAIN_RUNS)) is not None:
        checks = [(last.name, last.train, last.test)]
    return checks


def _errors(spec: MetricSpec, actual, predicted) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.log(actual / predicted) if spec.link == "loglinear" else actual - predicted


def check_method(method: str, spec: MetricSpec, runs: pd.DataFrame, checks, n_boot: int = 0, seed: int = 0) -> dict:
    """Each check's mean |error| of `method` refitted without the test runs, and the misses
    (error, distance outside the refit's runs, the scatter the refit explains itself) for the
    extrapolation scatter: its residual sigma and, with n_boot resamples, the spread of its
    bootstrap predictions at the held-out runs (without it the scatter learnt per e-fold would also
    carry the refit's parameter uncertainty, which the forecast's own resamples already hold)."""
    errors, misses = {}, {}
    for name, train, test in checks(runs):
        rest, held = runs[np.asarray(train)], runs[np.asarray(test)]
        if len(rest) < MIN_TRAIN_RUNS or not len(held) or n_distinct(rest["params"], SIZE_TOLERANCE) < 2:
            continue
        theta = fit_method(method, spec, rest)
        if theta is None:
            continue
        n, d = held["params"].to_numpy(float), held["tokens"].to_numpy(float)
        predicted = _law(method, spec, theta).point(n, d)
        miss = _errors(spec, held[spec.name].to_numpy(float), predicted)
        if not np.all(np.isfinite(miss)):
            continue
        errors[name] = float(np.mean(np.abs(miss)))
        distance = log_distance(held["params"], held["tokens"], data_range(rest))
        explained = np.full(len(miss), residual_sigma(method, spec, theta, rest))
        if n_boot >= CHECK_MIN_BOOTSTRAP:
            spread = prediction_spread(method, spec, bootstrap_method(method, spec, rest, theta, n_boot, seed), n, d)
            explained = np.sqrt(explained**2 + spread**2)
        misses[name] = (miss, distance, explained)
    oos = float(np.mean(list(errors.values()))) if errors else None
    return {"checks": errors, "oos_error": oos, "misses": misses}


def prediction_spread(method: str, spec: MetricSpec, samples: pd.DataFrame, params, tokens) -> np.ndarray:
    """The robust spread of the resamples' predictions at each (N, D), in the errors' units (log
    for a loss); 0 where too few resamples are finite."""
    cols = {k: samples[k].to_numpy(float)[:, None] for k in samples.columns}
    preds = metric_values(method, spec.link, cols, params[None, :], tokens[None, :])
    preds = preds[np.all(np.isfinite(preds) & (preds > 0 if spec.link == "loglinear" else True), axis=1)]
    if len(preds) < CHECK_MIN_BOOTSTRAP:
        return np.zeros(len(params))
    return robust_spread(np.log(preds) if spec.link == "loglinear" else preds)


def bootstrap_method(method: str, spec: MetricSpec, runs: pd.DataFrame, theta: dict, n: int, seed: int):
    """Parameter resamples (n × parameters) of `method`: runs resampled with replacement
    (scipy.stats.bootstrap), both steps refitted from the full fit's parameters."""
    names = param_names(method, spec)
    if n < 2 or len(runs) < MIN_RUNS:
        return pd.DataFrame(columns=list(names))

    def statistic(index):
        refit = fit_method(method, spec, runs.iloc[np.asarray(index, int)], start=theta)
        return np.array([refit[k] if refit else np.nan for k in names])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bootstrap(
            (np.arange(len(runs)),),
            statistic,
            vectorized=False,
            n_resamples=n,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
    return pd.DataFrame(np.atleast_2d(result.bootstrap_distribution).T, columns=list(names))


def _law(method, spec, theta, samples=None, sigma=0.0, per_efold=0.0, ranges=None, predictable=True) -> MetricLaw:
    section = {
        "chosen_method": method,
        "link": spec.link,
        "scale": spec.scale or None,
        "predictable": predictable,
        "methods": {method: {"params": theta, "residual_sigma": sigma, "extrapolation_sigma": per_efold}},
    }
    table = samples.assign(metric=spec.name, method=method) if samples is not None and len(samples) else pd.DataFrame()
    return MetricLaw(spec.name, section, table, ranges or {})


def method_section(method, spec, runs, checks, n_boot, seed) -> tuple[dict | None, pd.DataFrame, dict]:
    """One method's fit.json entry, its resamples and its misses per check; None when the full fit
    fails."""
    theta = fit_method(method, spec, runs)
    if theta is None:
        return None, pd.DataFrame(), {}
    checked = check_method(method, spec, runs, checks, min(n_boot, CHECK_BOOTSTRAP), seed)
    samples = bootstrap_method(method, spec, runs, theta, n_boot, seed)
    ci = {}
    for key in samples.columns:
        column = samples[key].to_numpy(float)
        column = column[np.isfinite(column)]
        ci[key] = [float(v) for v in np.percentile(column, [2.5, 97.5])] if len(column) >= 10 else None
    section = {
        "params": theta,
        "params_ci95": ci,
        **trend(method, spec, runs, theta, samples),
        "oos_error": checked["oos_error"],
        "checks": checked["checks"],
        "residual_sigma": residual_sigma(method, spec, theta, runs),
        "extrapolation_sigma": scatter_per_efold(list(checked["misses"].values())),
        "n_resamples": int(len(samples)),
    }
    return section, samples, checked["misses"]


def trend(method: str, spec: MetricSpec, runs: pd.DataFrame, theta: dict, samples: pd.DataFrame) -> dict:
    """How much the law says the metric improves from the smallest-compute run to the largest
    (sign-adjusted: positive is better), with its bootstrap 95 % interval: whether there is a trend."""
    compute = runs["params"].to_numpy(float) * runs["tokens"].to_numpy(float)
    ends = runs.iloc[[int(np.argmin(compute)), int(np.argmax(compute))]]
    n, d = ends["params"].to_numpy(float), ends["tokens"].to_numpy(float)
    sign = 1.0 if spec.higher_is_better else -1.0
    point = metric_values(method, spec.link, theta, n, d)
    out = {"trend": float(sign * (point[1] - point[0])), "trend_ci95": None}
    if len(samples) >= 10:
        cols = {k: samples[k].to_numpy(float)[:, None] for k in samples.columns}
        values = metric_values(method, spec.link, cols, n[None, :], d[None, :])
        gains = sign * (values[:, 1] - values[:, 0])
        gains = gains[np.isfinite(gains)]
        if len(gains) >= 10:
            out["trend_ci95"] = [float(v) for v in np.percentile(gains, [2.5, 97.5])]
    return out


def choose_method(sections: dict, spec: MetricSpec) -> tuple[str | None, str]:
    """The method with the lower out-of-sample error (the one whose slope and checks the verdict
    reads), and why in words."""
    fitted = {m: s for m, s in sections.items() if s is not None}
    if not fitted:
        return None, "neither method could be fitted"
    scored = {m: s["oos_error"] for m, s in fitted.items() if s["oos_error"] is not None}
    unit = "ln units" if spec.link == "loglinear" else "in the metric's units"
    if not scored:
        chosen = "two_step" if "two_step" in fitted else next(iter(fitted))
        return chosen, f"{chosen}: no out-of-sample check could be run, so the default method"
    chosen = min(scored, key=scored.get)
    shown = ", ".join(f"{m} {v:.3g}" for m, v in sorted(scored.items(), key=lambda kv: kv[1]))
    return chosen, f"{chosen}: lowest mean out-of-sample error ({unit}): {shown}"


def verdict(spec: MetricSpec, runs: pd.DataFrame, chosen: str | None, section: dict | None) -> str | None:
    """Why the metric is NOT PREDICTABLE, or None when it has a usable trend: judged on the chosen
    method (the lowest out-of-sample error), whether or not the forecast averages it with others."""
    if chosen is None or section is None:
        return "no law could be fitted to these runs"
    values = runs[spec.name].to_numpy(float)
    if spec.link == "sigmoid":
        margin = max(ABOVE_FLOOR * (spec.scale - spec.floor), 2 * section["residual_sigma"])
        sign = 1 if spec.higher_is_better else -1
        above = runs[sign * (values - spec.floor) > margin]
        if n_distinct(above["params"], SIZE_TOLERANCE) < MIN_SIZES_ABOVE:
            return (
                f"fewer than {MIN_SIZES_ABOVE} model sizes score clearly above the floor {spec.floor:g} "
                f"(by {margin:.3g}); the runs are at chance or noise"
            )
    ci = section.get("trend_ci95")
    if ci is not None and ci[0] <= 0:
        return (
            f"the law's gain from the smallest to the largest run has a 95 % interval ({ci[0]:.3g} to "
            f"{ci[1]:.3g}) that reaches 0: no trend"
        )
    spread = float(np.std(np.log(values) if spec.link == "loglinear" else values, ddof=1))
    if section["oos_error"] is not None and section["oos_error"] > spread:
        return f"the out-of-sample error {section['oos_error']:.3g} exceeds the spread of the runs' values {spread:.3g}"
    return None


def skipped_methods(runs: pd.DataFrame, spec: MetricSpec) -> dict:
    """method -> why it is not fitted to these runs."""
    skipped = {}
    ratio = (runs["tokens"] / runs["params"]).to_numpy(float)
    if ratio.max() > ONE_RATIO_SPAN * ratio.min():
        skipped["direct"] = (
            f"the runs' tokens per parameter span {ratio.max() / ratio.min():.3g}x; a law in compute "
            "alone holds at one ratio, so direct_nd (the law across ratios) stands in for it"
        )
    if task_loss_column(spec) not in runs.columns:
        skipped["two_step"] = f"no task-loss column {task_loss_column(spec)!r}"
    return skipped


def metric_runs(points: pd.DataFrame, spec: MetricSpec) -> pd.DataFrame:
    """The runs with a finite metric (and task loss), positive where the link takes logs."""
    columns = [spec.name, task_loss_column(spec)] if task_loss_column(spec) in points.columns else [spec.name]
    runs = points.copy()
    for column in columns:
        runs[column] = pd.to_numeric(runs[column], errors="coerce")
    keep = np.all(np.isfinite(runs[columns].to_numpy(float)), axis=1)
    if spec.link == "loglinear":
        keep &= runs[spec.name].to_numpy(float) > 0
    return runs[keep].reset_index(drop=True)


def fit_metric(
    points: pd.DataFrame, spec: MetricSpec, targets, checks=holdout_checks, bootstrap_n=METRIC_BOOTSTRAP, seed=0
) -> tuple[dict, pd.DataFrame]:
    """fit.json's `metrics.<name>` and its metrics_bootstrap.csv rows. `targets`: (flops, params,
    tokens) triples to forecast at (the allocation's next budgets)."""
    runs = metric_runs(points, spec)
    out = {
        **spec.as_dict(),
        "n_runs": int(len(runs)),
        "methods": {},
        "chosen_method": None,
        "chosen_why": None,
        "predictable": False,
        "forecasts": [],
    }
    if len(runs) < MIN_RUNS:
        out["verdict"] = f"NOT PREDICTABLE: only {len(runs)} runs have the metric (at least {MIN_RUNS} needed)"
        return out, pd.DataFrame()
    sections, tables, misses = {}, [], {}
    skipped = skipped_methods(runs, spec)
    out["skipped"] = skipped
    for method in METHODS:
        if method in skipped:
            continue
        sections[method], samples, misses[method] = method_section(method, spec, runs, checks, bootstrap_n, seed)
        if len(samples):
            tables.append(samples.assign(metric=spec.name, method=method))
    out["methods"] = {m: s for m, s in sections.items() if s is not None}
    chosen, why = choose_method(sections, spec)
    out["chosen_method"], out["chosen_why"] = chosen, why
    out["point"] = "weighted"  # the forecast is the methods' weighted mean (scalelab.laws.fitted_metrics)
    out["weights_why"] = set_weights(out["methods"], chosen)
    out["combined"] = combined_section(out["methods"], misses)
    reason = verdict(spec, runs, chosen, sections.get(chosen))
    out["predictable"] = reason is None
    out["verdict"] = "predictable" if reason is None else f"NOT PREDICTABLE: {reason}"
    out["range"] = data_range(runs)
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if reason is None and targets:
        out["forecasts"] = forecasts(spec.name, out, table, data_range(runs), targets)
    return out, table


def forecasts(name: str, section: dict, table: pd.DataFrame, ranges: dict, targets) -> list[dict]:
    """The chosen law's prediction with its 95 % interval at each (flops, params, tokens)."""
    flops, params, tokens = (np.array([t[i] for t in targets], float) for i in range(3))
    law = MetricLaw(name, section, table, ranges)
    frame = law.predict(params, tokens, log_distance(params, tokens, ranges), 0.95)
    return [
        {
            "flops": float(c),
            "params": float(r.params),
            "tokens": float(r.tokens),
            "value": float(r[name]),
            "ci95": [float(r.low), float(r.high)],
        }
        for c, (_, r) in zip(flops, frame.iterrows())
    ]


def fit_metric_laws(
    points: pd.DataFrame, specs, targets, checks=holdout_checks, bootstrap_n=METRIC_BOOTSTRAP, seed=0
) -> tuple[dict, pd.DataFrame]:
    """fit.json's `metrics` (name -> entry) and metrics_bootstrap.csv for every spec."""
    sections, tables = {}, []
    for spec in specs:
        sections[spec.name], table = fit_metric(points, spec, targets, checks, bootstrap_n, seed)
        tables.append(table)
    tables = [t for t in tables if len(t)]
    return sections, (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["metric", "method"]))
