"""`fit_all`: every fit of `scalelab fit`, in order, on one metrics table.

The points are prepared (scalelab.fit.inputs) and selected (scalelab.fit.selection) once; then
each section is fitted by its own module and rendered by scalelab.fit.outputs: Approach 3, the
power laws in one variable, Approach 2, the compute-optimal allocation, the held-out check and
the hyperparameter laws. A section that the data cannot identify is null, with `<section>_why`
saying why.
"""

from __future__ import annotations

import os
from dataclasses import fields, replace

import pandas as pd

from ..errors import ScalelabError
from ..config.stage_settings import FitSettings
from ..laws.law import FLOPS_CONVENTION
from .optimal import prediction_budgets
from .approach2 import fit_approach2
from .choose import approach3_section, check_requested, fit_forms, validation_section
from .decision import allocation_section, disagreement_section, optimum_drift
from .holdout import holdout_section
from .hyperparameters import fit_hyperparameters
from .metric_outputs import render_metrics
from .metric_spec import metric_specs
from .inputs import check_row_count, data_range, duplicate_rows_warning, prepare, rows_sha256
from .forms_text import render_forms
from .outputs import (
    Draft,
    FitResult,
    render_allocation,
    render_approach2,
    render_approach3,
    render_disagreement,
    render_excluded,
    render_header,
    render_holdout,
    render_hyperparameters,
    render_power_laws,
    render_warnings,
)
from .power_laws import power_law_sections
from .selection import select_runs


def _cpu_count() -> int:
    """The CPUs this process may use (os.sched_getaffinity does not exist on macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def fit_frame(df: pd.DataFrame, settings: FitSettings | None = None, **kwargs) -> dict:
    """Run every fit on a metrics DataFrame and return the fit.json dict (see `fit_all`)."""
    return fit_all(df, settings, **kwargs).result


def fit_all(
    df: pd.DataFrame,
    settings: FitSettings | None = None,
    *,
    loss_col=None,
    params_col=None,
    tokens_col="tokens",
    flops_col=None,
    source="metrics",
    progress=None,
    metrics=(),
    metric_spec=None,
    **overrides,
) -> FitResult:
    """Every fit on a metrics DataFrame: the fit.json dict, tidy tables and the fit.txt text.

    `settings` (default FitSettings()) with any FitSettings field overridden by keyword, e.g.
    fit_all(df, bootstrap=0). loss_col overrides settings.target; params_col defaults to params or
    params_total as settings.params says; the other *_col name the CSV's columns.
    """
    settings = _with_overrides(settings, overrides)
    if loss_col is None and settings.target != FitSettings().target:
        loss_col = settings.target  # the default target alone falls back to 'loss'
    if params_col is None:
        params_col = "params_total" if settings.params == "total" else "params"
    workers = max(1, settings.workers or _cpu_count())
    say = progress or (lambda message: None)
    bootstrap, seed = settings.bootstrap, settings.seed

    usable, excluded, columns = prepare(
        df, loss_col, params_col, tokens_col, flops_col, source, settings.sweep_keys, settings.allow_any_loss
    )
    check_row_count(len(usable), source)
    points, selection = select_runs(usable, settings)
    specs = metric_specs(df, metrics, metric_spec)  # before the long fits: a bad column costs nothing
    check_requested(points, settings, source)
    out = _started_draft(source, settings, columns, points, usable, excluded, selection)
    forms = fit_forms(points, settings, workers, say)
    optimum_drift(points, forms)
    render_forms(out, forms, validation_section(forms))
    law, why3 = approach3_section(forms, settings)
    render_approach3(out, law, why3, forms.chinchilla_samples)
    render_power_laws(out, power_law_sections(points))
    render_approach2(out, *fit_approach2(points, settings.budgets, bootstrap, seed), bootstrap)
    allocation, why_allocation = allocation_section(forms, prediction_budgets(points, settings.predict_flops))
    render_allocation(out, allocation, why_allocation)
    render_disagreement(out, disagreement_section(forms, allocation))
    render_metrics(out, points, df, specs, settings)
    render_holdout(out, *holdout_section(points, settings, forms, workers, say))
    # Hyperparameter laws, from every usable run of the sweeps (not only the best).
    budgets_ahead = prediction_budgets(usable, settings.predict_flops)
    render_hyperparameters(
        out, *fit_hyperparameters(usable, settings.sweep_keys, max(budgets_ahead) if budgets_ahead else None)
    )
    render_excluded(out, excluded)
    render_warnings(out)
    return out.finish()


def _started_draft(source, settings, columns, points, usable, excluded, selection) -> Draft:
    """The outputs' header: the settings, the columns, the rows used and left out, what fit.json's
    `inputs` records, and a warning for rows repeated verbatim."""
    out = Draft()
    render_header(out, source, settings, columns, len(points), excluded, selection)
    repeated = duplicate_rows_warning(usable, columns)
    if repeated:
        out.result.setdefault("warnings", []).append(repeated)
    out.result.update(
        {
            "schema_version": 2,
            "flops_convention": FLOPS_CONVENTION,
            "inputs": {"rows_sha256": rows_sha256(points), "n_rows": len(points), "range": data_range(points)},
        }
    )
    return out


def _with_overrides(settings: FitSettings | None, overrides: dict) -> FitSettings:
    """`settings` (default FitSettings()) with the fields in `overrides` replaced, each checked."""
    settings = settings or FitSettings()
    known = {f.name for f in fields(FitSettings)}
    for key in overrides:
        if key not in known:
            raise ScalelabError(f"unknown fit setting {key!r} (known: {', '.join(sorted(known))})")
    if overrides:
        settings = replace(settings, **overrides)  # __post_init__ checks every value
    return settings
