"""Benchmark: how well Approach 2 recovers a known exponent from simulated IsoFLOP profiles.

    python bench/approach2_accuracy.py [--seeds 40] [--bootstrap 1000] [--baseline main]

Losses come from the Chinchilla fit of Hoffmann et al. (2022) (scalelab.laws.synthetic), whose
compute-optimal exponent is a = beta / (alpha + beta), times log-normal noise. Each scenario is a
set of budgets, each sampled at sizes geometric around its optimum, the centre moved by a random
factor up to 2x either way (a ladder never knows where the optimum is). Per scenario and method:
the mean error of a (its bias; `bias_se` is its standard error) and the root mean square error,
over --seeds independent draws. With --baseline REF, the package as of git REF (exported to a
temporary folder) runs the same draws in a subprocess.

Prints one line per scenario and, as the last line, one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

from scalelab import fit  # first: it pins OpenBLAS to one thread before numpy and scipy load

import numpy as np
import pandas as pd

from scalelab.laws import synthetic

# name: (budgets, span of sizes in N, sizes per budget, noise (sd of log loss))
SCENARIOS = {
    "porian_like": (np.geomspace(1.25e16, 2.56e19, 12), 1.4**11, 12, 0.002),
    "narrow_9_sizes": (np.geomspace(1e18, 1e21, 7), 16.0, 9, 0.003),
    "sparse_5_sizes": (np.geomspace(1e18, 1e21, 7), 8.0, 5, 0.005),
    "wide_61_sizes": (np.geomspace(1e17, 1e23, 13), 300.0, 61, 0.01),
    "noise_free": (np.geomspace(1e18, 1e21, 7), 100.0, 15, 0.0),
}
TRUE_A = synthetic.CHINCHILLA["beta"] / (synthetic.CHINCHILLA["alpha"] + synthetic.CHINCHILLA["beta"])


def isoflops(budgets, span, n_sizes, noise, seed) -> pd.DataFrame:
    """One draw of a scenario: the points `fit_approach2` takes."""
    rng = np.random.default_rng(seed)
    frames = [
        pd.DataFrame(
            synthetic.isoflop(
                [c],
                span=span,
                n_sizes=n_sizes,
                noise=noise,
                seed=seed * 100 + i,
                offset=math.exp(rng.uniform(-0.7, 0.7)),
            )
        )
        for i, c in enumerate(budgets)
    ]
    return fit.prepare(pd.concat(frames, ignore_index=True).drop(columns="flops"))[0]


def measure(seeds: int, bootstrap: int) -> dict:
    result = {}
    for name, scenario in SCENARIOS.items():
        errors = []
        for seed in range(seeds):
            section = fit.fit_approach2(isoflops(*scenario, seed), bootstrap=bootstrap, seed=seed)[0]
            errors.append(section["a"] - TRUE_A if section and section["a"] is not None else np.nan)
        errors = np.asarray(errors)
        ok = errors[np.isfinite(errors)]
        result[name] = {
            "bias": round(float(ok.mean()), 5),
            "bias_se": round(float(ok.std() / math.sqrt(len(ok))), 5),
            "rmse": round(float(np.sqrt(np.mean(ok**2))), 5),
            "failed": int((~np.isfinite(errors)).sum()),
        }
    return result


def baseline(ref: str, seeds: int, bootstrap: int) -> dict:
    """The same measurement with the package as of git `ref`."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", ref, "src/scalelab"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        env = {**os.environ, "PYTHONPATH": os.path.join(tmp, "src")}
        proc = subprocess.run(
            [sys.executable, __file__, "--seeds", str(seeds), "--bootstrap", str(bootstrap)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])["this"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--baseline", help="git ref whose package is measured the same way")
    args = parser.parse_args()
    result = {
        "true_a": round(TRUE_A, 5),
        "seeds": args.seeds,
        "bootstrap": args.bootstrap,
        "this": measure(args.seeds, args.bootstrap),
    }
    if args.baseline:
        result["baseline"] = baseline(args.baseline, args.seeds, args.bootstrap)
    for name in SCENARIOS:
        line = f"bench: {name}: this {result['this'][name]}"
        if args.baseline:
            line += f"; {args.baseline} {result['baseline'][name]}"
        print(line, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
