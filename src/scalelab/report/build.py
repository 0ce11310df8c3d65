"""`build_report`: read the study once, then write every output of the registry into --out.

Order matters: figures and tables first, then report.md and index.html, and summary.txt last,
so that its presence means the report is complete. Every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

from ..files import write_text
from .figures import draw_figures
from .inputs import load_study, read_curve_laws
from .markdown import render_markdown
from .page import render_html, standalone_table
from .settings import ReportSettings
from .summary import summary_text
from .tables import build_tables


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
    """Write the whole report into `out` and return the summary text. `study_settings` is the
    resolved config (scalelab.plan.resolved.study_settings) for the Study settings table;
    `trunk_segments` maps a WSD run to its trunk segment's info file (its trunk share)."""
    s = load_study(
        Path(metrics),
        Path(fit),
        Path(runs),
        Path(data_meta),
        settings,
        Path(suggest) if suggest is not None else None,
        trunk_segments,
    )
    s.study_settings = study_settings
    s.curve_laws = read_curve_laws(Path(curve_laws) if curve_laws is not None else None)
    out = Path(out)
    figures = draw_figures(s, out / "figures")
    tables = build_tables(s)
    for name, table in tables.items():
        write_text(out / "tables" / f"{name}.html", standalone_table(table, s.title))
    summary = summary_text(s, out / "index.html", Path(runs).parent)  # runs: <results>/runs
    write_text(out / "report.md", render_markdown(s, summary, figures, tables))
    write_text(out / "index.html", render_html(s, summary, figures, tables))
    write_text(out / "summary.txt", summary)  # last: its presence means the report is complete
    return summary
