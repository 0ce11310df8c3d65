"""`scalelab suggest --metric COL`: the runs that would most narrow one evaluation metric's 95 %
interval at the target budget (instead of N_opt's).

The metric's law (fit.json's `metrics.<COL>`, scalelab.laws.fitted_metrics) has bootstrap resamples
of both its steps; their predictions of the forecast (the methods' weighted mean,
`MetricLaw.ensemble`) at the target's compute-optimal (N, D) and at every candidate run form an
ensemble. A new run at candidate c, measured with the law's residual scatter sigma,
would shrink the target's variance as a linear (ensemble Kalman) update does:
var(t) - cov(t, c)^2 / (var(c) + sigma^2). Runs are chosen greedily, the largest reduction per
FLOP first, until the budget or max_runs is spent; the ensemble's covariance is updated after
each choice, so a second run where the first already measured adds little.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd

from ..errors import ScalelabError
from ..laws.fitted_metrics import metric_values
from .candidates import candidates

METRIC_COLUMNS = ["params", "tokens", "flops", "expected_width_after"]


def _ensemble(law, params, tokens) -> np.ndarray:
    """Every resample's prediction of the forecast (B × m; the methods' weighted mean for a
    weighted forecast), in log units for a loss (the interval's units)."""
    if law.samples is None or len(law.samples) < 4:
        raise ScalelabError(
            f"{law.where}: the metric {law.name} has no bootstrap resamples to design with (fit with --bootstrap > 0)"
        )
    preds = law.ensemble(params, tokens)
    if preds is None:  # the weighted methods' resamples do not pair up: the chosen method's
        cols = {k: law.samples[k].to_numpy(float)[:, None] for k in law.samples.columns}
        preds = metric_values(law.method, law.link, cols, params[None, :], tokens[None, :])
    preds = preds[np.all(np.isfinite(preds), axis=1)]
    return np.log(preds) if law.link == "loglinear" else preds


def metric_design(
    fitted, metric: str, points: pd.DataFrame, target_flops: float, budget_flops: float, max_runs: int, max_tokens=None
) -> tuple[pd.DataFrame, float]:
    """(the suggested runs, the 95 % width of the metric at the target now), widths in the
    interval's units (log for losses)."""
    law = fitted.metric_law(metric)
    target = fitted.allocate([target_flops]).iloc[0]
    cand_n, cand_d = candidates(points["params"].to_numpy(float), points["tokens"].to_numpy(float))
    if max_tokens:
        cand_n, cand_d = cand_n[cand_d <= max_tokens], cand_d[cand_d <= max_tokens]
    preds = _ensemble(law, np.r_[target["params"], cand_n], np.r_[target["tokens"], cand_d])
    cov = np.cov(preds, rowvar=False)
    noise = law.residual_sigma**2
    z = NormalDist().inv_cdf(0.975)
    width_now = 2 * z * float(np.sqrt(max(cov[0, 0], 0.0) + noise))
    cost = 6.0 * cand_n * cand_d
    rows, spent, chosen = [], 0.0, set()
    while len(rows) < max_runs:
        gain = cov[0, 1:] ** 2 / (np.diag(cov)[1:] + noise + 1e-300)
        affordable = (spent + cost <= budget_flops) & ~np.isin(np.arange(len(cost)), list(chosen))
        if not affordable.any() or np.max(gain[affordable]) <= 0:
            break
        i = int(np.argmax(np.where(affordable, gain / cost, -np.inf)))
        c = i + 1
        cov = cov - np.outer(cov[:, c], cov[c, :]) / (cov[c, c] + noise)
        chosen.add(i)
        spent += cost[i]
        rows.append(
            {
                "params": float(cand_n[i]),
                "tokens": float(cand_d[i]),
                "flops": float(cost[i]),
                "expected_width_after": 2 * z * float(np.sqrt(max(cov[0, 0], 0.0) + noise)),
            }
        )
    return pd.DataFrame(rows, columns=METRIC_COLUMNS), width_now


def run_metric(args, settings, out) -> None:
    """The --metric variant of `scalelab suggest`: suggestions.csv and one line per run."""
    from ..files import write_text
    from ..laws.fitted import load_fit
    from .study import TARGET_TIMES_LARGEST, read_points

    fitted = load_fit(args.fit)
    usable, points, spent = read_points(args.metrics, fitted.fit, args.fit)
    largest = float(points["flops"].max())
    target = settings.target_flops or TARGET_TIMES_LARGEST * largest
    table, width_now = metric_design(
        fitted, args.metric, points, target, settings.budget_flops or spent, settings.max_runs, settings.max_tokens
    )
    write_text(out / "suggestions.csv", table.to_csv(index=False))
    after = table["expected_width_after"].iloc[-1] if len(table) else width_now
    print(
        f"scalelab suggest: --metric {args.metric}: {len(table)} runs; 95 % width at C = {target:.3g} "
        f"{width_now:.3g} now, {after:.3g} expected"
    )
    print(f"scalelab suggest: wrote {out}/suggestions.csv")
