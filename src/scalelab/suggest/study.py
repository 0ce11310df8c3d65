"""From a metrics CSV and its fit folder to the suggested runs, every input checked first.

The CSV is read with the columns and run selection the fit recorded in fit.json, and its usable
rows must have the fingerprint fit.json keeps (`inputs.rows_sha256`): a fit of another CSV, or of
an older state of this one, would design from the wrong uncertainty.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import ScalelabError
from ..config.stage_settings import FitSettings, SuggestSettings
from .core import suggest_runs
from .ensemble import uncertainty_from_fit_dir

TARGET_TIMES_LARGEST = 100  # the default target: 100x the largest run


def read_points(metrics, fit: dict, fit_dir):
    """The usable rows of the CSV as the fit read them, and the rows its law fits used."""
    from ..fit.inputs import prepare, read_metrics, rows_sha256
    from ..fit.selection import select_runs

    df = read_metrics(metrics)
    columns = fit.get("columns") or {}
    settings_dict = dict(fit.get("settings") or {})
    try:
        settings = FitSettings.from_dict(settings_dict, where=f"--fit {fit_dir}/fit.json: settings")
    except ScalelabError:
        settings = FitSettings()
    flops_col = columns.get("flops")
    usable, _, _ = prepare(
        df,
        columns.get("loss"),
        columns.get("params", "params"),
        columns.get("tokens", "tokens"),
        None if flops_col in (None, "6*params*tokens") else flops_col,
        str(metrics),
        settings.sweep_keys,
        settings.allow_any_loss,
    )
    expected = (fit.get("inputs") or {}).get("rows_sha256")
    if not expected:
        raise ScalelabError(
            f"--fit {fit_dir}: fit.json has no row fingerprint (inputs.rows_sha256); it was written "
            f"by an older scalelab fit: refit {metrics}"
        )
    points, _ = select_runs(usable, settings)
    if rows_sha256(points) != expected:
        raise ScalelabError(
            f"--fit {fit_dir}: this fit is not of {metrics} (its row fingerprint differs): "
            "refit the CSV, or pass the fit folder written for it"
        )
    # What the study has spent: under WSD a run's own share (flops_spent, its trunk segment and
    # cooldown), else every usable run's FLOPs.
    spent = pd.to_numeric(df["flops_spent"], errors="coerce") if "flops_spent" in df.columns else None
    spent = (
        float(spent[np.isfinite(spent)].sum())
        if spent is not None and np.isfinite(spent).any()
        else float(usable["flops"].sum())
    )
    return usable, points, spent


def width_with_forms(fit_dir, target: float) -> float | None:
    """The 95 % width of log N_opt at the target as the fit states it (every form by its weight and the
    drift along the rolling origin: scalelab.laws.fitted.FittedLaw.allocate), None where it has none."""
    from ..laws.fitted import load_fit

    try:
        row = load_fit(fit_dir).allocate([target]).iloc[0]
    except ScalelabError:
        return None
    width = float(np.log(row["params_high"] / row["params_low"]))
    return width if math.isfinite(width) else None


def endpoint_noise(fit: dict, endpoint_sd: float | None) -> tuple[float, float] | None:
    """(the curve law's sd of a predicted endpoint, the chosen form's residual sigma), or None."""
    chosen = fit.get("chosen_form")
    sigma = ((fit.get("forms") or {}).get(chosen) or {}).get("residual_sigma")
    if endpoint_sd is None or not isinstance(sigma, (int, float)) or not math.isfinite(sigma):
        return None
    return float(endpoint_sd), float(sigma)


def plan(metrics, fit_dir, settings: SuggestSettings, endpoint_sd: float | None = None) -> dict:
    """Check every input, then design: the suggestions table, the design and what they were built from."""
    fit, model = uncertainty_from_fit_dir(fit_dir)
    usable, points, spent = read_points(metrics, fit, fit_dir)
    if len(points) == 0:
        raise ScalelabError(f"{metrics}: no usable rows")
    largest = float(points["flops"].max())
    target = settings.target_flops or TARGET_TIMES_LARGEST * largest
    budget = settings.budget_flops or spent
    if target < largest:
        raise ScalelabError(
            f"--target-flops {settings.target_flops:.4g}: below the largest run's FLOPs "
            f"({largest:.4g}); the design is for a budget beyond the study"
        )
    if not (math.isfinite(budget) and budget > 0):
        raise ScalelabError(f"--budget-flops: must be positive and finite, got {budget!r}")
    sizes = list(settings.sizes)
    realise = None
    if settings.models:
        from .snippet import Shapes

        shapes = Shapes(settings.models)
        realise = shapes.realise
        sizes = [realise(n) for n in sizes]
    stated = width_with_forms(fit_dir, target)
    model.stated_width = stated
    table, design = suggest_runs(
        model,
        points,
        target,
        budget,
        settings.max_runs,
        sizes,
        settings.cooldown,
        realise=realise,
        tokens_per_step=settings.tokens_per_step,
        max_tokens=settings.max_tokens,
        frontier_band=settings.frontier_band,
        endpoint_noise=endpoint_noise(fit, endpoint_sd),
    )
    return {
        "endpoint_sd": endpoint_sd if endpoint_noise(fit, endpoint_sd) else None,
        "fit": fit,
        "points": points,
        "table": table,
        "design": design,
        "target_flops": target,
        "width_with_forms": stated,
        "budget_flops": budget,
        "largest_flops": largest,
        "spent_flops": spent,
        "settings": settings,
        "ensemble": model.point,
        "uncertainty": model,
        "n_resamples": int(len(model.point.samples)),
        "done_sizes": np.unique(points["params"].to_numpy(float)),
        "done_tokens": np.unique(points["tokens"].to_numpy(float)),
    }
