"""The `aggregate` stage: every run's metrics.json and eval.json as one row of results/metrics.csv.

A run keeps its row whatever happened to it: `ok` and `diverged` runs carry their metrics;
a run whose folder has no metrics.json is `missing`; one whose metrics.json or eval.json is
unreadable or names another run is `failed`, with a `message` (never a silent `ok`).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .errors import ScalelabError
from .files import atomic_path

EVAL_COLUMNS = ["test_loss", "test_ppl", "test_bpb", "bleu", "rouge1", "rouge2", "rougeL"]
FIRST_COLUMNS = ["run", "status", "model", "params", "params_total", "tokens", "flops", "flops_total", "seed",
                 "train_loss", "val_loss", *EVAL_COLUMNS]


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
        return {"run": run_dir.name, "status": "failed",
                "message": f"{metrics_path}: holds run {metrics.get('run')!r}, not {run_dir.name!r}"}
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


def aggregate(run_dirs: list[Path]) -> pd.DataFrame:
    rows = [run_row(d) for d in run_dirs]
    table = pd.DataFrame(rows)
    for column in FIRST_COLUMNS:
        if column not in table:
            table[column] = None
    return table[FIRST_COLUMNS + [c for c in table.columns if c not in FIRST_COLUMNS]]


def add_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (or their metrics.json files)")
    parser.add_argument("--out", required=True, type=Path, help="the CSV to write (results/metrics.csv)")


def run(args) -> None:
    run_dirs = [p.parent if p.name == "metrics.json" else p for p in args.runs]
    if not run_dirs:
        raise ScalelabError("no runs given")
    table = aggregate(run_dirs)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    counts = table["status"].value_counts().to_dict()
    print(f"{args.out}: {len(table)} runs ({', '.join(f'{n} {s}' for s, n in counts.items())})")
