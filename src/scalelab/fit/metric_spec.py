"""What `scalelab fit --metrics COL ... [--metric-spec JSON]` knows about each metric.

A metric's facts (`MetricSpec`): its kind, which way is better, its floor (chance), a ceiling if
known, its scale (1 or 100) and `via`, a per-task loss column for the two-step method. The
`--metric-spec` JSON gives them, {"COL": {"higher_is_better": true, "chance": 0.25,
"ceiling": null, "via": "LOSS_COL"}}; what it leaves out is read from the column:

- a name with bpb, ppl, perplexity, loss, nll or xent is a loss (lower is better, a power law);
- bleu, rouge*, chrf, meteor: a bounded score, floor 0, on 0..100 when any value exceeds 1, else 0..1;
- any other column with every value in 0..1: an accuracy (floor `chance`, default 0), 0..100 a score;
- any other positive column: a loss;
- `via` defaults to the column `<COL>_loss` when the CSV has one (an accuracy's per-task loss).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ScalelabError

WORKFLOW_METRICS = ("test_bpb", "test_ppl", "bleu", "rouge1", "rouge2", "rougeL")
SPEC_KEYS = ("higher_is_better", "chance", "ceiling", "via", "kind")
KINDS = ("accuracy", "score", "loss")
LOSS_NAME = re.compile(r"bpb|ppl|perplexity|loss|nll|xent", re.IGNORECASE)
SCORE_NAME = re.compile(r"bleu|rouge|chrf|meteor", re.IGNORECASE)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # accuracy | score | loss
    higher_is_better: bool
    floor: float  # chance (bounded kinds); 0 for losses
    ceiling: float | None  # a known ceiling; None: fitted (at most `scale`)
    scale: float  # 1 or 100 for bounded kinds
    via: str | None  # a per-task loss column for the two-step method

    @property
    def link(self) -> str:
        return "loglinear" if self.kind == "loss" else "sigmoid"

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "higher_is_better": self.higher_is_better,
            "chance": self.floor,
            "ceiling": self.ceiling,
            "scale": self.scale,
            "via": self.via,
            "link": self.link,
        }


def _numeric(df: pd.DataFrame, column: str, where: str) -> np.ndarray:
    if column not in df.columns:
        raise ScalelabError(f"{where}: no column {column!r} in the metrics CSV")
    values = pd.to_numeric(df[column], errors="coerce")
    bad = df[column].notna() & values.isna()
    if bad.any():
        raise ScalelabError(f"{where}: column {column!r} is not numeric (e.g. {df[column][bad].iloc[0]!r})")
    finite = values.to_numpy(float)
    if not np.isfinite(finite).any():
        raise ScalelabError(f"{where}: column {column!r} has no numeric value")
    return finite[np.isfinite(finite)]


def _guess_kind(name: str, values: np.ndarray) -> str:
    if LOSS_NAME.search(name):
        return "loss"
    if SCORE_NAME.search(name):
        return "score"
    if values.min() >= 0 and values.max() <= 1:
        return "accuracy"
    if values.min() >= 0 and values.max() <= 100:
        return "score"
    if values.min() > 0:
        return "loss"
    raise ScalelabError(
        f"--metrics {name}: values from {values.min():g} to {values.max():g} are neither a bounded "
        "score nor a positive loss; say its kind in --metric-spec"
    )


def _number(facts: dict, key: str, where: str):
    value = facts.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScalelabError(f"{where}.{key}: should be a number or null, got {value!r}")
    return float(value)


def metric_spec(df: pd.DataFrame, name: str, facts: dict | None = None) -> MetricSpec:
    """The facts of metric `name`: those given (one --metric-spec entry), the rest from the column."""
    facts, where = facts or {}, f"--metric-spec {name}"
    unknown = sorted(set(facts) - set(SPEC_KEYS))
    if unknown:
        raise ScalelabError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(SPEC_KEYS)})")
    values = _numeric(df, name, f"--metrics {name}")
    kind = facts.get("kind") or _guess_kind(name, values)
    if kind not in KINDS:
        raise ScalelabError(f"{where}.kind: should be one of {', '.join(KINDS)}, got {kind!r}")
    higher = facts.get("higher_is_better", kind != "loss")
    if not isinstance(higher, bool):
        raise ScalelabError(f"{where}.higher_is_better: should be true or false, got {higher!r}")
    via = facts.get("via", f"{name}_loss" if f"{name}_loss" in df.columns and kind != "loss" else None)
    if via is not None:
        if not isinstance(via, str):
            raise ScalelabError(f"{where}.via: should be a column name, got {via!r}")
        _numeric(df, via, f"{where}.via")
    scale = 1.0 if kind == "accuracy" or (kind == "score" and values.max() <= 1) else 100.0
    chance = _number(facts, "chance", where) or 0.0
    ceiling = _number(facts, "ceiling", where)
    if kind == "loss":
        return MetricSpec(name, kind, higher, 0.0, None, 0.0, via)
    if not 0 <= chance < scale or (ceiling is not None and not chance < ceiling <= scale):
        raise ScalelabError(
            f"{where}: need 0 <= chance < ceiling <= {scale:g} (the column's scale), got chance "
            f"{chance:g}, ceiling {ceiling}"
        )
    return MetricSpec(name, kind, higher, chance, ceiling, scale, via)


def metric_specs(df: pd.DataFrame, names, spec_json: dict | None = None) -> list[MetricSpec]:
    """One MetricSpec per metric named (--metrics), plus any named only in --metric-spec."""
    spec_json = spec_json or {}
    if not isinstance(spec_json, dict) or any(not isinstance(v, dict) for v in spec_json.values()):
        raise ScalelabError('--metric-spec: should be a JSON object {"COL": {"higher_is_better": ..., ...}}')
    ordered = list(dict.fromkeys([*(names or []), *spec_json]))
    return [metric_spec(df, name, spec_json.get(name)) for name in ordered]
