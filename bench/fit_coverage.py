"""Benchmark: are the 95 % intervals of `scalelab fit` honest when the truth is not one of its forms?

    python bench/fit_coverage.py [--ladders 20] [--bootstrap 100] [--truth all|NAME ...] [--workers 1]

Each ladder follows the audit design of issue 26: 6 model sizes from 1e6 to 3e7, each trained on
4-6 token counts at 5-80 tokens per parameter (the count drawn per ladder), losses from a known
truth times log-normal noise of 0.5-1.5 % (drawn per ladder). Truths (`TRUTHS`): two in the
family of scalelab's forms (Chinchilla's published law, a Kaplan-form law) and five outside it:
an N exponent that steepens or flattens with N, a D exponent that grows with N (Farseer-like),
an N-D interaction L = E + ((A/N^alpha)^(1/g) + (B/D^beta)^(1/g))^g with g = 0.8 and 1.3, and an
irreducible loss that falls with N.

Each ladder is fitted twice with every default except the number of resamples: as is, and with the
Chinchilla form alone (forms = form = chinchilla). `load_fit(folder)` then predicts
- 9 new noisy runs 2-3.3x larger than the largest trained (3 sizes x 10, 20, 40 tokens/param):
  coverage of the 95 % interval, its mean relative width, and the mean |error| of the point
  prediction against the noise-free truth (as fitted, and Chinchilla-only);
- the compute-optimal N at 10x and 100x the largest run's FLOPs (`allocate`): whether the true
  N_opt (minimised numerically along C = 6·N·D) lies inside [params_low, params_high], and the
  |log error| of the point N_opt;
- which fitted form predicts the larger runs better (against the truth), and whether the form
  used for the point prediction is that one.

Prints one line per ladder and, last, a JSON object with one entry per truth.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from scalelab import fit  # first: it pins OpenBLAS to one thread before numpy and scipy load

import numpy as np
import pandas as pd

import scalelab
from scalelab.laws.law import FORMS

CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
KAPLAN = {"E": 1.6, "N_c": 3e6, "D_c": 2e8, "alpha_N": 0.35, "alpha_D": 0.4}
N_REF = 5e6  # where a drifting exponent equals Chinchilla's


def _chinchilla(n, d, alpha=None, beta=None, floor=None):
    c = CHINCHILLA
    alpha = c["alpha"] if alpha is None else alpha
    beta = c["beta"] if beta is None else beta
    floor = c["E"] if floor is None else floor
    return floor + c["A"] / n**alpha + c["B"] / d**beta


def _interaction(g):
    c = CHINCHILLA
    return lambda n, d: c["E"] + ((c["A"] / n ** c["alpha"]) ** (1 / g) + (c["B"] / d ** c["beta"]) ** (1 / g)) ** g


TRUTHS = {
    "chinchilla": (True, lambda n, d: _chinchilla(n, d)),
    "kaplan": (True, lambda n, d: FORMS["kaplan"].loss(KAPLAN, n, d)),
    "steepening_n": (False, lambda n, d: _chinchilla(n, d, alpha=0.34 + 0.015 * np.log(n / N_REF))),
    "flattening_n": (False, lambda n, d: _chinchilla(n, d, alpha=0.34 - 0.01 * np.log(n / N_REF))),
    "farseer_like": (False, lambda n, d: _chinchilla(n, d, beta=0.28 + 0.005 * np.log(n / N_REF))),
    "interaction_0.8": (False, _interaction(0.8)),
    "interaction_1.3": (False, _interaction(1.3)),
    "n_floor": (False, lambda n, d: _chinchilla(n, d, floor=1.69 * (n / N_REF) ** -0.03)),
}
SIZES = np.geomspace(1e6, 3e7, 6)
LARGER = np.array([2.0, 2.6, 3.3]) * SIZES[-1]
LARGER_RATIOS = np.array([10.0, 20.0, 40.0])


def true_n_opt(law, flops) -> float:
    """The N minimising the truth along C = 6·N·D: a fine grid in log N, then a local parabola."""
    log_n = np.linspace(np.log(flops / 6) * 0.2, np.log(flops / 6) * 0.8, 20001)
    loss = law(np.exp(log_n), flops / (6 * np.exp(log_n)))
    k = int(np.argmin(loss))
    y0, y1, y2 = loss[k - 1 : k + 2]
    return float(np.exp(log_n[k] + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) * (log_n[1] - log_n[0])))


def ladder(law, rng):
    n_tokens, noise = int(rng.integers(4, 7)), float(rng.uniform(0.005, 0.015))
    ratios = np.geomspace(5, 80, n_tokens)
    n = np.repeat(SIZES, n_tokens)
    d = n * np.tile(ratios, len(SIZES))
    loss = law(n, d) * np.exp(rng.normal(0, noise, n.size))
    frame = pd.DataFrame(
        {"run": [f"r{i}" for i in range(n.size)], "params": n, "tokens": d, "flops": 6 * n * d, "loss": loss}
    )
    return frame, noise


def fitted_law(frame, bootstrap, seed, workers, **overrides):
    out = tempfile.mkdtemp()
    fit.write_outputs(fit.fit_all(frame, bootstrap=bootstrap, seed=seed, workers=workers, **overrides), out)
    return scalelab.load_fit(out)


def one_ladder(name, seed, args) -> dict:
    in_family, law = TRUTHS[name]
    rng = np.random.default_rng(7000 + seed)
    frame, noise = ladder(law, rng)
    new_n = np.repeat(LARGER, len(LARGER_RATIOS))
    new_d = new_n * np.tile(LARGER_RATIOS, len(LARGER))
    clean = law(new_n, new_d)
    actual = clean * np.exp(rng.normal(0, noise, new_n.size))
    budgets = np.array([10.0, 100.0]) * frame["flops"].max()
    truth_opt = np.array([true_n_opt(law, c) for c in budgets])
    row = {"noise": noise}
    for label, overrides in (("default", {}), ("chinchilla_only", {"forms": ("chinchilla",), "form": "chinchilla"})):
        fitted = fitted_law(frame, args.bootstrap, seed, args.workers, **overrides)
        pred = fitted.predict(new_n, new_d)
        alloc = fitted.allocate(budgets)
        row[f"{label}_error"] = float(np.mean(np.abs(pred["mean"].to_numpy() / clean - 1)))
        row[f"{label}_nopt_log_error"] = np.abs(np.log(alloc["params"].to_numpy() / truth_opt)).tolist()
        if label != "default":
            continue
        row["chosen"] = fitted.form.name
        row["inside"] = float(
            np.mean((actual >= pred["obs_ci_lower"].to_numpy()) & (actual <= pred["obs_ci_upper"].to_numpy()))
        )
        row["width"] = float(
            np.mean((pred["obs_ci_upper"] - pred["obs_ci_lower"]).to_numpy() / pred["mean"].to_numpy())
        )
        low, high = alloc["params_low"].to_numpy(), alloc["params_high"].to_numpy()
        row["nopt_inside"] = ((truth_opt >= low) & (truth_opt <= high)).tolist()
        row["nopt_log_width"] = np.log(high / low).tolist()
        errors = {k: float(np.mean(np.abs(v / clean - 1))) for k, v in fitted.forms_at(new_n, new_d).items()}
        row["better_form"] = min(errors, key=errors.get)
        row["n_forms"] = len(errors)
    return row


def summarise(name, rows) -> dict:
    in_family = TRUTHS[name][0]
    nopt = np.array([r["nopt_inside"] for r in rows], float)
    compared = [r for r in rows if r["n_forms"] > 1]
    return {
        "truth": name,
        "in_family": in_family,
        "ladders": len(rows),
        "loss_coverage": float(np.mean([r["inside"] for r in rows])),
        "loss_width": float(np.mean([r["width"] for r in rows])),
        "loss_error": float(np.mean([r["default_error"] for r in rows])),
        "chinchilla_only_error": float(np.mean([r["chinchilla_only_error"] for r in rows])),
        "nopt_coverage_10x": float(np.nanmean(nopt[:, 0])),
        "nopt_coverage_100x": float(np.nanmean(nopt[:, 1])),
        "nopt_log_width_100x": float(np.nanmedian([r["nopt_log_width"][1] for r in rows])),
        "nopt_log_error_100x": float(np.mean([r["default_nopt_log_error"][1] for r in rows])),
        "chinchilla_only_nopt_log_error_100x": float(np.mean([r["chinchilla_only_nopt_log_error"][1] for r in rows])),
        "chosen_is_better": (float(np.mean([r["chosen"] == r["better_form"] for r in compared])) if compared else None),
        "chosen": {k: sum(r["chosen"] == k for r in rows) for k in sorted({r["chosen"] for r in rows})},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ladders", type=int, default=20)
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--truth", nargs="+", default=["all"], choices=["all", *TRUTHS])
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    names = list(TRUTHS) if "all" in args.truth else args.truth
    t0 = time.perf_counter()
    results = []
    for name in names:
        rows = []
        for seed in range(args.ladders):
            row = one_ladder(name, seed, args)
            rows.append(row)
            print(
                f"{name} ladder {seed}: chosen {row['chosen']} (better {row['better_form']}), loss inside "
                f"{row['inside']:.2f}, width {row['width']:.3f}, N_opt inside {row['nopt_inside']}, "
                f"|error| {row['default_error']:.4f} vs chinchilla-only {row['chinchilla_only_error']:.4f}",
                flush=True,
            )
        results.append(summarise(name, rows))
        print(json.dumps(results[-1]), flush=True)
    print(
        json.dumps(
            {
                "ladders": args.ladders,
                "bootstrap": args.bootstrap,
                "results": results,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
