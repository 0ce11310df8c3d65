"""fit.json's `metrics`, metrics.csv, metric_forecasts.csv, metrics_bootstrap.csv and fit.txt's
"Downstream metrics" section, from `scalelab fit --metrics COL ... [--metric-spec JSON]`.

The metric laws are fitted on the same runs as the loss law (after selection), with the metric
columns joined back by run; they forecast at the allocation's budgets (the compute-optimal N and D
of the loss law), else at 10x and 100x the largest run's compute with N and D each scaled by
its square root.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..laws.fitted_metrics import forecast_methods, slope_param
from .metric_laws import METRIC_BOOTSTRAP, fit_metric_laws, holdout_checks

METRICS_COLUMNS = [
    "metric",
    "kind",
    "method",
    "chosen",
    "weight",
    "oos_error",
    "residual_sigma",
    "extrapolation_sigma",
    "slope",
    "slope_ci_low",
    "slope_ci_high",
    "n_runs",
    "verdict",
]
FORECAST_COLUMNS = ["metric", "method", "flops", "params", "tokens", "value", "ci_low", "ci_high"]


def metric_points(points: pd.DataFrame, df: pd.DataFrame, columns) -> pd.DataFrame:
    """The fitted points with the metric (and task-loss) columns of the CSV joined by run."""
    columns = [c for c in dict.fromkeys(columns) if c not in points.columns]
    if not columns:
        return points
    if "run" in df.columns:
        extra = df[["run", *columns]].assign(run=df["run"].astype(str)).drop_duplicates("run")
        return points.assign(run=points["run"].astype(str)).merge(extra, on="run", how="left")
    return points.assign(**{c: df[c].iloc[points["run"].astype(int)].to_numpy() for c in columns})


def metric_targets(allocation, points: pd.DataFrame, budgets) -> list[tuple]:
    """(flops, params, tokens) to forecast at: the allocation's optima, else the largest run scaled."""
    if allocation:
        return [(row["flops"], row["n_opt"], row["d_opt"]) for row in allocation]
    if not len(points) or not budgets:
        return []
    top = points.loc[points["flops"].idxmax()]
    return [(c, top["params"] * np.sqrt(c / top["flops"]), top["tokens"] * np.sqrt(c / top["flops"])) for c in budgets]


def metrics_table(sections: dict) -> pd.DataFrame:
    rows = []
    for name, entry in sections.items():
        for method, section in entry["methods"].items():
            slope = slope_param(method, entry["link"])
            ci = (section.get("params_ci95") or {}).get(slope) or [None, None]
            rows.append(
                {
                    "metric": name,
                    "kind": entry["kind"],
                    "method": method,
                    "chosen": method == entry["chosen_method"],
                    "weight": section.get("weight"),
                    "oos_error": section["oos_error"],
                    "residual_sigma": section["residual_sigma"],
                    "extrapolation_sigma": section["extrapolation_sigma"],
                    "slope": section["params"][slope],
                    "slope_ci_low": ci[0],
                    "slope_ci_high": ci[1],
                    "n_runs": entry["n_runs"],
                    "verdict": entry["verdict"],
                }
            )
        if not entry["methods"]:
            rows.append({"metric": name, "kind": entry["kind"], "n_runs": entry["n_runs"], "verdict": entry["verdict"]})
    return pd.DataFrame(rows, columns=METRICS_COLUMNS)


def forecasts_table(sections: dict) -> pd.DataFrame:
    rows = [
        {
            "metric": name,
            "method": forecast_methods(entry),
            "flops": f["flops"],
            "params": f["params"],
            "tokens": f["tokens"],
            "value": f["value"],
            "ci_low": f["ci95"][0],
            "ci_high": f["ci95"][1],
        }
        for name, entry in sections.items()
        for f in entry["forecasts"]
    ]
    return pd.DataFrame(rows, columns=FORECAST_COLUMNS)


def metric_lines(sections: dict) -> list[str]:
    """fit.txt's Downstream metrics section: per metric the method, its checks and the forecast."""
    if not sections:
        return []
    lines = [
        "",
        "== Downstream metrics: a law per evaluation metric (direct: in compute; two_step: "
        "(N, D) -> task loss -> metric) ==",
    ]
    for name, entry in sections.items():
        lines.append(f"{name} ({entry['kind']}, {entry['n_runs']} runs): {entry['verdict']}")
        if entry["chosen_why"]:
            lines.append(f"  method {entry['chosen_why']}")
        if entry.get("weights_why") and entry["predictable"]:
            combined = entry.get("combined") or {}
            oos = combined.get("oos_error")
            lines.append(
                f"  {entry['weights_why']}" + (f"; its out-of-sample error {oos:.3g}" if oos is not None else "")
            )
        for method, why in (entry.get("skipped") or {}).items():
            lines.append(f"  {method} not fitted: {why}")
        for f in entry["forecasts"]:
            lines.append(
                f"  at C={f['flops']:.3g} (N={f['params']:.3g}, D={f['tokens']:.3g}): {f['value']:.4g} "
                f"[{f['ci95'][0]:.4g}, {f['ci95'][1]:.4g}]"
            )
    return lines


def render_metrics(out, points, df, specs, settings, checks=holdout_checks) -> None:
    """Fit every metric of `specs` (scalelab.fit.metric_spec) and add its outputs to the Draft `out`."""
    columns = [c for s in specs for c in (s.name, s.via) if c]
    runs = metric_points(points, df, columns)
    from .optimal import prediction_budgets

    targets = metric_targets(out.result.get("allocation"), points, prediction_budgets(points, settings.predict_flops))
    sections, samples = fit_metric_laws(
        runs, specs, targets, checks, min(settings.bootstrap, METRIC_BOOTSTRAP), settings.seed
    )
    out.result["metrics"] = sections
    out.tables["metrics"] = metrics_table(sections)
    out.tables["metric_forecasts"] = forecasts_table(sections)
    out.tables["metrics_bootstrap"] = samples
    out.lines += metric_lines(sections)
