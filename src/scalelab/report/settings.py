"""The report's settings: `ReportSettings`, which lives with every stage's settings in
`scalelab.config.stage_settings`; this module keeps the import path the report and the Snakefile use.
Standard library only."""

from __future__ import annotations

from ..config.stage_settings import ReportSettings

__all__ = ["ReportSettings"]
