"""report.md: the page's content for terminals and repository viewers, figures linked.

Markdown renderers pass raw HTML through, so every string that can come from the user (the
title, run ids, model names, reasons and notes that quote them) goes through `md_text`: HTML
special characters become entities and Markdown's own punctuation is backslash-escaped. The
summary is a fenced code block whose fence is longer than any run of backticks in it.
"""

from __future__ import annotations

import html
import re

from .absent import absent_text, shown_and_collapsed
from .figures import FigureBlock
from .fmt import is_number
from .inputs import Study
from .registry import SECTIONS, TABLES, section_entries
from .tables import Table

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~$])")  # emphasis, code, links, table cells, strike, math


def md_text(text) -> str:
    """Any string as literal inline Markdown text: no HTML, no emphasis, links or table breaks."""
    text = html.escape(" ".join(str(text).split()), quote=False)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def md_code_block(text: str, info: str = "text") -> str:
    """A fenced block that no backticks in `text` can close early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def md_table(table: Table) -> str:
    if not table.rows:
        return "\n\n".join(f"> {md_text(n)}" for n in table.notes)
    numeric = [any(is_number(row[i].text) for row in table.rows) for i in range(len(table.columns))]
    lines = [
        "| " + " | ".join(md_text(c) for c in table.columns) + " |",
        "|" + "|".join(" ---: " if is_num else " --- " for is_num in numeric) + "|",
    ]
    lines += ["| " + " | ".join(md_text(c.text) for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "".join(f"\n\n{md_text(n)}" for n in table.notes)


def md_figure(block: FigureBlock) -> list[str]:
    if block.why:  # no figure, no caption: one line that says why it is absent
        return [f"> {md_text(f'{block.title}: not drawn. {block.why}')}", ""]
    heading = md_text(f"Figure {block.number}. {block.title}.")
    return [
        f"![{md_text(block.title)}](figures/{block.name}.png)",
        "",
        f"**{heading}** {md_text(block.caption)} ([SVG](figures/{block.name}.svg))",
        "",
    ]


def render_markdown(s: Study, summary: str, figures: dict[str, FigureBlock], tables: dict[str, Table]) -> str:
    out = [f"# {md_text(s.title)}", "", "## Summary", "", md_code_block(summary.rstrip()), ""]
    has_snippet = bool(s.suggest and s.suggest.get("snippet"))
    shown, collapsed = shown_and_collapsed(SECTIONS, figures, tables, lambda sec: sec.id == "next" and has_snippet)
    for section in shown:
        figure_specs, table_specs = section_entries(section)
        out += [f"## {md_text(section.heading)}", "", md_text(section.intro), ""]
        for spec in figure_specs:
            if not figures[spec.name].why:
                out += md_figure(figures[spec.name])
        absent = [figures[spec.name] for spec in figure_specs if figures[spec.name].why]
        if absent:  # the figures this study cannot draw: one line
            out += [f"> {md_text(absent_text(absent))}", ""]
        for spec in table_specs:
            table = tables[spec.name]
            out += [f"### {md_text(table.title)}", "", md_text(TABLES[spec.name].caption()), "", md_table(table), ""]
        if section.id == "next" and has_snippet:
            out += [
                "Paste into the config (only these runs train):",
                "",
                md_code_block(s.suggest["snippet"].rstrip(), "yaml"),
                "",
            ]
    if collapsed:  # the sections of features this study does not use: one line
        out += [f"> {md_text('Not used by this study: ' + '; '.join(text for _, text in collapsed) + '.')}", ""]
    return "\n".join(out)
