"""`scalelab suggest`: the runs that would most narrow the interval of the compute-optimal N."""

from __future__ import annotations

from .core import TABLE_COLUMNS, suggest_runs
from .design import Design, Ensemble, choose
from .uncertainty import Component, Uncertainty

__all__ = ["Component", "Design", "Ensemble", "TABLE_COLUMNS", "Uncertainty", "choose", "suggest_runs"]
