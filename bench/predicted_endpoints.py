"""Predicted endpoints on a finished WSD study: what training only some cooldowns per size saves, and
what it costs the L(N, D) law, measured without training anything.

    python bench/predicted_endpoints.py --study-dir DIR [--trained 290K 1.6M] [--bootstrap N] [--workers N]

DIR holds config/config.yaml and a finished results/ (runs/*/curve.csv, trunks/, metrics.csv; and
.snakemake/metadata for the jobs' times, if there). As the workflow does under
`grid.trained_cooldowns: [--trained]` (scalelab.plan.endpoints, rules/curves.smk): the curve laws are
fitted to the trained cooldowns and the trunks (`scalelab curves --use`), the other runs' final
target is the chosen law's prediction with its 95 % interval (scalelab.curves.endpoints), and
`scalelab fit` with the study's fit settings (StudyPlan.fit_spec, --data-meta) fits (a) the full
grid's metrics.csv and (b) the trained rows plus the predicted ones, whose interval each bootstrap
resample draws from. Written to DIR/bench-endpoints/. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.config.load import load as load_config
from scalelab.curves.command import fit_study
from scalelab.curves.endpoints import LOG_SD, with_predicted
from scalelab.curves.model import Curves
from scalelab.files import read_json
from scalelab.plan import endpoints, grid, wsd
from scalelab.plan.workflow import StudyPlan


def plan(study: Path, trained: list[str]) -> tuple[dict, dict, list[str], list[str], str]:
    """(config, specs, trained ids, predicted ids, the fit spec) as the workflow plans them."""
    config = load_config(study / "config" / "config.yaml")
    config["grid"]["trained_cooldowns"] = trained
    runs = grid.expand_grid(config)
    trained_ids, predicted_ids = endpoints.split_runs(config, runs)
    stub = StudyPlan(config, {r.id: r for r in runs}, [], 0, "", "", "", {}, [], {}, predicted_ids)
    return config, {r.id: r.spec for r in runs}, trained_ids, predicted_ids, stub.fit_spec()


def job_seconds(study: Path) -> dict[str, float]:
    """output path -> its job's seconds (end - start) from Snakemake's metadata, where it is kept."""
    folder = study / ".snakemake" / "metadata"
    out = {}
    for file in folder.glob("*") if folder.is_dir() else []:
        try:
            path = base64.b64decode(file.name.replace("@", "/")).decode()
            meta = json.loads(file.read_text())
            out[path] = float(meta["endtime"]) - float(meta["starttime"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            continue
    return out


def savings(study: Path, metrics: pd.DataFrame, specs: dict, predicted: list[str]) -> dict:
    """FLOPs (the plan's cooldown cost of each run not trained) and seconds saved, against the full grid."""
    rows = metrics.set_index("run")
    cooldown_flops = 0.0
    for run in predicted:
        spec = specs[run]
        per_token = float(rows.loc[run, "flops"]) / float(rows.loc[run, "tokens"])
        steps = wsd.total_steps(spec) - wsd.branch_step(spec)
        cooldown_flops += steps * spec["batch_size"] * spec["context"] * per_token
    spent = float(metrics["flops_spent"].sum())
    jobs = job_seconds(study)
    train_jobs = [jobs.get(f"results/runs/{run}/model.pt") for run in predicted]
    eval_jobs = [jobs.get(f"results/runs/{run}/eval.json") for run in predicted]
    trunk_s = sum(s for path, s in jobs.items() if path.startswith("results/trunks/") and path.endswith(".ckpt"))
    all_train = sum(s for path, s in jobs.items() if path.startswith("results/runs/") and path.endswith("model.pt"))
    all_eval = sum(s for path, s in jobs.items() if path.startswith("results/runs/") and path.endswith("eval.json"))
    known = lambda values: float(sum(values)) if values and all(v is not None for v in values) else None  # noqa: E731
    return {
        "flops_spent_full": spent,
        "flops_saved": cooldown_flops,
        "flops_saved_fraction": cooldown_flops / spent,
        "cooldown_wall_s_saved": float(rows.loc[predicted, "wall_s"].sum()),  # metrics.json's wall_s: the cooldown
        "cooldown_wall_s_full": float(rows["wall_s"].sum()),
        "train_job_s_saved": known(train_jobs),
        "evaluate_job_s_saved": known(eval_jobs),
        "train_eval_trunk_job_s_full": (all_train + all_eval + trunk_s) if jobs else None,
    }


def run_fit(table: Path, out: Path, spec: str, study: Path, workers: int, bootstrap: int | None) -> tuple[dict, float]:
    spec_dict = json.loads(spec)
    if bootstrap is not None:
        spec_dict["bootstrap"] = bootstrap
    cmd = ["scalelab", "fit", str(table), "--out", str(out), "--spec", json.dumps(spec_dict, sort_keys=True)]
    cmd += ["--data-meta", str(study / "results" / "data" / "meta.json"), "--workers", str(workers)]
    started = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return read_json(out / "fit.json"), time.time() - started


def law_summary(fit: dict) -> dict:
    """The chosen form's parameters with their 95 % intervals, Chinchilla's, the allocations and the held-out check."""
    chosen = fit["chosen_form"]
    if chosen is None:  # e.g. the trained rows alone: two token counts identify no law
        return {"chosen_form": None, "why": fit["chosen_form_why"], "n_points": fit["n_points"]}
    section = fit["forms"][chosen]
    ci = section.get("ci95") or {}
    holdout = fit.get("holdout") or {}
    return {
        "chosen_form": chosen,
        "params": {k: [v, *(ci.get(k) or [None, None])] for k, v in section["params"].items()},
        "not_identified": sorted(section.get("not_identified") or {}),
        "chinchilla": {k: fit["approach3"][k] for k in ("E", "A", "B", "alpha", "beta")}
        if fit.get("approach3")
        else None,
        "allocation": [
            {k: a[k] for k in ("flops", "n_opt", "n_opt_ci95", "loss_pred", "loss_ci95", "extrapolation")}
            for a in fit.get("allocation") or []
        ],
        "holdout": {
            k: holdout.get(k) for k in ("held_out", "actual", "predicted", "rel_error", "low", "high", "inside")
        },
        "n_points": fit["n_points"],
    }


def curve_accuracy(curves: Curves, specs: dict, metrics: pd.DataFrame, predicted: list[str]) -> dict:
    """The predicted endpoints against the measured final target of the same runs."""
    measured = metrics.set_index("run")[curves.target]
    rows = []
    for run in predicted:
        p = curves.predict(specs[run])
        obs = float(measured[run])
        rows.append({"run": run, "measured": obs, "predicted": p["loss"], "low": p["low"], "high": p["high"]})
    rel = np.array([r["predicted"] / r["measured"] - 1 for r in rows])
    return {
        "law": curves.chosen,
        "mean_abs_rel_error": float(np.mean(np.abs(rel))),
        "max_abs_rel_error": float(np.max(np.abs(rel))),
        "inside_95": int(sum(r["low"] <= r["measured"] <= r["high"] for r in rows)),
        "n": len(rows),
    }


def vs_measured(fit_dir: Path, metrics: pd.DataFrame, target: str) -> dict:
    """Each law against every measured run's target (all 24, the predicted ones' real values included)."""
    from scalelab import load_fit

    law = load_fit(fit_dir)
    ok = metrics[metrics["status"] == "ok"]
    pred = law.predict(ok["params"].to_numpy(float), ok["tokens"].to_numpy(float))["mean"].to_numpy()
    rel = pred / ok[target].to_numpy(float) - 1
    return {"mean_abs_rel_error": float(np.mean(np.abs(rel))), "max_abs_rel_error": float(np.max(np.abs(rel)))}


def show(result: dict) -> None:
    s = result["saved"]
    c = result["curve_law"]
    print(
        f"trained {result['runs_trained']} cooldowns, predicted {result['runs_predicted']}: {c['law']} law, mean "
        f"|rel err| {c['mean_abs_rel_error']:.4f}, max {c['max_abs_rel_error']:.4f}, {c['inside_95']}/{c['n']} inside",
        file=sys.stderr,
    )
    print(
        f"FLOPs saved {s['flops_saved']:.3g} of {s['flops_spent_full']:.3g} ({100 * s['flops_saved_fraction']:.1f} %)",
        file=sys.stderr,
    )
    for name in ("full", "predicted", "trained_only", "predicted_as_measured"):
        law = result[name]
        if not law["chosen_form"]:
            print(f"{name:21s} no law: {law['why']}", file=sys.stderr)
            continue
        params = ", ".join(f"{k} {v[0]:.4g}" for k, v in law["params"].items())
        a = law["allocation"][0] if law["allocation"] else None
        at = f"; N_opt {a['n_opt']:.4g} {a['n_opt_ci95']} loss {a['loss_pred']:.4f} {a['loss_ci95']}" if a else ""
        print(f"{name:21s} {law['chosen_form']}: {params}{at}; holdout {law['holdout']['rel_error']}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-dir", type=Path, required=True)
    parser.add_argument(
        "--trained",
        nargs="+",
        default=None,
        help="token counts whose cooldowns are trained (default: the smallest and a middle D of the grid)",
    )
    parser.add_argument("--bootstrap", type=int, default=None, help="resamples of each fit (default: the study's)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    study = args.study_dir.resolve()
    config = load_config(study / "config" / "config.yaml")
    tokens = sorted(config["grid"]["tokens"])
    trained = args.trained or [tokens[0], tokens[len(tokens) // 2]]  # the default study's: 290K and 1.6M
    config, specs, trained_ids, predicted_ids, spec = plan(study, trained)
    work = study / "bench-endpoints"
    work.mkdir(exist_ok=True)
    metrics = pd.read_csv(study / "results" / "metrics.csv")
    started = time.time()
    data, _ = fit_study(study, trained_ids, specs=specs, target=json.loads(spec)["target"])
    curves_s = time.time() - started
    curves = Curves(data)
    table = with_predicted(metrics[metrics["run"].isin(trained_ids)], curves, specs, predicted_ids)
    table.to_csv(work / "endpoints.csv", index=False)
    # baselines: the trained rows alone (what fewer cooldowns give without the law), and the predicted
    # rows fitted as if measured (log sd 0: what carrying their interval adds to the fit's)
    table[table["status"] == "ok"].to_csv(work / "trained-only.csv", index=False)
    table.assign(**{LOG_SD: table[LOG_SD].where(table[LOG_SD].isna(), 0.0)}).to_csv(
        work / "as-measured.csv", index=False
    )
    tables = {
        "full": study / "results" / "metrics.csv",
        "predicted": work / "endpoints.csv",
        "trained_only": work / "trained-only.csv",
        "predicted_as_measured": work / "as-measured.csv",
    }
    target = curves.target
    result = {
        "study": str(study),
        "trained_tokens": trained,
        "runs_trained": len(trained_ids),
        "runs_predicted": len(predicted_ids),
        "curve_law": curve_accuracy(curves, specs, metrics, predicted_ids),
        "saved": savings(study, metrics, specs, predicted_ids),
        "curves_fit_s": round(curves_s, 1),
        "bootstrap": json.loads(spec)["bootstrap"] if args.bootstrap is None else args.bootstrap,
        "fit_s": {},
    }
    for name, path in tables.items():
        fit, seconds = run_fit(path, work / f"fit-{name}", spec, study, args.workers, args.bootstrap)
        result["fit_s"][name] = round(seconds, 1)
        result[name] = law_summary(fit)
        if fit["chosen_form"]:
            result[name]["vs_measured"] = vs_measured(work / f"fit-{name}", metrics, target)
    show(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
