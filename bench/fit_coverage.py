"""Benchmark: how often the 95 % prediction intervals of `scalelab fit` cover new runs.

    python bench/fit_coverage.py [--ladders 20] [--bootstrap 100] [--noise 0.01] [--truth chinchilla]

Each ladder is 5 model sizes x 5 token counts drawn from a known law (`--truth`, Chinchilla's
published fit or a Kaplan-form law) times log-normal noise. The fit uses every default (all
forms, form auto) except the number of resamples; then `load_fit(folder).predict` gives intervals
for 20 fresh noisy runs per ladder: the 5 x 5 grid again (interpolation) and 3 larger sizes x
5 token counts plus 3 x 2 beyond both (extrapolation, up to 3x in N and D). Prints one line per
ladder and, last, a JSON object with the coverage overall and by kind.
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
from scalelab.laws import synthetic
from scalelab.laws.fitted import predictive_interval
from scalelab.laws.law import FORMS

KAPLAN = {"E": 1.6, "N_c": 3e6, "D_c": 2e8, "alpha_N": 0.35, "alpha_D": 0.4}


def truth(name):
    if name == "chinchilla":
        return lambda n, d: FORMS["chinchilla"].loss(synthetic.CHINCHILLA, n, d)
    return lambda n, d: FORMS["kaplan"].loss(KAPLAN, n, d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ladders", type=int, default=20)
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--truth", choices=["chinchilla", "kaplan"], default="chinchilla")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    law = truth(args.truth)
    sizes, tokens = np.geomspace(1e7, 1e9, 5), np.geomspace(1e9, 1e11, 5)
    hits = {"interpolation": [], "extrapolation": [], "chosen_only": []}
    t0 = time.perf_counter()
    for seed in range(args.ladders):
        rng = np.random.default_rng(1000 + seed)
        n, d = (a.ravel() for a in np.meshgrid(sizes, tokens))
        loss = law(n, d) * np.exp(rng.normal(0, args.noise, n.size))
        frame = pd.DataFrame({"run": [f"r{i}" for i in range(n.size)], "params": n, "tokens": d,
                              "flops": 6 * n * d, "loss": loss})
        with tempfile.TemporaryDirectory() as out:
            fit.write_outputs(fit.fit_all(frame, bootstrap=args.bootstrap, seed=seed, workers=args.workers), out)
            fitted = scalelab.load_fit(out)
            new_n = np.concatenate([n, np.repeat(np.geomspace(1.5e9, 3e9, 3), 5), np.repeat([2e9, 3e9], 3)])
            new_d = np.concatenate([d, np.tile(tokens, 3), np.tile([1.5e11, 2e11, 3e11], 2)])
            actual = law(new_n, new_d) * np.exp(rng.normal(0, args.noise, new_n.size))
            pred = fitted.predict(new_n, new_d)
            # The same interval from the chosen form alone (no mixture over forms), for comparison.
            own = predictive_interval([(1.0, *fitted.components(new_n, new_d)[fitted.form.name][1:])])
        inside = (actual >= pred["low"].to_numpy()) & (actual <= pred["high"].to_numpy())
        hits["chosen_only"] += ((actual >= np.exp(own[0])) & (actual <= np.exp(own[1]))).tolist()
        hits["interpolation"] += inside[:n.size].tolist()
        hits["extrapolation"] += inside[n.size:].tolist()
        print(f"ladder {seed}: chosen {fitted.form.name}, inside {inside[:n.size].mean():.2f} (grid) "
              f"{inside[n.size:].mean():.2f} (beyond)", flush=True)
    result = {"truth": args.truth, "noise": args.noise, "ladders": args.ladders, "bootstrap": args.bootstrap,
              "coverage": float(np.mean(hits["interpolation"] + hits["extrapolation"])),
              "coverage_without_mixture": float(np.mean(hits["chosen_only"])),
              **{f"coverage_{k}": float(np.mean(v)) for k, v in hits.items() if k != "chosen_only"},
              "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
