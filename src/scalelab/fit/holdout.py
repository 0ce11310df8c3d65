"""fit.json's `holdout`: the largest model size's runs (every token count it was trained on),
predicted by the point law refitted on the smaller sizes, with the prediction intervals a user
would have had then (the refit's bootstrap, residual scatter, the other forms' refits by their
weights, and an extrapolation scatter learnt from the other rolling checks)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..laws.law import FORMS
from .choose import FormsResult, fitted_law, samples_table
from .evidence import extrapolation_sigma
from .forms import bootstrap_form, natural, residual_sigma
from .inputs import data_range

HOLDOUT_BOOTSTRAP = 50  # resamples of the held-out refit, for its prediction intervals
COLUMNS = ["run", "params", "tokens", "flops", "actual", "predicted", "rel_error", "low", "high", "inside"]


def _refit_sections(result: FormsResult, check_name: str) -> dict:
    """Every form's refit without the held-out runs, as fit.json's `forms` would hold it; the
    extrapolation scatter learnt from the other checks, so that it does not see its answer."""
    sections = {}
    for name, section in result.sections.items():
        if (name, check_name) not in result.validation_fits:
            continue
        theta, rest = result.validation_fits[(name, check_name)]
        others = [m for (form, check), m in result.misses.items() if form == name and check != check_name]
        sections[name] = {
            "fitted": True,
            "params": natural(FORMS[name], theta, rest),
            "residual_sigma": residual_sigma(FORMS[name], theta, rest),
            "weight": section.get("weight", 0.0),
            "extrapolation_sigma": extrapolation_sigma(others),
        }
    return sections


def holdout_section(points, settings, result: FormsResult, workers, say):
    """fit.json's `holdout`, why not, and its table."""
    empty = pd.DataFrame(columns=COLUMNS)
    if settings.holdout == "none":
        return None, "disabled (--holdout none)", empty
    if len(points) == 0:
        return None, "no usable rows", empty
    chosen, check = result.chosen, result.holdout
    if chosen is None:
        return None, "no law form was fitted", empty
    if check is None or (chosen, check.name) not in result.validation_fits:
        return None, f"without the largest size's runs the {chosen} form cannot be fitted", empty
    form = FORMS[chosen]
    theta, rest = result.validation_fits[(chosen, check.name)]
    held, fitted = check.test, check.train  # predicted endpoints are fitted, never held out (choose.measured_tests)
    say(
        f"held-out check: {chosen} refitted on {int(fitted.sum())} points, predict the largest size's {int(held.sum())}"
    )
    sections = _refit_sections(result, check.name)
    n_boot = min(settings.bootstrap, HOLDOUT_BOOTSTRAP)
    samples = pd.DataFrame(columns=["form"])
    if n_boot:
        runs = bootstrap_form(form, rest, theta, n_boot, settings.seed, settings.grid_points, workers)
        samples = samples_table(form, rest, runs).assign(form=chosen)
    law = fitted_law(sections, chosen, samples, data_range(points[fitted]))
    test = points[held]
    unique = test["unique_tokens"].to_numpy(float) if "unique_tokens" in test.columns else None
    pred = law.predict(test["params"].to_numpy(float), test["tokens"].to_numpy(float), U=unique)
    table = _predicted_table(test, pred)
    section = {
        "form": chosen,
        "what": "the largest model size's runs, predicted from the smaller sizes",
        "held_out": test["run"].tolist(),
        "predicted": table["predicted"].tolist(),
        "actual": table["actual"].tolist(),
        "rel_error": table["rel_error"].tolist(),
        "low": table["low"].tolist(),
        "high": table["high"].tolist(),
        "inside": [bool(v) for v in table["inside"]],
        "max_abs_rel_error": float(np.max(np.abs(table["rel_error"]))),
        "flops_min": float(test["flops"].min()),
        "params": float(test["params"].max()),
        "n_fit_points": int(fitted.sum()),
        "bootstrap": n_boot,
        "fit": sections[chosen]["params"],
    }
    return section, None, table


def _predicted_table(test: pd.DataFrame, pred: pd.DataFrame) -> pd.DataFrame:
    """holdout.csv: each held-out run, its prediction, relative error and interval."""
    actual = test["loss"].to_numpy(float)
    predicted = pred["mean"].to_numpy()
    low, high = pred["obs_ci_lower"].to_numpy(), pred["obs_ci_upper"].to_numpy()
    return pd.DataFrame(
        {
            "run": test["run"].tolist(),
            "params": test["params"].to_numpy(),
            "tokens": test["tokens"].to_numpy(),
            "flops": test["flops"].to_numpy(),
            "actual": actual,
            "predicted": predicted,
            "rel_error": (predicted - actual) / actual,
            "low": low,
            "high": high,
            "inside": (actual >= low) & (actual <= high),
        }
    )
