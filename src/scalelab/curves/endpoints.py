"""Predicted endpoints (config grid.trained_cooldowns): metrics.csv with one more row per run that was
not trained, its final target the chosen curve law's prediction, marked `status: predicted`.

Each predicted row carries the law's 95 % interval (`<target>_low`, `<target>_high`) and the sd of
the log of the prediction (`predicted_log_sd`, the interval is exp(log loss +- 1.96 sd)): `scalelab
fit` fits the row at its prediction and, in every bootstrap resample, draws it from that log-normal
predictive distribution (scalelab.fit.forms.bootstrap_form), so the L(N, D) intervals carry it.
Draws, not weights: every interval of the fit comes from its bootstrap, which weights would not widen;
and the fit's objective (summed Huber losses, nearly absolute errors at these residuals) has no
likelihood a 1/sd^2 weight would be right for, while the draws leave the point fit as it is.

The row's size columns (params, shapes) come from a trained run of the same model; its tokens are
the run's whole steps, its `flops` what it would have cost trained (the fit's compute axis), and its
`flops_spent` only the trunk segment charged to it (trained all the same; the cooldown was not).

    python -m scalelab.curves.endpoints METRICS_CSV --curves CURVES_JSON --specs JSON --predicted RUN ... --out CSV
"""

from __future__ import annotations

import argparse
import math
import sys

import pandas as pd

from ..errors import ScalelabError
from ..files import atomic_path, loads_json
from ..plan import wsd
from .fitting import Z95
from .model import Curves, load_curves
from .schedules import run_steps

STATUS = "predicted"
LOG_SD = "predicted_log_sd"
SIZE_COLUMNS = ("model", "params", "params_total", "n_layer", "d_model", "n_head", "vocab_size", "context")
SPEC_COLUMNS = ("seed", "batch_size", "lr", "schedule", "warmup_tokens", "min_lr_ratio", "weight_decay")


def _size_row(metrics: pd.DataFrame, model: str, source: str) -> pd.Series:
    trained = metrics[(metrics["model"].astype(str) == model) & (metrics["status"].astype(str) == "ok")]
    if trained.empty:
        raise ScalelabError(f"{source}: no trained run of model {model} to take its size from")
    return trained.iloc[0]


def _flops_spent(spec: dict, specs: dict, flops_per_token: float) -> float:
    """The trunk segment charged to this run (trained whatever is predicted): from the previous branch point."""
    family = wsd.plan_families([s for s in specs.values() if wsd.family_id(s) == wsd.family_id(spec)])
    branch = wsd.branch_step(spec)
    previous = family[wsd.family_id(spec)].previous(branch)
    return float((branch - previous) * spec["batch_size"] * spec["context"] * flops_per_token)


def predicted_row(curves: Curves, spec: dict, specs: dict, size: pd.Series) -> dict:
    """One metrics row for the untrained run `spec`: its final target as the curve law predicts it."""
    target = curves.target
    forecast = curves.predict(spec)
    tokens = run_steps(spec) * spec["batch_size"] * spec["context"]
    per_token = float(size["flops"]) / float(size["tokens"])
    row = {key: size[key] for key in SIZE_COLUMNS if key in size.index}
    row.update({key: spec[key] for key in SPEC_COLUMNS if key in spec})
    row.update(
        run=spec["run"],
        status=STATUS,
        tokens=tokens,
        tokens_requested=spec["tokens"],
        steps=run_steps(spec),
        flops=per_token * tokens,
        branch_from_tokens=wsd.branch_step(spec) * spec["batch_size"] * spec["context"],
        flops_spent=_flops_spent(spec, specs, per_token),
    )
    if "flops_total" in size.index and "tokens" in size.index:
        row["flops_total"] = float(size["flops_total"]) / float(size["tokens"]) * tokens
    row[target] = forecast["loss"]
    row[f"{target}_low"], row[f"{target}_high"] = forecast["low"], forecast["high"]
    row[LOG_SD] = (math.log(forecast["high"]) - math.log(forecast["low"])) / (2 * Z95)
    row["predicted_by"] = forecast["law"]
    row["predicted_note"] = forecast["note"]
    return row


def with_predicted(
    metrics: pd.DataFrame, curves: Curves, specs: dict, predicted: list[str], source: str = "metrics"
) -> pd.DataFrame:
    """metrics.csv's rows, then one `predicted` row per run of `predicted` (run id -> spec in `specs`).
    A predicted run that metrics.csv holds already (trained before the setting) is replaced."""
    unknown = [run for run in predicted if run not in specs]
    if unknown:
        raise ScalelabError(f"--predicted: {unknown[0]} is not a run of the given specs")
    for column in ("run", "status", "model", "flops", "tokens"):
        if column not in metrics.columns:
            raise ScalelabError(f"{source}: no column '{column}' (not a scalelab metrics.csv)")
    rows = [
        predicted_row(curves, specs[run], specs, _size_row(metrics, specs[run]["model"], source)) for run in predicted
    ]
    kept = metrics[~metrics["run"].astype(str).isin(predicted)]
    table = pd.concat([kept, pd.DataFrame(rows)], ignore_index=True) if rows else kept.copy()
    if rows:
        table[LOG_SD] = pd.to_numeric(table[LOG_SD], errors="coerce").astype(float)
    return table


def summary(table: pd.DataFrame, target: str) -> str:
    predicted = table[table["status"].astype(str) == STATUS]
    lines = [f"{len(table) - len(predicted)} trained row(s), {len(predicted)} predicted endpoint(s)"]
    for row in predicted.itertuples(index=False):
        low, high = getattr(row, f"{target}_low"), getattr(row, f"{target}_high")
        lines.append(f"  {row.run}: {target} {getattr(row, target):.4f} [{low:.4f}, {high:.4f}] ({row.predicted_by})")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scalelab.curves.endpoints", description=__doc__.splitlines()[0])
    parser.add_argument("metrics", help="the study's metrics.csv (the trained runs)")
    parser.add_argument("--curves", required=True, help="curves.json of `scalelab curves`")
    parser.add_argument("--specs", required=True, metavar="JSON", help="run id -> spec of every run of the grid")
    parser.add_argument("--predicted", nargs="+", required=True, metavar="RUN", help="the runs not trained")
    parser.add_argument("--out", required=True, help="the table with the predicted rows (CSV)")
    args = parser.parse_args(argv)
    try:
        specs = loads_json(args.specs, "--specs")
        if not isinstance(specs, dict) or not all(isinstance(v, dict) for v in specs.values()):
            raise ScalelabError("--specs: expected a JSON object, run id -> spec")
        from ..fit.inputs import read_metrics

        curves = load_curves(args.curves)
        table = with_predicted(read_metrics(args.metrics), curves, specs, args.predicted, args.metrics)
        with atomic_path(args.out) as tmp:
            table.to_csv(tmp, index=False)
        print(summary(table, curves.target))
    except ScalelabError as exc:
        print(f"scalelab: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
