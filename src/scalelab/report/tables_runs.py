"""The table of the runs: every run of the grid with its status and metrics, and notes on the
study's wall time and on runs scored on fewer test tokens than asked for."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .fmt import STATUSES, counted_statuses, human, num
from .inputs import Study
from .tables import Cell, Table, new_table


GRID_OPTIONAL = (
    ("test_loss", "test loss"),
    ("test_bpb", "test bits/byte"),
    ("bleu", "BLEU"),
    ("rougeL", "ROUGE-L"),
    ("flops_spent", "FLOPs spent"),
    ("wall_s", "wall time (s)"),
    ("trunk_wall_s", "trunk share (s)"),
)
GRID_HEADINGS_WSD = {"flops_spent": "FLOPs spent (own + trunk share)", "wall_s": "own wall time (s)"}


def _finite_sum(frame, column: str) -> float:
    return float(np.nansum(pd.to_numeric(frame[column], errors="coerce"))) if column in frame.columns else 0.0


def _wall_time_note(frame) -> str:
    """The study's training wall time: every run's own job plus, under WSD, every trunk segment
    (each charged to the run that branches at its end, so none is counted twice or left out)."""
    own, trunk = _finite_sum(frame, "wall_s"), _finite_sum(frame, "trunk_wall_s")
    if not own and not trunk:
        return ""
    if "trunk_wall_s" not in frame.columns:
        return f"Training wall time, every run's job: {own:,.0f} s."
    return (
        f"Training wall time, every training job: {own + trunk:,.0f} s ({own:,.0f} s in the runs' own "
        f"cooldown jobs + {trunk:,.0f} s in the WSD trunk segments, each charged to the run that branches "
        "at its end, as flops_spent is)."
    )


def _test_tokens_note(frame) -> str:
    """When a run's test numbers stand for fewer tokens than eval.test_tokens asked for."""
    if "test_tokens" not in frame.columns or "test_tokens_requested" not in frame.columns:
        return ""
    used = pd.to_numeric(frame["test_tokens"], errors="coerce")
    asked = pd.to_numeric(frame["test_tokens_requested"], errors="coerce")
    short = used < asked
    if not short.any():
        return ""
    counts = sorted({int(v) for v in used[short]})
    return (
        f"Note: the test split is smaller than eval.test_tokens ({int(asked[short].max()):,} tokens): "
        f"{int(short.sum())} run(s) were scored on {', '.join(f'{c:,}' for c in counts)} test tokens, so their "
        "test loss, bits per byte, BLEU and ROUGE stand for that many."
    )


def table_grid(s: Study) -> Table:
    frame = s.metrics
    wsd = "trunk_wall_s" in frame.columns
    optional = [(c, GRID_HEADINGS_WSD.get(c, h) if wsd else h) for c, h in GRID_OPTIONAL if c in frame.columns]
    swept = "best_in_sweep" in frame.columns  # a study with sweeps: which run of each the fits use
    table = new_table(
        "grid",
        ["run", "model", "N (params)", "D (tokens)", "C (FLOPs)", "status", "steps", s.target]
        + [heading for _, heading in optional]
        + (["best in its sweep"] if swept else []),
    )
    for _, row in frame.iterrows():
        status = row["status"]
        cells = [
            Cell(row["run"]),
            Cell(str(row.get("model", "–"))),
            Cell(human(row[s.n_col])),
            Cell(human(row[s.d_col])),
            Cell(num(row[s.c_col], 3)),
            Cell(status, css=f"status-{status}" if status in STATUSES else "status-other"),
            Cell(num(row.get("steps"))),
            Cell(num(row[s.target])),
        ]
        best = (
            [Cell("yes" if str(row["best_in_sweep"]).strip().lower() in ("true", "1", "1.0") else "")] if swept else []
        )
        table.rows.append(
            cells + [Cell(num(row[c], 3) if c == "flops_spent" else num(row[c])) for c, _ in optional] + best
        )
    counts = frame["status"].value_counts()
    table.notes.append(
        ", ".join(f"{counts.get(st, 0)} {st}" for st in counted_statuses(counts)) + f" of {len(frame)} runs."
    )
    if counts.get("predicted", 0):
        table.notes.append(
            f"predicted: not trained (grid.trained_cooldowns); {s.target} is the curve law's prediction, fitted with "
            f"its 95 % interval (results/curves/endpoints.csv)."
        )
    table.notes += [note for note in (_wall_time_note(frame), _test_tokens_note(frame)) if note]
    return table
