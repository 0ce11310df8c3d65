"""What the page says about figures the study cannot draw: one line, not a box per figure.

A section whose figures are all absent and that has no table (a feature the study does not use:
no learning-rate sweep, no `scalelab curves`) is left out of the page and named in one line at its
end; within a drawn section, its absent figures share one line.
"""

from __future__ import annotations

from .registry import section_entries


def absent_text(blocks) -> str:
    """'Title: not drawn. Why; Title: not drawn. Why' for absent figure blocks."""
    return "; ".join(f"{block.title}: not drawn. {block.why.rstrip('.')}" for block in blocks) + "."


def shown_and_collapsed(sections, figures: dict, tables: dict, has_snippet) -> tuple[list, list]:
    """(sections drawn, sections collapsed: their absent figure blocks), in page order."""
    shown, collapsed = [], []
    for section in sections:
        figure_specs, table_specs = section_entries(section)
        blocks = [figures[f.name] for f in figure_specs]
        if blocks and all(b.why for b in blocks) and not table_specs and not has_snippet(section):
            collapsed.append((section, blocks))
        else:
            shown.append(section)
    return shown, collapsed
