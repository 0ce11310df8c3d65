"""A study's own evaluation scores: the config's `eval.extra`, a CSV keyed by `run` (for example
lm-evaluation-harness run on each results/runs/<run>/model.pt) whose numeric columns join
results/metrics.csv (scalelab aggregate --extra) and get a law each in the fit, like the built-in
metrics. Checked when the workflow builds its DAG (standard library only: the Snakefile imports
this on every dry run), so a missing file, a missing `run` column or a column that is not numeric
costs one line, not a failed job.

The aggregate rule joins the scores after `scalelab aggregate` (which stays as it is, so that a
study without `eval.extra` keeps its aggregate fingerprint):
`python -m scalelab.config.extra_metrics SCORES_CSV results/metrics.csv` rewrites metrics.csv atomically.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ..errors import ScalelabError
from ..files import atomic_path

KEY = "run"


def extra_columns(path: str | Path | None, reserved=(), what: str = "config: eval.extra") -> list[str]:
    """The numeric columns of the `eval.extra` CSV at `path` ([] when None), checked: the file
    exists and has a `run` column of unique values, every other column is numeric (empty cells
    allowed) and none repeats a column of metrics.csv (`reserved`)."""
    if path is None:
        return []
    where = f"{what}: {path}"
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise ScalelabError(f"{where}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ScalelabError(f"{where}: not a UTF-8 text CSV") from None
    if not rows or KEY not in rows[0]:
        raise ScalelabError(f"{where}: no '{KEY}' column (the run ids of results/runs/<run>)")
    header, body = rows[0], rows[1:]
    key = header.index(KEY)
    runs = [row[key] for row in body if len(row) > key]
    if len(set(runs)) != len(runs):
        raise ScalelabError(f"{where}: a run appears twice in the '{KEY}' column")
    columns = []
    for i, name in enumerate(header):
        if i == key:
            continue
        if not name:
            raise ScalelabError(f"{where}: column {i + 1} has no name")
        if name in reserved:
            raise ScalelabError(f"{where}: column {name!r} repeats a metrics.csv column")
        for line, row in enumerate(body, start=2):
            cell = row[i].strip() if i < len(row) else ""
            if cell and not _is_number(cell):
                raise ScalelabError(f"{where}: column {name!r} is not numeric ({cell!r} in line {line})")
        columns.append(name)
    if not columns:
        raise ScalelabError(f"{where}: no score column besides '{KEY}'")
    return columns


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def join_extra(table, path: str | Path, what: str = "config: eval.extra"):
    """metrics.csv's table with the numeric columns of the scores CSV joined by run (empty where a
    run has no score)."""
    import pandas as pd

    columns = extra_columns(path, reserved=set(table.columns) - {KEY}, what=what)
    extra = pd.read_csv(path, dtype={KEY: str})[[KEY, *columns]]
    return table.assign(run=table[KEY].astype(str)).merge(extra, on=KEY, how="left")


def main(argv=None) -> int:
    import sys

    import pandas as pd

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m scalelab.config.extra_metrics SCORES_CSV METRICS_CSV", file=sys.stderr)
        return 2
    scores, metrics = args
    try:
        table = join_extra(pd.read_csv(metrics, dtype={KEY: str}), scores)
        with atomic_path(metrics) as tmp:
            table.to_csv(tmp, index=False)
    except ScalelabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{metrics}: joined {len(table.columns)} columns with {scores}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
