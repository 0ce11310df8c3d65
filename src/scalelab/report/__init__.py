"""`scalelab report`: the figures, tables and pages a scaling study is read by.

Reads `metrics.csv`, `runs/{run}/curve.csv`, `fit/fit.json` and `data/meta.json`; writes into --out:

    index.html      one self-contained page: figures as base64 PNG, inline CSS, no network
    report.md       the same content for terminals and repository viewers (figures linked)
    figures/*.png   the figures of the registry (and *.svg for papers), always under the same names
    tables/*.html   each table as a small page, for Snakemake's own report
    summary.txt     the short terminal summary; `run` also prints it

The package, one concern a module:

    registry    sections, figures and tables (name, title, category, caption, function); outputs
    settings    ReportSettings, parsed from --spec
    inputs      reading and checking the inputs into a Study (fit.json via scalelab.laws.fitjson)
    fmt         how numbers and words are written
    plotting    the figures' style and shared matplotlib helpers
    figures     the figures;  tables: the tables;  summary: summary.txt and print_summary
    page        index.html and table pages (with report.css);  markdown: report.md
    build       build_report, which writes it all;  command: the CLI

This module and registry, settings, summary, fmt and command import no matplotlib, numpy or
pandas: the Snakefile imports them on every dry run.
"""

from __future__ import annotations

from .command import add_arguments, run
from .registry import FIGURES, SECTIONS, TABLES, output_paths, rule_outputs
from .settings import ReportSettings
from .summary import print_summary

__all__ = [
    "FIGURES",
    "SECTIONS",
    "TABLES",
    "ReportSettings",
    "add_arguments",
    "build_report",
    "output_paths",
    "print_summary",
    "rule_outputs",
    "run",
]


def build_report(
    metrics,
    fit,
    runs,
    data_meta,
    out,
    settings: ReportSettings = ReportSettings(),
    suggest=None,
    study_settings: dict | None = None,
    trunk_segments: dict | None = None,
    curve_laws=None,
) -> str:
    """Write the whole report into `out` and return the summary text (see scalelab.report.build)."""
    from .build import build_report as build

    return build(metrics, fit, runs, data_meta, out, settings, suggest, study_settings, trunk_segments, curve_laws)
