"""Benchmark: forecasting a task's accuracy at 10x and 100x the largest run, per method.

    python bench/downstream.py [--ladders 40] [--bootstrap 100] [--seed 0]

Each ladder is 5 model sizes x 4 token counts (N 1e7..4e8, D 2e8..1e10) with a known two-step
truth: the loss is Chinchilla's law times 1 % log-normal noise; the task loss is offset + slope x
loss (0.5 % noise); the accuracy is chance + (ceiling - chance)·sigmoid(-k (task loss - midpoint)),
drawn as a binomial score on a finite number of items. Chance (0, 0.25 or 0.5), ceiling
(0.7..0.95), steepness k (4..12), items (500..2000) and the midpoint (so the largest run sits
between chance and well above it, small models at chance) vary by ladder. Half the ladders give
the two-step method the task loss (`via`), half make it go through the loss column.

For each method fitted (direct_nd and two_step; `direct`, the law in compute alone, is fitted
only to runs at one token-to-parameter ratio, and these grids span 2000x) and for the automatic
forecast (what `scalelab fit` reports: the equal-weight mean of the methods the rolling checks do
not clearly beat, scalelab.fit.metric_mix, with that mean's own interval), at the compute-optimal
N, D of 10x and 100x the largest run's compute:
mean absolute error in points against the true expected accuracy, and how often the 95 %
interval covers a fresh evaluation (a binomial draw at the truth), with its mean width. The
automatic choice is also scored on the ladders it calls predictable only, and the share it calls
NOT PREDICTABLE is reported. One line per ladder, then a table, then a JSON object last.
"""

from __future__ import annotations

import argparse
import json
import time

from scalelab import fit  # noqa: F401  (first: it pins OpenBLAS to one thread before numpy and scipy load)

import numpy as np
import pandas as pd

from scalelab.laws import synthetic
from scalelab.fit.metric_laws import fit_metric
from scalelab.fit.metric_spec import metric_specs
from scalelab.laws.fitted import log_distance
from scalelab.laws.fitted_metrics import METHODS, MetricLaw

FACTORS = (10, 100)


def draw_task(rng, top_loss) -> dict:
    """A task whose midpoint puts the largest run somewhere between chance and the middle."""
    task = {
        "chance": float(rng.choice([0.0, 0.25, 0.5])),
        "ceiling": float(rng.uniform(0.7, 0.95)),
        "k": float(rng.uniform(4, 12)),
        "offset": float(rng.uniform(0.0, 0.3)),
        "slope": float(rng.uniform(0.4, 0.8)),
        "items": int(rng.choice([500, 1000, 2000])),
        "loss_noise": 0.005,
    }
    top_task_loss = task["offset"] + task["slope"] * top_loss
    task["midpoint"] = top_task_loss - float(rng.uniform(-0.05, 0.25))  # sigmoid(-k (L - mid)) at the top run
    return task


def ladder(seed: int):
    rng = np.random.default_rng(seed)
    runs = synthetic.ladder(5, 4, noise=0.01, seed=seed, sizes=(1e7, 4e8), tokens=(2e8, 1e10))
    top = int(np.argmax(runs["flops"]))
    task = draw_task(rng, float(runs["loss"][top]))
    return pd.DataFrame(synthetic.with_task(runs, "task", task, seed=seed + 1)), task, rng


def targets(frame):
    c_max = frame["flops"].max()
    out = []
    for factor in FACTORS:
        n = synthetic.optimal_params(factor * c_max)
        out.append((factor * c_max, n, factor * c_max / (6 * n)))
    return out


def score_ladder(seed: int, bootstrap: int) -> list[dict]:
    frame, task, rng = ladder(seed)
    via = "task_loss" if seed % 2 == 0 else None
    spec = metric_specs(frame, ["task"], {"task": {"chance": task["chance"], "via": via}})[0]
    section, samples = fit_metric(frame, spec, [], bootstrap_n=bootstrap, seed=seed)
    rows = []
    for flops, n, d in targets(frame):
        truth = float(synthetic.task_accuracy(n, d, task))
        observed = rng.binomial(task["items"], truth) / task["items"]
        alone = {k: v for k, v in section.items() if k not in ("point", "combined")}
        laws = {
            m: {
                **alone,
                "chosen_method": m,
                "predictable": True,
                "methods": {m: {**section["methods"][m], "weight": 1.0}},
            }  # each method alone, unmixed
            for m in section["methods"]
        }
        laws["auto"] = {**section, "predictable": True}  # the forecast as fitted (the methods' weighted mean)
        for name, entry in laws.items():
            law = MetricLaw("task", entry, samples, section["range"])
            p = law.predict(np.array([n]), np.array([d]), log_distance(n, d, section["range"]), 0.95).iloc[0]
            method = entry["chosen_method"]
            rows.append(
                {
                    "ladder": seed,
                    "factor": round(flops / frame["flops"].max()),
                    "method": name,
                    "predictable": section["predictable"],
                    "via": via is not None,
                    "truth": truth,
                    "oos": section["methods"][method]["oos_error"],
                    "predicted": p["task"],
                    "error": 100 * abs(p["task"] - truth),
                    "covered": bool(p["low"] <= observed <= p["high"]),
                    "width": 100 * (p["high"] - p["low"]),
                }
            )
    return rows


def summarise(table: pd.DataFrame) -> dict:
    out = {}
    parts = [(m, table[table["method"] == m]) for m in (*METHODS, "auto")]
    parts.append(("auto_predictable", table[(table["method"] == "auto") & table["predictable"]]))
    for name, part in parts:
        for factor in FACTORS:
            rows = part[part["factor"] == factor]
            if not len(rows):  # a method not fitted to these ladders (direct: many tokens per parameter)
                continue
            out[f"{name}_{factor}x"] = {
                "mae_points": round(float(rows["error"].mean()), 2),
                "coverage": round(float(rows["covered"].mean()), 3),
                "width_points": round(float(rows["width"].mean()), 1),
                "n": int(len(rows)),
            }
    auto = table[table["method"] == "auto"]
    out["not_predictable_share"] = round(float(1 - auto.groupby("ladder")["predictable"].first().mean()), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ladders", type=int, default=40)
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", help="also write every prediction to this CSV")
    args = parser.parse_args()
    start, rows = time.perf_counter(), []
    for seed in range(args.seed, args.seed + args.ladders):
        got = score_ladder(seed, args.bootstrap)
        rows += got
        auto = [r for r in got if r["method"] == "auto"]
        print(
            f"ladder {seed}: "
            + "; ".join(
                f"{r['factor']}x truth {r['truth']:.3f} auto {r['predicted']:.3f} ({'in' if r['covered'] else 'OUT'})"
                for r in auto
            ),
            flush=True,
        )
    table = pd.DataFrame(rows)
    if args.table:
        table.to_csv(args.table, index=False)
    result = summarise(table)
    print("| method | at | MAE (points) | coverage of 95 % | mean width (points) | n |")
    print("|---|---|---|---|---|---|")
    for key, value in result.items():
        if isinstance(value, dict):
            name, factor = key.rsplit("_", 1)
            print(
                f"| {name} | {factor} | {value['mae_points']} | {value['coverage']:.1%} | {value['width_points']} "
                f"| {value['n']} |"
            )
    result.update({"ladders": args.ladders, "bootstrap": args.bootstrap, "seconds": round(time.perf_counter() - start)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
