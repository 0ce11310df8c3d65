"""Curves as data on a finished WSD study: fit the curve laws per size on the runs at two token counts
(and the trunk), predict the other cooldowns' final val_loss; optionally train held-out schedules
(cosine, another cooldown fraction) and predict them from the WSD curves of their size.

    python bench/curves.py STUDY_DIR [--fit-on 290K 1.6M] [--schedules xs s] [--train-rows]

STUDY_DIR holds config/config.yaml and a finished results/ (the default study's). Held-out runs are
trained with `scalelab train` into STUDY_DIR/bench-curves/. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from scalelab.config.counts import parse_count, run_id
from scalelab.curves.command import fit_study
from scalelab.curves.inputs import study_config, study_specs
from scalelab.curves.model import Curves
from scalelab.files import read_json


def final_target(folder: Path, target: str) -> float | None:
    path = folder / "metrics.json"
    if not path.exists():
        return None
    metrics = read_json(path)
    return metrics.get(target) if metrics.get("status") == "ok" else None


def score(curves: Curves, cases: list[tuple[dict, float]]) -> dict:
    """Per law: mean and max |relative error| and the share inside the 95 % intervals."""
    out = {}
    for law in curves.data["laws"]:
        rows = []
        for spec, observed in cases:
            p = curves.predict(spec, law)
            rows.append(
                {
                    "run": spec["run"],
                    "observed": observed,
                    "predicted": p["loss"],
                    "low": p["low"],
                    "high": p["high"],
                    "rel_error": p["loss"] / observed - 1,
                    "inside": bool(p["low"] <= observed <= p["high"]),
                }
            )
        rel = np.abs([r["rel_error"] for r in rows])
        width = [(r["high"] - r["low"]) / 2 / r["predicted"] for r in rows]
        out[law] = {
            "n": len(rows),
            "mean_abs_rel_error": float(rel.mean()) if len(rows) else None,
            "mean_interval_half_width": float(np.mean(width)) if rows else None,
            "max_abs_rel_error": float(rel.max()) if len(rows) else None,
            "coverage": float(np.mean([r["inside"] for r in rows])) if rows else None,
            "rows": rows,
        }
    return out


def heldout_schedule_specs(specs: dict, models: list[str], tokens: str) -> list[dict]:
    """A cosine run and a WSD run with a 40 % linear cooldown of each model at `tokens`."""
    out = []
    for model in models:
        base = specs[[i for i, s in specs.items() if s["model"] == model and i.startswith(f"{model}-{tokens}-")][0]]
        cosine = {k: v for k, v in base.items() if k not in ("cooldown", "cooldown_shape")}
        cosine.update(schedule="cosine", warmup_tokens=base["warmup_tokens"], run=base["run"] + "-cosine")
        out.append(cosine)
        out.append({**base, "cooldown": 0.4, "cooldown_shape": "linear", "run": base["run"] + "-wsd40lin"})
    return out


def train(spec: dict, study: Path, folder: Path) -> float:
    started = time.time()
    cmd = [
        "nice",
        "-n",
        "10",
        "scalelab",
        "train",
        "--spec",
        json.dumps(spec),
        "--data",
        str(study / "results" / "data"),
        "--out",
        str(folder),
        "--threads",
        "1",
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "SCALELAB_WARM": "0"})
    return time.time() - started


def reduced_grid(study: Path, curves: Curves, specs: dict, use: list[str], work: Path) -> dict:
    """Item 4 measured offline: the study as if only the cooldowns in `use` were trained (the trunks in
    full), the others' final target the chosen curve law's prediction; `scalelab fit` on that CSV
    against the study's own fit: what is saved (FLOPs, train-job seconds) and what the law pays."""
    import pandas as pd

    from scalelab import load_fit

    results = study / "results"
    full = pd.read_csv(results / "metrics.csv")
    reduced = full.copy()
    target = curves.target
    skipped = ~reduced["run"].isin(use)
    for i in reduced.index[skipped]:
        reduced.loc[i, target] = curves.predict(specs[reduced.loc[i, "run"]])["loss"]
    cooldown = (full["tokens"] - full["branch_from_tokens"].fillna(0)) / full["tokens"]
    saved_flops = float((full["flops"] * cooldown)[skipped].sum())
    work.mkdir(parents=True, exist_ok=True)
    reduced.to_csv(work / "metrics.csv", index=False)
    settings = read_json(results / "fit" / "fit.json")["settings"]
    spec = {k: settings[k] for k in ("target", "params", "bootstrap", "seed", "holdout")}
    subprocess.run(
        [
            "nice",
            "-n",
            "10",
            "scalelab",
            "fit",
            str(work / "metrics.csv"),
            "--out",
            str(work / "fit"),
            "--spec",
            json.dumps(spec),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    laws = {"full": load_fit(results / "fit"), "reduced": load_fit(work / "fit")}
    ok = full[full["status"] == "ok"]
    out = {
        "runs_trained": int((~skipped).sum()),
        "runs_predicted": int(skipped.sum()),
        "flops_spent_full": float(full["flops_spent"].sum()),
        "flops_saved": saved_flops,
        "train_job_s_full": float(full["wall_s"].sum()),
        "train_job_s_saved": float(full["wall_s"][skipped].sum()),
    }
    for name, law in laws.items():
        pred = law.predict(ok["params"].to_numpy(), ok["tokens"].to_numpy())
        rel = pred["mean"].to_numpy() / ok[target].to_numpy() - 1
        a3 = read_json((results / "fit" if name == "full" else work / "fit") / "fit.json")
        out[name] = {
            "form": a3.get("chosen_form"),
            "approach3": {k: a3["approach3"][k] for k in ("E", "A", "B", "alpha", "beta")},
            "mean_abs_rel_error_vs_measured": float(np.mean(np.abs(rel))),
            "max_abs_rel_error_vs_measured": float(np.max(np.abs(rel))),
            # the study's own held-out check runs at the largest FLOPs: here against the measured loss
            "largest_run_rel_error_vs_measured": float(rel[int(np.argmax(ok["flops"].to_numpy()))]),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--fit-on", nargs="+", default=["290K", "1.6M"], help="token counts whose cooldowns are fitted")
    parser.add_argument("--schedules", nargs="*", default=[], help="models to train held-out schedules for")
    parser.add_argument("--schedule-tokens", default="1.6M")
    parser.add_argument("--train-rows", action="store_true")
    parser.add_argument(
        "--reduced",
        action="store_true",
        help="also fit L(N, D) with the curve law's predicted endpoints for the other Ds",
    )
    args = parser.parse_args()
    config_specs = study_specs(study_config(args.study))
    fit_on = [parse_count(t, "--fit-on") for t in args.fit_on]
    use = [i for i, s in config_specs.items() if any(i == run_id(s["model"], c, s["seed"]) for c in fit_on)]
    started = time.time()
    data, specs = fit_study(args.study, use, train_rows=args.train_rows)
    fit_s = time.time() - started
    curves = Curves(data)
    target = data["target"]
    cases = [
        (spec, obs)
        for i, spec in specs.items()
        if i not in use
        and spec["model"] in data["sizes"]
        and (obs := final_target(args.study / "results" / "runs" / i, target)) is not None
    ]
    result = {
        "study": str(args.study),
        "fit_on": args.fit_on,
        "train_rows": args.train_rows,
        "chosen": data["chosen"],
        "why": data["why"],
        "fit_s": round(fit_s, 1),
        "other_D": score(curves, cases),
    }
    if args.schedules:
        trained, wall = [], 0.0
        for spec in heldout_schedule_specs(specs, args.schedules, args.schedule_tokens):
            folder = args.study / "bench-curves" / spec["run"]
            if final_target(folder, target) is None:
                wall += train(spec, args.study, folder)
            trained.append((spec, final_target(folder, target)))
        result["schedules"] = score(curves, trained)
        result["schedules_train_s"] = round(wall, 1)
    if args.reduced:
        result["reduced"] = reduced_grid(args.study, curves, specs, use, args.study / "bench-curves" / "reduced")
    for name, part in (("other D", result["other_D"]), ("schedules", result.get("schedules", {}))):
        for law, s in part.items():
            print(
                f"{name:9s} {law:12s} n={s['n']} mean |rel err| {s['mean_abs_rel_error']:.4f} "
                f"max {s['max_abs_rel_error']:.4f} coverage {s['coverage']:.2f} "
                f"interval +-{s['mean_interval_half_width']:.4f}",
                file=sys.stderr,
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
