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
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from scalelab.counts import run_id
from scalelab.curves.command import fit_study
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
            rows.append({"run": spec["run"], "observed": observed, "predicted": p["loss"], "low": p["low"],
                         "high": p["high"], "rel_error": p["loss"] / observed - 1,
                         "inside": bool(p["low"] <= observed <= p["high"])})
        rel = np.abs([r["rel_error"] for r in rows])
        out[law] = {"n": len(rows), "mean_abs_rel_error": float(rel.mean()) if len(rows) else None,
                    "max_abs_rel_error": float(rel.max()) if len(rows) else None,
                    "coverage": float(np.mean([r["inside"] for r in rows])) if rows else None, "rows": rows}
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
    cmd = ["nice", "-n", "10", "scalelab", "train", "--spec", json.dumps(spec), "--data", str(study / "results" / "data"),
           "--out", str(folder), "--threads", "1"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**__import__("os").environ, "SCALELAB_WARM": "0"})
    return time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--fit-on", nargs="+", default=["290K", "1.6M"], help="token counts whose cooldowns are fitted")
    parser.add_argument("--schedules", nargs="*", default=[], help="models to train held-out schedules for")
    parser.add_argument("--schedule-tokens", default="1.6M")
    parser.add_argument("--train-rows", action="store_true")
    args = parser.parse_args()
    config_specs = fit_study.__globals__["study_specs"](fit_study.__globals__["study_config"](args.study))
    models = sorted({s["model"] for s in config_specs.values()})
    use = [i for i, s in config_specs.items() if any(i == run_id(s["model"], c, s["seed"]) for c in
                                                      [__import__("scalelab.counts").counts.parse_count(t, "--fit-on") for t in args.fit_on])]
    started = time.time()
    data, specs = fit_study(args.study, use, train_rows=args.train_rows)
    fit_s = time.time() - started
    curves = Curves(data)
    target = data["target"]
    cases = [(spec, obs) for i, spec in specs.items() if i not in use and spec["model"] in data["sizes"]
             and (obs := final_target(args.study / "results" / "runs" / i, target)) is not None]
    result = {"study": str(args.study), "fit_on": args.fit_on, "train_rows": args.train_rows, "chosen": data["chosen"],
              "why": data["why"], "fit_s": round(fit_s, 1), "other_D": score(curves, cases)}
    if args.schedules:
        trained, wall = [], 0.0
        for spec in heldout_schedule_specs(specs, args.schedules, args.schedule_tokens):
            folder = args.study / "bench-curves" / spec["run"]
            if final_target(folder, target) is None:
                wall += train(spec, args.study, folder)
            trained.append((spec, final_target(folder, target)))
        result["schedules"] = score(curves, trained)
        result["schedules_train_s"] = round(wall, 1)
    for name, part in (("other D", result["other_D"]), ("schedules", result.get("schedules", {}))):
        for law, s in part.items():
            print(f"{name:9s} {law:12s} n={s['n']} mean |rel err| {s['mean_abs_rel_error']:.4f} "
                  f"max {s['max_abs_rel_error']:.4f} coverage {s['coverage']:.2f}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
