"""What the page says about figures the study cannot draw: one line, not a box per figure.

A section whose figures are all absent and whose tables have no rows (a feature the study does not
use: no learning-rate sweep, no `scalelab suggest`) is left out of the page and named in one line at
its end; within a drawn section, its absent figures share one line.
"""

from __future__ import annotations

from .registry import section_entries


def absent_text(blocks) -> str:
    """'Title: not drawn. Why; Title: not drawn. Why' for absent figure blocks."""
    return "; ".join(f"{block.title}: not drawn. {block.why.rstrip('.')}" for block in blocks) + "."


def shown_and_collapsed(sections, figures: dict, tables: dict, has_snippet) -> tuple[list, list]:
    """(sections drawn, what the collapsed ones would have said), in page order. A section collapses
    when none of its figures is drawn, none of its tables has a row and it has no snippet; it leaves
    (figure name or None, its one reason) for each absent figure and each empty table's note."""
    shown, collapsed = [], []
    for section in sections:
        figure_specs, table_specs = section_entries(section)
        blocks = [figures[f.name] for f in figure_specs]
        empty = [tables[t.name] for t in table_specs]
        if all(b.why for b in blocks) and not any(t.rows for t in empty) and not has_snippet(section):
            collapsed += [(b.name, f"{b.title}: not drawn. {b.why.rstrip('.')}") for b in blocks]
            collapsed += [(None, f"{t.title}: {' '.join(t.notes).rstrip('.') or 'no rows'}") for t in empty]
        else:
            shown.append(section)
    return shown, collapsed
