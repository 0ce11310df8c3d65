"""The budgets ahead (`--predict-flops`, else 10x and 100x the largest run), and Chinchilla's
compute-optimal allocation at them from an Approach 3 law (N_opt, D_opt, the predicted loss, with
bootstrap bands from each resample's own optimum). fit.json's `allocation` itself comes from the
chosen form (`decision.allocation_section`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..laws.law import compute_optimal, predict_loss
from .common import percentile_ci


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
        row = {
            "flops": float(c),
            "n_opt": float(n_opt),
            "d_opt": float(d_opt),
            "tokens_per_param": float(d_opt / n_opt),
            "loss_pred": float(predict_loss(n_opt, d_opt, *(law[k] for k in ("E", "A", "B", "alpha", "beta")))),
            "loss_ci95": None,
            "n_opt_ci95": None,
            "d_opt_ci95": None,
        }
        if samples is not None and len(samples):
            with np.errstate(all="ignore"):
                s = {k: samples[k].to_numpy(float) for k in ("E", "A", "B", "alpha", "beta")}
                n_b, d_b = compute_optimal(c, s["A"], s["B"], s["alpha"], s["beta"])
                loss_b = predict_loss(n_b, d_b, s["E"], s["A"], s["B"], s["alpha"], s["beta"])
            row.update(loss_ci95=percentile_ci(loss_b), n_opt_ci95=percentile_ci(n_b), d_opt_ci95=percentile_ci(d_b))
        rows.append(row)
    return rows
