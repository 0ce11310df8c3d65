"""`scalelab fit`: scaling laws from any metrics CSV.

Four views of one ladder of runs, each written to `DIR/fit.json` (the contract read by later
stages), tidy CSV tables and a human-readable `fit.txt`:

- Approach 3 (Hoffmann et al. 2022, as replicated by Besiroglu et al. 2024): the law
  L(N, D) = E + A/N^alpha + B/D^beta, fitted in log space by minimising the *sum* of Huber
  losses (delta 1e-3) of log-loss residuals with L-BFGS-B from a grid of starts, with bootstrap
  95 % intervals. It gives the compute-optimal allocation and a held-out check.
- Power laws in one variable at the largest-D and largest-N slices (scipy and statsmodels).
- Approach 2 (IsoFLOP), as Porian et al. (2024) estimate it: per compute budget the minimum of an
  Akima spline of log loss over log N, redrawn with the runs' estimated loss noise (N_opt the
  median of the redrawn minima), then N_opt ~ C^a by weighted least squares, with the percentile
  interval of the same regression through the redrawn minima.
- Hyperparameters: for each swept column (e.g. lr), the optimum of every (N, D) group from all its
  runs, then power laws of that optimum in N and in C (statsmodels OLS in log-log space) and the
  value they recommend at the next budget.

Every setting lives in `FitSettings` (scalelab.config.stage_settings; CLI flags and `--spec` JSON both land
there). Under `select: best` the law fits use the best run of each hyperparameter sweep
(`select_runs`); fit.json's `selection` lists the runs used. A section that the data cannot
identify is null, with `<section>_why` saying why.

The package, one concern a module (this module re-exports their public names):

    inputs           reading any metrics CSV into canonical points (`read_metrics`, `prepare`)
    selection        which runs the law fits use (`select_runs`)
    approach3        the law's objective, starts, L-BFGS-B and bootstrap (`fit_approach3`, ...)
    power_laws       power laws in one variable (`fit_power_law`)
    approach2        IsoFLOP profiles (`fit_approach2`)
    optimal          the compute-optimal allocation (`allocation`)
    forms            any law form of scalelab.laws.law: fit, bootstrap, residual scatter (`fit_form`, ...)
    validation       rolling-origin (walk-forward) checks of a points table (`rolling_checks`)
    evidence         what the checks say: extrapolation scatter, the point law's rule, the weights
    choose           every form fitted and checked walk-forward, the point law chosen
    holdout          the held-out check: the largest size's runs predicted from the smaller sizes
    decision         N_opt, D_opt and the loss at the budgets ahead, with intervals over every form
    hyperparameters  laws of the best hyperparameters (`fit_hyperparameters`)
    metric_spec      what --metrics/--metric-spec say about each evaluation metric (`metric_specs`)
    metric_models    the direct and two-step metric laws fitted to runs (`fit_method`)
    metric_laws      both methods checked out of sample, one chosen, intervals, the verdict (`fit_metric_laws`)
    metric_outputs   fit.json's `metrics`, metrics.csv, metric_forecasts.csv (`render_metrics`)
    outputs          fit.json, the tables and fit.txt (`FitResult`, `write_outputs`)
    pipeline         every section in order (`fit_all`, `fit_frame`)
    command          the CLI (`add_arguments`, `run`)
    common           tolerances and helpers the fits share

Importing it loads numpy, pandas, scipy and statsmodels, never matplotlib or torch.
"""

from __future__ import annotations

import os

# L-BFGS-B on five parameters calls BLAS on tiny vectors; a threaded OpenBLAS spends 10-20x
# more time spinning its threads than computing (measured on 2 cores), so the fit asks for one
# BLAS thread unless the user chose otherwise. This only works before numpy/scipy load, so it
# comes before any import of the package's modules.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from ..laws.law import compute_optimal, predict_loss  # noqa: E402  (part of fit's API)
from ..config.stage_settings import GRID_POINTS, MAX_BOOTSTRAP, MAX_GRID_POINTS, FitSettings  # noqa: E402
from .optimal import allocation, prediction_budgets  # noqa: E402
from .approach2 import (
    NOISE_MIN_SIZES,
    NOISE_WINDOW,
    fit_approach2,
    isoflop_groups,
    isoflop_window,  # noqa: E402
    loss_noise,
    spline_minima,
)
from .approach3 import (
    BOOTSTRAP_GRID_STARTS,
    FINAL_OPTIONS,
    FINAL_RERUNS,
    HUBER_DELTA,  # noqa: E402
    MIN_PARALLEL_RUNS,
    PARAM_NAMES,
    SCREEN_OPTIONS,
    bootstrap_approach3,
    fit_approach3,
    grid_objective,
    huber_objective,
    minimise,
    start_grid,
)
from .command import SETTING_FLAGS, add_arguments, run, settings_from_args  # noqa: E402
from .common import FLOPS_TOLERANCE, SIZE_TOLERANCE, cluster  # noqa: E402
from .hyperparameters import HPARAM_COLUMNS, HPARAM_RULE, fit_hyperparameters  # noqa: E402
from .inputs import prepare, read_metrics  # noqa: E402
from .outputs import FitResult, write_outputs  # noqa: E402
from .pipeline import fit_all, fit_frame  # noqa: E402
from .power_laws import fit_power_law  # noqa: E402
from .selection import select_runs  # noqa: E402
from .validation import Check, rolling_checks  # noqa: E402

__all__ = [
    "BOOTSTRAP_GRID_STARTS",
    "Check",
    "cluster",
    "FINAL_OPTIONS",
    "FINAL_RERUNS",
    "FLOPS_TOLERANCE",
    "FitResult",
    "FitSettings",
    "GRID_POINTS",
    "HPARAM_COLUMNS",
    "HPARAM_RULE",
    "HUBER_DELTA",
    "MAX_BOOTSTRAP",
    "MAX_GRID_POINTS",
    "MIN_PARALLEL_RUNS",
    "NOISE_MIN_SIZES",
    "NOISE_WINDOW",
    "PARAM_NAMES",
    "SCREEN_OPTIONS",
    "SETTING_FLAGS",
    "SIZE_TOLERANCE",
    "add_arguments",
    "allocation",
    "bootstrap_approach3",
    "compute_optimal",
    "fit_all",
    "fit_approach2",
    "fit_approach3",
    "fit_frame",
    "fit_hyperparameters",
    "fit_power_law",
    "grid_objective",
    "huber_objective",
    "isoflop_groups",
    "isoflop_window",
    "loss_noise",
    "minimise",
    "predict_loss",
    "prediction_budgets",
    "prepare",
    "read_metrics",
    "rolling_checks",
    "run",
    "select_runs",
    "settings_from_args",
    "spline_minima",
    "start_grid",
    "write_outputs",
]
