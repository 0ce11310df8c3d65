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
from ..settings import FitSettings
from .optimal import allocation_section, prediction_budgets
from .approach2 import fit_approach2
from .approach3 import approach3_section, start_grid
from .holdout import fit_holdout
from .hyperparameters import fit_hyperparameters
from .inputs import prepare
from .outputs import (Draft, FitResult, render_allocation, render_approach2, render_approach3, render_excluded,
                      render_header, render_holdout, render_hyperparameters, render_power_laws)
from .power_laws import power_law_sections
from .selection import select_runs


def fit_frame(df: pd.DataFrame, settings: FitSettings | None = None, **kwargs) -> dict:
    """Run every fit on a metrics DataFrame and return the fit.json dict (see `fit_all`)."""
    return fit_all(df, settings, **kwargs).result


def fit_all(df: pd.DataFrame, settings: FitSettings | None = None, *, loss_col=None, params_col=None,
            tokens_col="tokens", flops_col=None, source="metrics", progress=None, **overrides) -> FitResult:
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
    workers = max(1, settings.workers or len(os.sched_getaffinity(0)))
    say = progress or (lambda message: None)
    bootstrap, seed = settings.bootstrap, settings.seed

    usable, excluded, columns = prepare(df, loss_col, params_col, tokens_col, flops_col, source, settings.sweep_keys)
    points, selection = select_runs(usable, settings)
    starts = start_grid(settings.grid_points)
    out = Draft()
    render_header(out, source, settings, columns, len(points), excluded, selection)

    law, why3, samples = approach3_section(points, starts, workers, bootstrap, seed, say)
    render_approach3(out, law, why3, samples)
    render_power_laws(out, power_law_sections(points))
    render_approach2(out, *fit_approach2(points, settings.budgets, bootstrap, seed), bootstrap)
    render_allocation(out, *allocation_section(law, why3, points, settings.predict_flops, samples, bootstrap))
    render_holdout(out, *fit_holdout(points, settings.holdout, starts, workers, say))
    # Hyperparameter laws, from every usable run of the sweeps (not only the best).
    budgets_ahead = prediction_budgets(usable, settings.predict_flops)
    render_hyperparameters(out, *fit_hyperparameters(usable, settings.sweep_keys,
                                                     max(budgets_ahead) if budgets_ahead else None))
    render_excluded(out, excluded)
    return out.finish()


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
