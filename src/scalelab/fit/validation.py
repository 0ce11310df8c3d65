"""Rolling-origin (walk-forward) checks of a ladder: fit on the smallest, predict everything larger.

`rolling_checks(points)` lists the checks of a points table (columns params, tokens, flops): along
each axis (model size N, tokens D, compute C) the runs are grouped (sizes within 1 %, compute within
10 %), and for every origin k from the smallest set that still identifies a law (3 sizes and 3 token
counts in the training runs) up to the second-largest group, the check trains on the k smallest
groups and tests on every larger run. Unlike leave-one-group-out checks, each one extrapolates the
way the law will be used, and the sequence of origins shows how the answer moves as the ladder
grows (scalelab.fit.decision reads that drift for the compute-optimal N).

Along an axis with many groups (D in a ladder of tokens-per-parameter multiples has one per run),
at most `max_origins` origins are kept, spread evenly in rank and always including the last one.
The checks are plain masks, so any method (law forms here, metric laws elsewhere) can be scored
on the same walk-forward splits. numpy and pandas only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .common import FLOPS_TOLERANCE, SIZE_TOLERANCE, cluster, n_distinct

AXES = {"params": SIZE_TOLERANCE, "tokens": SIZE_TOLERANCE, "flops": FLOPS_TOLERANCE}
MIN_SIZES = 3  # a law with an N term and a D term needs 3 sizes and 3 token counts to be identified
MIN_TOKENS = 3
MAX_ORIGINS = 4  # origins kept per axis


@dataclass(frozen=True)
class Check:
    """One walk-forward split: train on `train`, predict `test` (boolean masks over the points)."""

    name: str  # e.g. "params:4" (the 4 smallest sizes)
    axis: str  # params, tokens or flops
    origin: int  # how many of the axis's groups are trained on
    train: np.ndarray
    test: np.ndarray


def _trainable(points: pd.DataFrame, mask: np.ndarray, min_points: int) -> bool:
    if mask.sum() < min_points:
        return False
    return n_distinct(points["params"][mask]) >= MIN_SIZES and n_distinct(points["tokens"][mask]) >= MIN_TOKENS


def _spread(origins: list[int], keep: int) -> list[int]:
    """At most `keep` of the origins, evenly spread by rank, the last always among them."""
    if len(origins) <= keep:
        return origins
    picks = np.unique(np.round(np.linspace(0, len(origins) - 1, keep)).astype(int))
    return [origins[i] for i in picks]


def rolling_checks(
    points: pd.DataFrame, min_points: int = 10, max_origins: int = MAX_ORIGINS, axes=tuple(AXES)
) -> list[Check]:
    """Every walk-forward check of `points` along `axes`: train on the k smallest groups of the axis,
    test on all larger runs, for each origin k whose training runs hold 3+ sizes, 3+ token counts and
    `min_points` runs (at most `max_origins` per axis, the largest origin always included)."""
    out = []
    if len(points) == 0:
        return out
    for axis in axes:
        labels = cluster(points[axis].to_numpy(float), AXES[axis])
        n_groups = int(labels.max()) + 1
        origins = [k for k in range(1, n_groups) if _trainable(points, labels < k, min_points)]
        for k in _spread(origins, max_origins):
            train = labels < k
            out.append(Check(f"{axis}:{k}", axis, k, train, ~train))
    return out


def largest_size_check(points: pd.DataFrame, min_points: int = 6) -> Check | None:
    """The check that trains on every size but the largest and predicts the largest size's runs (all
    its token counts): the held-out check fit.txt and the report show. None when the rest cannot
    identify a law."""
    if len(points) == 0:
        return None
    labels = cluster(points["params"].to_numpy(float), SIZE_TOLERANCE)
    train = labels < labels.max()
    if not train.any() or not _trainable(points, train, min_points):
        return None
    return Check(f"params:{int(labels.max())}", "params", int(labels.max()), train, ~train)
