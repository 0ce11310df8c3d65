"""`scalelab suggest`: the runs that would most narrow the interval of the compute-optimal N."""

from __future__ import annotations

from .core import TABLE_COLUMNS, suggest_runs
from .design import Design, Ensemble, choose

__all__ = ["Design", "Ensemble", "TABLE_COLUMNS", "choose", "suggest_runs"]
