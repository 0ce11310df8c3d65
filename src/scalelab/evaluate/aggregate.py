"""The `aggregate` stage: every run's metrics.json and eval.json as one row of results/metrics.csv.

A run keeps its row whatever happened to it: `ok` and `diverged` runs carry their metrics;
a run whose folder has no metrics.json is `missing`; one whose metrics.json or eval.json is
unreadable or names another run is `failed`, with a `message` (never a silent `ok`).

With swept keys (`--sweep`, the workflow's grid.sweep keys) the table also has `sweep_group`
(the grid point: model, requested tokens, seed, written as the run id without its sweep suffix),
`best_in_sweep` (true for the lowest val_loss of its group among usable runs: status ok and a
finite val_loss, ties to the run name that sorts first; a diverged run is never the best) and a
column per swept key. A study without sweeps gets none of them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..config.counts import run_id
from ..errors import ScalelabError
from ..files import atomic_path, loads_json

EVAL_COLUMNS = ["test_loss", "test_ppl", "test_bpb", "bleu", "rouge1", "rouge2", "rougeL"]
FIRST_COLUMNS = [
    "run",
    "status",
    "model",
    "params",
    "params_total",
    "tokens",
    "flops",
    "flops_total",
    "seed",
    "train_loss",
    "val_loss",
    *EVAL_COLUMNS,
]


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def run_row(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        return {"run": run_dir.name, "status": "missing"}
    metrics = _read(metrics_path)
    if metrics is None:
        return {"run": run_dir.name, "status": "failed", "message": f"{metrics_path}: unreadable"}
    if metrics.get("run", run_dir.name) != run_dir.name:
        return {
            "run": run_dir.name,
            "status": "failed",
            "message": f"{metrics_path}: holds run {metrics.get('run')!r}, not {run_dir.name!r}",
        }
    row = dict(metrics)
    eval_path = run_dir / "eval.json"
    evaluation = _read(eval_path) if eval_path.exists() else {}
    if evaluation is None or evaluation.get("run", run_dir.name) != run_dir.name:
        row["status"], row["message"] = "failed", f"{eval_path}: unreadable or of another run"
        evaluation = {}
    for column in EVAL_COLUMNS:
        row[column] = evaluation.get(column)
    if evaluation.get("bleu_signature"):
        row["bleu_signature"] = evaluation["bleu_signature"]
    if evaluation.get("status") not in (None, "ok") and row.get("status") == "ok":
        row["status"] = evaluation["status"]  # e.g. a run whose weights turned out corrupt
    return row


def _group(row: dict) -> str | None:
    """The grid point of a run: model, requested tokens and seed, as the run id without its suffix."""
    try:
        tokens = row.get("tokens_requested", row.get("tokens"))
        return run_id(str(row["model"]), int(tokens), int(row["seed"]))
    except (KeyError, TypeError, ValueError):
        return None  # no metrics.json: a missing or failed run has no known grid point


def _usable_loss(row: dict) -> float | None:
    loss = row.get("val_loss")
    if row.get("status") != "ok" or isinstance(loss, bool) or not isinstance(loss, (int, float)):
        return None
    return float(loss) if math.isfinite(loss) else None


def mark_sweeps(rows: list[dict], sweep_keys) -> None:
    """Add sweep_group, best_in_sweep and every swept key to each row, in place."""
    best: dict[str, tuple[float, str]] = {}
    for row in rows:
        row["sweep_group"] = _group(row)
        loss = _usable_loss(row)
        if row["sweep_group"] is not None and loss is not None:
            candidate = (loss, str(row["run"]))
            best[row["sweep_group"]] = min(best.get(row["sweep_group"], candidate), candidate)
    for row in rows:
        group = row["sweep_group"]
        row["best_in_sweep"] = group is not None and best.get(group, (None, None))[1] == str(row["run"])
        for key in sweep_keys:
            row.setdefault(key, None)


def aggregate(run_dirs: list[Path], sweep_keys=()) -> pd.DataFrame:
    rows = [run_row(d) for d in run_dirs]
    first = list(FIRST_COLUMNS)
    if sweep_keys:
        mark_sweeps(rows, sweep_keys)
        first += ["sweep_group", "best_in_sweep", *[k for k in sweep_keys if k not in FIRST_COLUMNS]]
    table = pd.DataFrame(rows)
    for column in first:
        if column not in table:
            table[column] = None
    return table[first + [c for c in table.columns if c not in first]]


def add_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (or their metrics.json files)")
    parser.add_argument("--out", required=True, type=Path, help="the CSV to write (results/metrics.csv)")
    parser.add_argument(
        "--sweep",
        default="[]",
        help='the swept train keys as a JSON list (e.g. ["lr"]): adds sweep_group, best_in_sweep',
    )


def _sweep_keys(text: str) -> list[str]:
    keys = loads_json(text, "--sweep")
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise ScalelabError(f"--sweep: expected a JSON list of train keys, got {text[:200]!r}")
    return keys


def run(args) -> None:
    run_dirs = [p.parent if p.name == "metrics.json" else p for p in args.runs]
    if not run_dirs:
        raise ScalelabError("no runs given")
    table = aggregate(run_dirs, _sweep_keys(args.sweep))
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    counts = table["status"].value_counts().to_dict()
    print(f"{args.out}: {len(table)} runs ({', '.join(f'{n} {s}' for s, n in counts.items())})")
