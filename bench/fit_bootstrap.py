"""Benchmark: Approach 3 with 1000 bootstrap resamples on 250 synthetic points.

    python bench/fit_bootstrap.py [--points 250] [--bootstrap 1000] [--workers 2]
    python bench/fit_bootstrap.py --default-study [--baseline main] [--repeats 2]

--default-study times the whole fit job of a study shaped like the default one instead: 24 runs
(the default's 4 model sizes x 6 token counts, losses from a Kaplan-form law whose size gaps grow
with D, times 1 % noise), `scalelab fit --bootstrap 200 --workers 2` with every default (all forms,
their bootstrap, the out-of-sample checks and the held-out refit). With --baseline REF, the same
command from the package as of git REF (exported to a temporary folder) runs alternately with this
tree's, so both see the same machine load; the last line gives both wall times and their ratio.

Prints progress lines and, as the last line, one JSON object with the timings. The points lie on
a 10 x 25 grid of model sizes and token counts, with losses from the Chinchilla fit of Hoffmann
et al. (2022) times 1 % log-normal noise. Target: total_s under 60 on 2 cores.

Then, outside total_s: Approach 2 with the same number of resamples on 13 IsoFLOP profiles of 61
sizes each (approach2_s), and the hyperparameter laws on a 12-point lr sweep of 14 values
(hyperparameters_s); all data from scalelab.laws.synthetic.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

from scalelab import fit  # first: it pins OpenBLAS to one thread before numpy and scipy load

import numpy as np
import pandas as pd

from scalelab.laws import synthetic


def synthetic_points(n_sizes: int, n_tokens: int, noise: float, seed: int):
    points = synthetic.ladder(n_sizes, n_tokens, noise=noise, seed=seed)  # the shared generator
    return points["params"], points["tokens"], points["loss"]


def cpu_seconds() -> float:
    """CPU time of this process and its finished worker processes."""
    return sum(
        resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )


def default_study_csv(path) -> None:
    """24 runs shaped like the default study (config/config.yaml's grid)."""
    from scalelab.laws.law import FORMS

    sizes = np.array([6592, 25472, 56640, 100480.0])
    tokens = np.array([290e3, 520e3, 900e3, 1.6e6, 2.8e6, 4.8e6])
    n, d = (a.ravel() for a in np.meshgrid(sizes, tokens))
    law = {"E": 1.5, "N_c": 2e3, "D_c": 5e4, "alpha_N": 0.5, "alpha_D": 0.6}
    loss = FORMS["kaplan"].loss(law, n, d) * np.exp(np.random.default_rng(1).normal(0, 0.01, n.size))
    pd.DataFrame(
        {"run": [f"r{i}" for i in range(n.size)], "params": n, "tokens": d, "flops": 6 * n * d, "val_loss": loss}
    ).to_csv(path, index=False)


def default_study(args) -> None:
    import subprocess
    import tempfile

    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    with tempfile.TemporaryDirectory() as tmp:
        csv = os.path.join(tmp, "metrics.csv")
        default_study_csv(csv)
        trees = {"this": here}
        if args.baseline:
            old = os.path.join(tmp, "baseline")
            os.makedirs(old)
            archive = subprocess.run(
                ["git", "archive", args.baseline, "src/scalelab"], check=True, capture_output=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
            trees["baseline"] = os.path.join(old, "src")
        times = {name: [] for name in trees}
        for repeat in range(args.repeats):
            for name, src in trees.items():
                env = {**os.environ, "PYTHONPATH": src}
                t0 = time.perf_counter()
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "scalelab",
                        "fit",
                        csv,
                        "--out",
                        os.path.join(tmp, name),
                        "--bootstrap",
                        str(args.bootstrap),
                        "--workers",
                        str(args.workers),
                    ],
                    check=True,
                    env=env,
                    capture_output=True,
                )
                times[name].append(time.perf_counter() - t0)
                print(f"bench: {name} fit job {times[name][-1]:.1f} s (repeat {repeat})", flush=True)
    result = {
        "study": "default-shaped, 24 runs",
        "bootstrap": args.bootstrap,
        "workers": args.workers,
        **{f"{name}_s": round(min(t), 1) for name, t in times.items()},
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
    }
    if args.baseline:
        result["speedup"] = round(min(times["baseline"]) / min(times["this"]), 1)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default-study", action="store_true", help="time the fit job of a default-shaped study")
    parser.add_argument("--baseline", help="git ref whose package runs alternately with this tree's")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--points", type=int, default=250, help="points (a multiple of 10)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--grid-points", type=int, default=fit.GRID_POINTS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.default_study:
        if args.bootstrap == 1000 and "--bootstrap" not in sys.argv:
            args.bootstrap = 200  # the default study's fit.bootstrap
        return default_study(args)

    params, tokens, loss = synthetic_points(10, args.points // 10, noise=0.01, seed=args.seed)
    starts = fit.start_grid(args.grid_points)
    print(
        f"bench: {params.size} points, {len(starts)} starts, {args.bootstrap} resamples, {args.workers} workers",
        flush=True,
    )

    cpu0, t0 = cpu_seconds(), time.perf_counter()
    law = fit.fit_approach3(params, tokens, loss, starts, workers=args.workers)
    t1 = time.perf_counter()
    print(
        f"bench: fit {t1 - t0:.1f} s: alpha {law['alpha']:.4f} beta {law['beta']:.4f} E {law['E']:.4f} "
        f"({law['starts_at_optimum']} of {len(starts)} starts at the optimum)",
        flush=True,
    )
    samples = fit.bootstrap_approach3(
        params, tokens, loss, law["theta"], args.bootstrap, args.seed, starts, workers=args.workers
    )
    t2 = time.perf_counter()
    ci = {
        k: [round(float(v), 4) for v in np.percentile(samples[k].dropna(), [2.5, 97.5])] for k in ("alpha", "beta", "E")
    }
    print(
        f"bench: bootstrap {t2 - t1:.1f} s ({(t2 - t1) / max(1, args.bootstrap) * 1e3:.1f} ms per resample): "
        f"95 % intervals {ci}",
        flush=True,
    )
    cpu_s = cpu_seconds() - cpu0

    iso = pd.concat(
        [
            pd.DataFrame(synthetic.isoflop([c], span=300, n_sizes=61, noise=0.01, seed=i))
            for i, c in enumerate(np.geomspace(1e17, 1e23, 13))
        ],
        ignore_index=True,
    )
    t3 = time.perf_counter()
    section = fit.fit_approach2(fit.prepare(iso)[0], bootstrap=args.bootstrap, seed=args.seed)[0]
    t4 = time.perf_counter()
    print(
        f"bench: approach 2 {t4 - t3:.2f} s on {len(iso)} runs: a {section['a']:.4f} CI {section['a_ci95']}", flush=True
    )
    grid = [a.ravel() for a in np.meshgrid(np.geomspace(1e7, 3e9, 6), [1e9, 1e10])]
    sweep = pd.DataFrame(
        synthetic.hparam_sweep(*grid, np.geomspace(1e-5, 1e-1, 14), curvature=0.05, noise=0.003, seed=args.seed)
    )
    t5 = time.perf_counter()
    hp = fit.fit_hyperparameters(fit.prepare(sweep, sweep_keys=["lr"])[0], ["lr"], 1e22)[0]
    t6 = time.perf_counter()
    print(f"bench: hyperparameters {t6 - t5:.2f} s: lr_opt ~ N^{hp['lr']['law_N']['exponent']:.3f}", flush=True)
    print(
        json.dumps(
            {
                "points": int(params.size),
                "bootstrap": args.bootstrap,
                "n_starts": len(starts),
                "workers": args.workers,
                "fit_s": round(t1 - t0, 2),
                "bootstrap_s": round(t2 - t1, 2),
                "total_s": round(t2 - t0, 2),
                "cpu_s": round(cpu_s, 1),
                "approach2_s": round(t4 - t3, 2),
                "hyperparameters_s": round(t6 - t5, 2),
                "load_avg_1min": round(os.getloadavg()[0], 2),
                "cpu_count": os.cpu_count(),
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
