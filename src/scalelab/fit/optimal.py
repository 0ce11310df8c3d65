"""The compute-optimal allocation from Approach 3, for fit.json's `allocation` section: N_opt,
D_opt and the predicted loss at each budget ahead (`--predict-flops`, else 10x and 100x the
largest run), with bootstrap bands from each resample's own optimum.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..law import compute_optimal, predict_loss
from .common import _percentile_ci


def prediction_budgets(points, predict_flops) -> list[float]:
    """The budgets to predict at: predict_flops, else 10x and 100x the largest run."""
    if predict_flops:
        return list(predict_flops)
    return [10 * points["flops"].max(), 100 * points["flops"].max()] if len(points) else []


def allocation(law: dict, flops, samples: pd.DataFrame | None = None) -> list[dict]:
    """N_opt, D_opt and predicted loss per budget; bootstrap bands from each resample's own optimum."""
    rows = []
    for c in flops:
        n_opt, d_opt = compute_optimal(c, law["A"], law["B"], law["alpha"], law["beta"])
        row = {"flops": float(c), "n_opt": float(n_opt), "d_opt": float(d_opt),
               "tokens_per_param": float(d_opt / n_opt),
               "loss_pred": float(predict_loss(n_opt, d_opt, *(law[k] for k in ("E", "A", "B", "alpha", "beta")))),
               "loss_ci95": None, "n_opt_ci95": None, "d_opt_ci95": None}
        if samples is not None and len(samples):
            with np.errstate(all="ignore"):
                s = {k: samples[k].to_numpy(float) for k in ("E", "A", "B", "alpha", "beta")}
                n_b, d_b = compute_optimal(c, s["A"], s["B"], s["alpha"], s["beta"])
                loss_b = predict_loss(n_b, d_b, s["E"], s["A"], s["B"], s["alpha"], s["beta"])
            row.update(loss_ci95=_percentile_ci(loss_b), n_opt_ci95=_percentile_ci(n_b), d_opt_ci95=_percentile_ci(d_b))
        rows.append(row)
    return rows


def allocation_section(law: dict | None, why3: str | None, points, predict_flops, samples: pd.DataFrame, bootstrap):
    """fit.json's `allocation` section from the Approach 3 section `law` (None when it was not
    fitted, `why3` saying why) and its bootstrap `samples`, or None and why not."""
    if law is None:
        return None, f"Approach 3 was not fitted ({why3})"
    if not (law["alpha"] > 0 and law["beta"] > 0):
        return None, (f"the fitted exponents are not both positive (alpha {law['alpha']:.3g}, "
                      f"beta {law['beta']:.3g}), so there is no compute-optimal split")
    return allocation(law, prediction_budgets(points, predict_flops), samples if bootstrap else None), None
