"""Which runs the law fits use: under `select: best`, the best run of each hyperparameter sweep
(from a best_in_sweep column, or the lowest loss per grid point); fit.json's `selection` lists
them. The hyperparameter laws (scalelab.fit.hyperparameters) use every usable run instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config.stage_settings import FitSettings
from .common import SIZE_TOLERANCE, cluster


def _grid_point_keys(points: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """One label per row for the grid point it belongs to, and what identifies a grid point:
    the sweep_group column when there is one, else model size and token count (within 1 %),
    and the seed when there is a seed column."""
    if "sweep_group" in points.columns:
        return pd.factorize(points["sweep_group"], sort=True)[0], ["sweep_group"]
    parts = [cluster(points["params"], SIZE_TOLERANCE), cluster(points["tokens"], SIZE_TOLERANCE)]
    by = ["params", "tokens"]
    if "seed" in points.columns:
        parts.append(pd.factorize(points["seed"], sort=True)[0])
        by.append("seed")
    keys = pd.MultiIndex.from_arrays(parts) if len(points) else pd.MultiIndex.from_arrays([[]] * len(parts))
    return pd.factorize(keys, sort=True)[0], by


def select_runs(points: pd.DataFrame, settings: FitSettings) -> tuple[pd.DataFrame, dict]:
    """The points the fits use and the fit.json `selection` section.

    select 'all': every usable point. select 'best': with a best_in_sweep column, the rows it
    marks true (and rows it leaves empty: runs in no sweep); else, with sweep_keys, the lowest-loss
    usable row of each grid point (see `_grid_point_keys`), ties going to the run whose name sorts
    first; else (no sweep) every usable point.
    """
    section = {
        "select": settings.select,
        "by": list(settings.sweep_keys),
        "method": None,
        "group_by": None,
        "runs_used": [],
        "runs_dropped": 0,
    }
    keep = np.ones(len(points), dtype=bool)
    if settings.select == "all":
        section["method"] = "every usable run"
    elif "best_in_sweep" in points.columns:
        flags = points["best_in_sweep"].to_numpy(float)
        keep = (flags == 1) | np.isnan(flags)
        section["method"] = "best_in_sweep column (empty cells: runs in no sweep, kept)"
    elif settings.sweep_keys:
        labels, section["group_by"] = _grid_point_keys(points)
        order = np.lexsort((points["run"].astype(str).to_numpy(), points["loss"].to_numpy(float), labels))
        first = np.ones(len(order), dtype=bool)
        first[1:] = labels[order][1:] != labels[order][:-1]
        keep = np.zeros(len(points), dtype=bool)
        keep[order[first]] = True
        section["method"] = "lowest loss per grid point (ties: the run name that sorts first) among usable runs"
    else:
        section["method"] = "no sweep: every usable run"
    section["runs_used"] = points["run"][keep].tolist()
    section["runs_dropped"] = int((~keep).sum())
    return points[keep].reset_index(drop=True), section
