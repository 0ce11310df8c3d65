"""The tables' cells and building every table of the registry, in its order.

The tables themselves are one `table_<name>` function each, in a module by concern: what the
fit found (tables_fit), the runs (tables_runs) and what produced them (tables_settings); the
registry names each one's module.

A table is rows of Cells. A number from fit.json keeps its exact value and the fit.json key it
came from (`approach3.ci95.alpha`), so the page can carry both and a test can check every shown
number against fit.json. A table the fit could not fill has no rows and says why in its notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .fmt import finite, interval, num
from .inputs import Study
from .registry import TABLES


@dataclass
class Cell:
    text: str
    source: str = ""  # the fit.json path this number comes from, e.g. "approach3.ci95.alpha"
    value: object = None  # the exact value behind the text
    css: str = ""


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # sentences shown under the table


def new_table(name: str, columns: list[str]) -> Table:
    return Table(name, TABLES[name].title, columns)


def build_tables(s: Study) -> dict[str, Table]:
    """Every registered table, in registry order."""
    return {name: spec.function()(s) for name, spec in TABLES.items()}


def fit_cell(value, source: str, show=num) -> Cell:
    """A number from fit.json, shown rounded, keeping its exact value and where it came from."""
    if isinstance(value, (list, tuple)):
        return Cell(interval(value, show), source, list(value))
    return Cell(show(value) if finite(value) else "–", source, value)


def blank_repeats(table: Table, column: int = 0) -> Table:
    """Show a group's label (e.g. the fit's name) on its first row only."""
    previous = None
    for row in table.rows:
        text = row[column].text
        if text == previous:
            row[column] = Cell("")
        previous = text
    return table
