"""The table of the evaluation metrics' laws (fit.json's `metrics`), the metrics' forecasts as
columns of the allocation table, and their lines in summary.txt."""

from __future__ import annotations

from ..laws.fitted_metrics import METHODS, forecast_methods
from .fmt import num
from .inputs import Study
from .tables import Cell, Table, fit_cell, new_table


def _forecast_cells(entry: dict, i: int, name: str) -> list[Cell]:
    """The forecast at budget i and its 95 % interval, each checked against fit.json."""
    if not entry.get("predictable"):
        return [Cell("not predictable"), Cell("")]
    forecasts = entry.get("forecasts") or []
    if i >= len(forecasts):
        return [Cell("–"), Cell("–")]
    where = f"metrics.{name}.forecasts.{i}"
    return [fit_cell(forecasts[i]["value"], f"{where}.value"), fit_cell(forecasts[i]["ci95"], f"{where}.ci95")]


def table_metric_laws(s: Study) -> Table:
    metrics = s.fit.get("metrics") or {}
    budgets = max((len(e.get("forecasts") or []) for e in metrics.values()), default=0)
    flops = next((e["forecasts"] for e in metrics.values() if len(e.get("forecasts") or []) == budgets), [])
    columns = ["metric", "kind", "forecast from", *(f"out-of-sample error: {m}" for m in METHODS), "verdict"]
    for f in flops:
        columns += [f"at C = {num(f['flops'])}", "95 %"]
    table = new_table("metric_laws", columns)
    if not metrics:
        table.notes.append(
            "No metric laws: fit with scalelab fit --metrics COL ... (the workflow passes the evaluation metrics)."
        )
        return table
    for name, entry in metrics.items():
        methods = entry.get("methods") or {}
        row = [Cell(name), Cell(entry["kind"]), Cell(forecast_methods(entry))]
        row += [
            fit_cell((methods.get(m) or {}).get("oos_error"), f"metrics.{name}.methods.{m}.oos_error") for m in METHODS
        ]
        row.append(Cell(entry["verdict"]))  # column 3 + len(METHODS)
        for i in range(budgets):
            row += _forecast_cells(entry, i, name)
        table.rows.append(row)
    table.notes.append(
        "Out-of-sample error: the mean absolute error of each method refitted without the largest "
        "model, the largest token count or the top compute group, in the metric's units (ln units "
        "for losses). The forecast is the mean of every method the checks do not clearly beat (by more than "
        "the spread of the per-check differences), with equal weights. NOT PREDICTABLE metrics get no forecast."
    )
    return table


def add_metric_columns(table: Table, s: Study) -> None:
    """The predictable metrics' forecasts as columns of the allocation table, one row per budget."""
    metrics = {n: e for n, e in (s.fit.get("metrics") or {}).items() if e.get("predictable") and e.get("forecasts")}
    if not table.rows:
        return
    for name, entry in metrics.items():
        if len(entry["forecasts"]) != len(table.rows):
            continue
        table.columns += [f"predicted {name}", f"{name} 95 %"]
        for i, row in enumerate(table.rows):
            row += _forecast_cells(entry, i, name)
    flagged = [n for n, e in (s.fit.get("metrics") or {}).items() if not e.get("predictable")]
    if flagged:
        table.notes.append(f"Not predictable at this scale, so not forecast: {', '.join(flagged)}.")


def metric_summary_lines(s: Study) -> list[str]:
    lines = []
    for name, entry in (s.fit.get("metrics") or {}).items():
        if not entry.get("predictable"):
            lines.append(f"  {'metric ' + name:<13} {entry['verdict']}")
            continue
        shown = "; ".join(
            f"{num(f['value'])} [{num(f['ci95'][0])}, {num(f['ci95'][1])}] at C = {num(f['flops'])}"
            for f in entry.get("forecasts") or []
        )
        lines.append(f"  {'metric ' + name:<13} {shown} ({forecast_methods(entry)})")
    return lines
