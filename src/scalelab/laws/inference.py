"""The statsmodels-like face of a fitted law (scalelab.laws.fitted.FittedLaw): `params`,
`conf_int(alpha)`, `summary(alpha)` and the prediction frame.

The prediction frame names each quantity once, as statsmodels' `get_prediction().summary_frame()`
does: `mean` (the chosen form's point law), `mean_ci_lower/upper` (the law's own uncertainty: its
bootstrap resamples and the other forms by their weights, no run noise) and `obs_ci_lower/upper`
(a new run's loss: that plus the runs' scatter and, outside the fitted runs, the extrapolation
scatter; scalelab.laws.fitted's module docstring). `alpha` is 1 − the interval's level; `level=`
is kept for the notebooks that used it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ScalelabError

ALPHA = 0.05
PREDICTION_COLUMNS = ("mean", "mean_ci_lower", "mean_ci_upper", "obs_ci_lower", "obs_ci_upper")


def interval_level(alpha=None, level=None) -> float:
    """The central level of an interval from `alpha` (statsmodels') or `level` (1 − alpha); one of them."""
    if alpha is not None and level is not None:
        raise ScalelabError("give alpha or level, not both (level = 1 - alpha)")
    if level is None:
        alpha = ALPHA if alpha is None else alpha
        if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 < alpha < 1):
            raise ScalelabError(f"alpha must be between 0 and 1, got {alpha!r}")
        return 1 - float(alpha)
    if not (isinstance(level, (int, float)) and not isinstance(level, bool) and 0 < level < 1):
        raise ScalelabError(f"level must be between 0 and 1, got {level!r}")
    return float(level)


def bands(components: dict, mean, level: float, with_noise: bool):
    """(lower, upper) of the forms' mixture at `level`, widened to contain `mean`; NaN without forms.
    Without noise each form's scatter is left out: the law's own uncertainty."""
    from .mixture import predictive_interval

    parts = [
        (weight, preds, scatter if with_noise else 0.0, centre)
        for weight, preds, scatter, centre in components.values()
    ]
    band = predictive_interval(parts, level)
    if band is None:
        nan = np.full(len(mean), np.nan)
        return nan, nan
    return np.minimum(np.exp(band[0]), mean), np.maximum(np.exp(band[1]), mean)


def prediction_frame(law, params, tokens, U, unique, level: float) -> pd.DataFrame:
    """One row per (N, D): params, tokens, mean, mean_ci_*, obs_ci_* and extrapolation. `U` as given,
    `unique` as the chosen form takes it."""
    with np.errstate(all="ignore"):
        mean = law.form.loss(dict(law.params), params, tokens, unique)
    components = law.components(params, tokens, U)
    mean_low, mean_high = bands(components, mean, level, with_noise=False)
    obs_low, obs_high = bands(components, mean, level, with_noise=True)
    return pd.DataFrame(
        {
            "params": params,
            "tokens": tokens,
            "mean": mean,
            "mean_ci_lower": mean_low,
            "mean_ci_upper": mean_high,
            "obs_ci_lower": obs_low,
            "obs_ci_upper": obs_high,
            "extrapolation": law.extrapolation(params, tokens),
        }
    )


def conf_int(law, alpha=ALPHA) -> pd.DataFrame:
    """The chosen form's parameters' percentile intervals from its bootstrap resamples: one row per
    parameter, columns `lower, upper` (NaN when the fit had no bootstrap)."""
    level = interval_level(alpha)
    tail = (1 - level) / 2 * 100
    rows = {}
    for name in law.form.param_names:
        column = pd.to_numeric(law.bootstrap.get(name, pd.Series(dtype=float)), errors="coerce").to_numpy(float)
        column = column[np.isfinite(column)]
        rows[name] = np.percentile(column, [tail, 100 - tail]) if len(column) >= 2 else [np.nan, np.nan]
    return pd.DataFrame.from_dict(rows, orient="index", columns=["lower", "upper"])


def std_errors(law) -> pd.Series:
    """Each parameter's bootstrap standard deviation (NaN without resamples)."""
    out = {}
    for name in law.form.param_names:
        column = pd.to_numeric(law.bootstrap.get(name, pd.Series(dtype=float)), errors="coerce").to_numpy(float)
        column = column[np.isfinite(column)]
        out[name] = float(np.std(column, ddof=1)) if len(column) >= 2 else np.nan
    return pd.Series(out, name="std_err")


def cov_params(law) -> pd.DataFrame:
    """The covariance of the chosen form's parameters over its bootstrap resamples (rows with a
    non-finite value left out; NaN without two resamples), indexed by parameter as statsmodels'."""
    names = list(law.form.param_names)
    table = law.bootstrap.reindex(columns=names).apply(pd.to_numeric, errors="coerce")
    table = table[np.isfinite(table.to_numpy(float)).all(axis=1)]
    if len(table) < 2:
        return pd.DataFrame(np.nan, index=names, columns=names)
    return table.cov()


def summary_text(law, alpha=ALPHA) -> str:
    """A statsmodels-like table: the form, the fit's health, then coef, std err and the interval."""
    level = interval_level(alpha)
    section = law.fitted[law.form.name]
    intervals = conf_int(law, alpha)
    errors = std_errors(law)
    lo_label, hi_label = f"[{(1 - level) / 2:.3g}", f"{1 - (1 - level) / 2:.3g}]"
    width = 64
    lines = [
        "Scaling law fit".center(width),
        "=" * width,
        f"{'Form:':<18}{law.form.name:<14}{'Runs:':<18}{law.fit.get('n_points', '?')!s:>14}",
        f"{'Converged:':<18}{str(section.get('converged', '?')):<14}{'Resid. sigma:':<18}{law.residual_sigma:>14.4g}",
        f"{'Weight:':<18}{law.weights.get(law.form.name, 0.0):<14.3g}{'Bootstrap:':<18}{len(law.bootstrap):>14}",
        "=" * width,
        f"{'':<10}{'coef':>12}{'std err':>12}{lo_label:>15}{hi_label:>15}",
        "-" * width,
    ]
    for name, value in law.params.items():
        lines.append(
            f"{name:<10}{value:>12.4g}{errors[name]:>12.4g}"
            f"{intervals.loc[name, 'lower']:>15.4g}{intervals.loc[name, 'upper']:>15.4g}"
        )
    lines.append("=" * width)
    lines.append("std err and the interval: the bootstrap resamples' standard deviation and percentiles")
    for key, why in (section.get("not_identified") or {}).items():
        lines.append(f"NOT IDENTIFIED {key}: {why}")
    return "\n".join(lines)
