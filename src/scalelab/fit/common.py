"""Small helpers every fit shares: the tolerances that group runs by size and compute, the
grouping itself, a safe exp and percentile intervals. Numpy only."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np

FLOPS_TOLERANCE = 0.10  # runs whose FLOPs agree within 10 % share a compute budget
SIZE_TOLERANCE = 0.01  # params (or tokens) within 1 % count as the same size


def safe_exp(value) -> float:
    """exp that gives inf (null in fit.json) instead of raising on a wild fit's huge logs."""
    with np.errstate(over="ignore"):
        return float(np.exp(value))


def percentile_ci(values) -> list | None:
    """The 95 % percentile interval of the finite values, or None with fewer than 2."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None
    return [float(v) for v in np.percentile(values, [2.5, 97.5])]


def cluster(values, tolerance) -> np.ndarray:
    """Labels grouping positive values that lie within `tolerance` (relative) of a group's smallest."""
    values = np.asarray(values, dtype=float)
    labels = np.empty(len(values), dtype=int)
    label, anchor = -1, None
    for i in np.argsort(values, kind="stable"):
        if anchor is None or values[i] > anchor * (1 + tolerance):
            label, anchor = label + 1, values[i]
        labels[i] = label
    return labels


def n_distinct(values, tolerance=SIZE_TOLERANCE) -> int:
    """How many distinct sizes (within `tolerance`) the values hold."""
    return 0 if len(values) == 0 else int(cluster(values, tolerance).max() + 1)


def parallel_map(func, tasks, workers):
    if workers <= 1 or len(tasks) <= 1:
        return [func(task) for task in tasks]
    # fork: workers inherit the imported modules, so a pool costs milliseconds, not seconds.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
        return list(pool.map(func, tasks))
