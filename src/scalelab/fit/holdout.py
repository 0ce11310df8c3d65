"""The held-out check, for fit.json's `holdout` section: refit Approach 3 without the top compute
group and predict that group's losses (`--holdout top`), or skip it (`--holdout none`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..law import predict_loss
from .approach3 import _identifiable, fit_approach3
from .common import FLOPS_TOLERANCE


def fit_holdout(points: pd.DataFrame, rule: str, starts, workers, say):
    """fit.json's `holdout` section (None when not done), why not, and the table of the held-out
    runs: actual and predicted loss and the relative error."""
    columns = ["run", "params", "tokens", "flops", "actual", "predicted", "rel_error"]
    empty = pd.DataFrame(columns=columns)
    if rule == "none":
        return None, "disabled (--holdout none)", empty
    if len(points) == 0:
        return None, "no usable rows", empty
    held = points["flops"].to_numpy() >= points["flops"].max() / (1 + FLOPS_TOLERANCE)
    why = _identifiable(points[~held])
    if why:
        return None, f"without the top compute group the law cannot be fitted: {why}", empty
    say(f"held-out check: refit on {int((~held).sum())} points, predict {int(held.sum())}")
    law = fit_approach3(points["params"][~held], points["tokens"][~held], points["loss"][~held], starts, workers)
    test = points[held]
    predicted = predict_loss(test["params"], test["tokens"], *(law[k] for k in ("E", "A", "B", "alpha", "beta")))
    actual = test["loss"].to_numpy(float)
    rel_error = (predicted - actual) / actual
    section = {"held_out": test["run"].tolist(), "predicted": predicted.tolist(), "actual": actual.tolist(),
               "rel_error": rel_error.tolist(), "max_abs_rel_error": float(np.max(np.abs(rel_error))),
               "flops_min": float(test["flops"].min()), "n_fit_points": int((~held).sum()),
               "fit": {k: law[k] for k in ("E", "A", "B", "alpha", "beta")}}
    table = pd.DataFrame({"run": test["run"].tolist(), "params": test["params"].to_numpy(),
                          "tokens": test["tokens"].to_numpy(), "flops": test["flops"].to_numpy(),
                          "actual": actual, "predicted": predicted, "rel_error": rel_error})
    return section, None, table
