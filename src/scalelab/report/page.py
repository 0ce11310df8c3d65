"""index.html and the per-table pages: one self-contained HTML page (figures as base64 PNG,
the CSS of report.css inlined, no network), sections in the order of the registry. Every string
is HTML-escaped; every fit.json number keeps its exact value in a `data-value` attribute."""

from __future__ import annotations

import base64
import functools
import html
import json
from importlib import resources

from ..version import __version__
from .absent import shown_and_collapsed
from .figures import FigureBlock
from .fmt import is_number, label
from .inputs import Study
from .registry import SECTIONS, TABLES, section_entries
from .tables import Table


@functools.lru_cache(maxsize=1)
def css() -> str:
    """The page's style sheet, shipped in the package as report.css."""
    return resources.files("scalelab.report").joinpath("report.css").read_text()


def _numeric_columns(table: Table) -> list[bool]:
    return [any(is_number(row[i].text) for row in table.rows) for i in range(len(table.columns))]


def _cell(cell, is_num: bool) -> str:
    attrs = []
    css_class = (cell.css + (" num" if is_num else "")).strip()
    if css_class:
        attrs.append(f'class="{css_class}"')
    if cell.source:
        attrs.append(f'data-fit="{html.escape(cell.source)}"')
        attrs.append(f'data-value="{html.escape(json.dumps(cell.value))}"')
    return f"<td{''.join(' ' + a for a in attrs)}>{html.escape(cell.text)}</td>"


def html_table(table: Table) -> str:
    if not table.rows:
        return "\n".join(f'<p class="why">{html.escape(n)}</p>' for n in table.notes)
    numeric = _numeric_columns(table)
    out = [
        f'<div class="table-wrap"><table id="table-{table.name}" data-table="{table.name}">',
        "<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in table.columns) + "</tr></thead><tbody>",
    ]
    out += ["<tr>" + "".join(_cell(cell, is_num) for cell, is_num in zip(row, numeric)) + "</tr>" for row in table.rows]
    out.append("</tbody></table></div>")
    out += [f'<p class="note">{html.escape(n)}</p>' for n in table.notes]
    return "\n".join(out)


def html_figure(block: FigureBlock) -> str:
    heading = f"Figure {block.number}. {block.title}."
    if block.why:  # no figure, no caption: one line that says why it is absent
        return (
            f'<p class="why" data-absent="{block.name}">{html.escape(block.title)}: not drawn. '
            f"{html.escape(block.why)}</p>"
        )
    data = base64.b64encode(block.png).decode("ascii")
    width = int.from_bytes(block.png[16:20], "big") * 2 // 3  # 150 dpi shown at ~100 CSS px per inch
    return (
        f'<figure id="fig-{block.name}" data-figure="{block.name}">'
        f'<img src="data:image/png;base64,{data}" width="{width}" alt="{html.escape(block.title)}">'
        f"<figcaption><b>{html.escape(heading)}</b> {html.escape(block.caption)}</figcaption></figure>"
    )


def html_table_block(table: Table) -> str:
    """A table on the page: its title, its caption (the registry's) and the table."""
    caption = TABLES[table.name].caption()
    return f'<h3>{html.escape(table.title)}</h3>\n<p class="caption">{html.escape(caption)}</p>\n' + html_table(table)


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{css()}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _has_snippet(s: Study, section) -> bool:
    return section.id == "next" and bool(s.suggest and s.suggest.get("snippet"))


def _absent_line(blocks, lead: str = "") -> list[str]:
    """Absent figures in one line; each keeps its data-absent name."""
    if not blocks:
        return []
    parts = [
        f'<span data-absent="{b.name}">{html.escape(b.title)}: not drawn. {html.escape(b.why.rstrip("."))}</span>'
        for b in blocks
    ]
    return [f'<p class="why">{html.escape(lead)}' + "; ".join(parts) + ".</p>"]


def render_html(s: Study, summary: str, figures: dict[str, FigureBlock], tables: dict[str, Table]) -> str:
    counts = s.metrics["status"].value_counts()
    subtitle = (
        f"{len(s.metrics)} runs ({counts.get('ok', 0)} ok) · target {s.target} · N = {label(s.n_col)} · "
        f"made by scalelab {__version__}"
    )
    shown, collapsed = shown_and_collapsed(SECTIONS, figures, tables, lambda sec: _has_snippet(s, sec))
    body = [
        f"<h1>{html.escape(s.title)}</h1>",
        f'<p class="subtitle">{html.escape(subtitle)}</p>',
        "<nav>" + "".join(f'<a href="#{sec.id}">{html.escape(sec.heading)}</a>' for sec in shown) + "</nav>",
        '<h2 id="summary">Summary</h2>',
        f'<pre class="summary">{html.escape(summary)}</pre>',
    ]
    for section in shown:
        figure_specs, table_specs = section_entries(section)
        body.append(
            f'<section id="{section.id}"><h2>{html.escape(section.heading)}</h2>'
            f'<p class="intro">{html.escape(section.intro)}</p>'
        )
        body += [html_figure(figures[f.name]) for f in figure_specs if not figures[f.name].why]
        body += _absent_line([figures[f.name] for f in figure_specs if figures[f.name].why])
        body += [html_table_block(tables[t.name]) for t in table_specs]
        if section.id == "next" and s.suggest and s.suggest.get("snippet"):
            body.append(
                '<p class="intro">Paste into the config (only these runs train):</p>'
                f'<pre class="snippet">{html.escape(s.suggest["snippet"])}</pre>'
            )
        body.append("</section>")
    if collapsed:  # the sections of features this study does not use: one line
        parts = [
            f'<span data-absent="{name}">{html.escape(text)}</span>' if name else html.escape(text)
            for name, text in collapsed
        ]
        body.append('<p class="why">Not used by this study: ' + "; ".join(parts) + ".</p>")
    return _document(s.title, "\n".join(body))


def standalone_table(table: Table, title: str) -> str:
    """One table as its own small page, for Snakemake's report (which shows HTML inline)."""
    return _document(title, f"<h3>{html.escape(table.title)}</h3>\n{html_table(table)}")
