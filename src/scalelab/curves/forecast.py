"""What the report draws from a curves fit: the chosen law's predicted final target of every run of
the study's grid (trained or not) beside the measured one, and the law's curve along each schedule."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ScalelabError
from ..files import read_json
from .model import Curves

CURVE_POINTS = 60


def measured(results: Path, run_id: str, target: str) -> float | None:
    path = results / "runs" / run_id / "metrics.json"
    if not path.exists():
        return None
    try:
        metrics = read_json(path, "metrics")
    except ScalelabError:
        return None
    value = metrics.get(target) if metrics.get("status") == "ok" else None
    return float(value) if isinstance(value, (int, float)) else None


def grid_forecast(curves: Curves, specs: dict, results: Path, used: list[str]) -> list[dict]:
    """One record per grid run of a fitted size: tokens, the prediction with its interval, whether its
    curve was fitted (`used`) and its measured final target (None: not trained)."""
    records = []
    for run_id, spec in specs.items():
        if spec["model"] not in curves.data["sizes"]:
            continue
        p = curves.predict(spec)
        records.append(
            {
                **p,
                "model": spec["model"],
                "tokens": spec["tokens"],
                "used": run_id in used,
                "observed": measured(results, run_id, curves.target),
            }
        )
    return sorted(records, key=lambda r: (r["model"], r["tokens"]))


def law_curves(curves: Curves, specs: dict) -> dict[str, dict]:
    """run -> {tokens, loss}: the chosen law along the run's schedule, at log-spaced steps."""
    out = {}
    for run_id, spec in specs.items():
        if spec["model"] not in curves.data["sizes"]:
            continue
        steps, loss = curves.predict_curve(spec)
        first = curves.data["sizes"][spec["model"]]["first_step"]
        keep = np.unique(np.geomspace(first, len(steps), CURVE_POINTS).astype(int)) - 1
        tokens_per_step = spec["batch_size"] * spec["context"]
        out[run_id] = {"tokens": (steps[keep] * tokens_per_step).tolist(), "loss": loss[keep].tolist()}
    return out
