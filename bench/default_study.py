"""The default study's figures (issue 10's targets), read from a finished study's files.

    make run && python bench/default_study.py                 # the default study in results/
    python bench/default_study.py --study studies/candidate   # any finished study folder

Nothing is refitted: the law, its intervals and the held-out check are fit.json's; the losses,
FLOPs and times are metrics.csv's, the runs' eval.json and the trunks' segment records. The
last line printed is a JSON object.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


# The fit works in log E, so an E that wants to be 0 slides towards exp(-inf) and stops wherever
# L-BFGS-B does (1e-10, 1e-12, ...). An interval whose lower end is below a thousandth of a nat
# has not excluded 0.
E_AT_ZERO = 1e-3


def strictly_falling(table: pd.DataFrame, axis: int) -> bool:
    """Every row (axis=1: along D) or every column (axis=0: along N) strictly decreasing."""
    return bool((np.diff(table.to_numpy(), axis=axis) < 0).all())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=Path("."), help="study folder (holds results/)")
    args = parser.parse_args()
    results = args.study / "results"
    fit = json.loads((results / "fit/fit.json").read_text())
    runs = pd.read_csv(results / "metrics.csv")
    runs = runs[runs["status"] == "ok"]
    target = fit["target"]

    law, ci = fit["approach3"], fit["approach3"]["ci95"]
    width = {k: ci[k][1] - ci[k][0] for k in ("alpha", "beta")}
    losses = runs.pivot_table(index="params", columns="tokens", values=target).sort_index().sort_index(axis=1)
    monotone_in_n = strictly_falling(losses.iloc[:, 1:], axis=0)  # from the second-smallest D up
    monotone_in_d = strictly_falling(losses, axis=1)

    evals = [json.loads(p.read_text()) for p in sorted(results.glob("runs/*/eval.json"))]
    trunks = [json.loads(p.read_text()) for p in sorted(results.glob("trunks/*/step*.json"))]
    train_s = float(runs["wall_s"].sum()) + sum(t["wall_s"] for t in trunks)
    eval_s = sum(e["eval_s"] for e in evals)
    spent = runs["flops_spent"] if "flops_spent" in runs else runs["flops"]

    figures = {
        "target": target,
        "alpha": law["alpha"], "alpha_ci": ci["alpha"], "alpha_ci_width": width["alpha"],
        "beta": law["beta"], "beta_ci": ci["beta"], "beta_ci_width": width["beta"],
        "E": law["E"], "E_ci": ci["E"], "E_ci_excludes_0": bool(ci["E"][0] > E_AT_ZERO),
        "heldout_max_abs_rel_error": (fit.get("holdout") or {}).get("max_abs_rel_error"),
        "monotone_in_N_from_2nd_D": monotone_in_n, "monotone_in_D": monotone_in_d,
        "sizes": int(losses.shape[0]), "N_span": float(losses.index.max() / losses.index.min()),
        "token_counts": int(losses.shape[1]), "D_span": float(losses.columns.max() / losses.columns.min()),
        "flops_spent": float(spent.sum()), "flops_independent": float(runs["flops"].sum()),
        "flops_ratio": float(spent.sum() / runs["flops"].sum()),
        "train_s": train_s, "eval_s": eval_s, "eval_share_of_train": eval_s / train_s,
    }
    print(f"{target} by N (rows) and D (columns):")
    print(losses.round(3).to_string())
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
