"""Does `scalelab suggest` beat the hand-made extension of a grid? A simulation on a known law.

Each simulated study starts from a small N x D grid with losses from Epoch AI's Chinchilla law
(Besiroglu et al. 2024: E 1.8172, A 482.01, B 2085.43, alpha 0.3478, beta 0.3658) times
exp(noise), noise ~ Normal(0, 1 %). Then three rounds, for each of two strategies:

- hand-made: one new size at 2x the largest and one new D at 2x the largest, across the grid
  (the new size at every D, the new D at every size);
- suggested: fit (scalelab's Approach 3 with its bootstrap) -> scalelab.suggest's design with the
  hand-made round's FLOPs as budget and at most its number of runs -> those runs.

Both refit after each round. After round 3, each strategy's 95 % bootstrap interval of log N_opt at
the target C is compared: the ratio of widths (hand-made / suggested) per seed, its median over
seeds, and how often each interval covers the true N_opt.

    python bench/suggest_vs_grid.py [--seeds 10] [--rounds 3] [--bootstrap 100] [--grid-points 3]
        [--truth chinchilla|farseer_like] [--fit chinchilla|forms] [--range trusted|share-only]
        [--size-reach F] [--size-up F]

`--truth farseer_like` draws the losses from a law outside the fitted form: Chinchilla's with a D
exponent that grows with N (beta + 0.005 ln(N / 4e7)); its true N_opt is found numerically. Per
round the log also says where the suggested FLOPs went: the share on runs within 2x of the true
compute-optimal N for their own FLOPs (its median over rounds, and how often it is at least half), the share
at sizes no larger than the largest trained, the runs below the smallest size, and the width the refit
measured against the design's forecast.

`--fit forms` fits with `scalelab fit` itself (every form, rolling-origin checks, evidence weights,
drift of N_opt) instead of Approach 3 alone: the design then works over that Uncertainty
(scalelab.suggest.uncertainty), the width compared is the fit's own N_opt interval
(`load_fit().allocate`, forms and drift), and `measured_to_expected_stated_width_by_round` checks
suggest's forecast of it (`width_with_forms_after`); `median_bootstrap_width_ratio` is the chosen
form's bootstrap width. `--range share-only` drops the trusted range (sizes below the smallest, any
tokens per parameter) and keeps only the frontier share, to measure what the range costs and buys;
`--size-reach F` keeps the trusted range but lets it take sizes down to the smallest trained / F; `--size-up F`
also offers new sizes above the largest in sqrt(2) steps up to F x the largest (as `scalelab suggest --sizes`
would; by default a new size is at most 2x the largest).

The last line printed is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from scalelab.fit.approach3 import bootstrap_approach3, fit_approach3, start_grid  # noqa: E402
from scalelab.laws.law import compute_optimal, predict_loss  # noqa: E402
from scalelab.suggest import suggest_runs  # noqa: E402
from scalelab.suggest.ensemble import chinchilla_ensemble, uncertainty_from_fit_dir  # noqa: E402
from scalelab.suggest.design import width_now  # noqa: E402
from scalelab.suggest.study import width_with_forms  # noqa: E402
from scalelab.suggest.uncertainty import as_uncertainty  # noqa: E402

TRUE_LAW = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
START_SIZES = (2e7, 4e7, 8e7)
START_TOKENS = (4e8, 8e8, 1.6e9)
TARGET_FLOPS = 1e21  # ~1300x the largest starting run
NOISE = 0.01


TRUTH = "chinchilla"  # set by --truth
FIT = "chinchilla"  # set by --fit
RANGE = "trusted"  # set by --range
SIZE_REACH = 1.0  # set by --size-reach
SIZE_UP = 2.0  # set by --size-up
N_REF = 4e7


def clean_loss(params, tokens):
    params, tokens = np.asarray(params, float), np.asarray(tokens, float)
    if TRUTH == "chinchilla":
        return predict_loss(params, tokens, **TRUE_LAW)
    beta = TRUE_LAW["beta"] + 0.005 * np.log(params / N_REF)
    return TRUE_LAW["E"] + TRUE_LAW["A"] / params ** TRUE_LAW["alpha"] + TRUE_LAW["B"] / tokens**beta


def true_n_opt(flops) -> float:
    """The N minimising the truth along C = 6·N·D (a fine grid in log N, then a local parabola)."""
    log_n = np.linspace(np.log(flops / 6) * 0.2, np.log(flops / 6) * 0.8, 20001)
    loss = clean_loss(np.exp(log_n), flops / (6 * np.exp(log_n)))
    k = int(np.clip(np.argmin(loss), 1, len(loss) - 2))
    y0, y1, y2 = loss[k - 1 : k + 2]
    return float(np.exp(log_n[k] + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) * (log_n[1] - log_n[0])))


def true_loss(params, tokens, rng):
    loss = clean_loss(params, tokens)
    return loss * np.exp(rng.normal(0.0, NOISE, size=np.shape(loss)))


def where_flops_go(points, picked) -> dict:
    """Shares of the picked runs' FLOPs near the true frontier (N within 2x of the true N_opt at their own
    C = 6·N·D) and at sizes no larger than the largest trained; runs below the smallest size."""
    if not len(picked):
        return {"flops_near_frontier": None, "flops_at_or_below_largest": None, "runs_below_smallest": 0}
    flops = 6 * picked[:, 0] * picked[:, 1]
    n_opt = np.array([true_n_opt(c) for c in flops])
    near = np.abs(np.log(picked[:, 0] / n_opt)) <= np.log(2)
    largest, smallest = points["params"].max(), points["params"].min()
    return {
        "flops_near_frontier": float(flops[near].sum() / flops.sum()),
        "flops_at_or_below_largest": float(flops[picked[:, 0] <= largest * 1.01].sum() / flops.sum()),
        "runs_below_smallest": int(np.sum(picked[:, 0] < smallest / 1.01)),
    }


def fit(points, bootstrap, starts, seed):
    law = fit_approach3(points["params"], points["tokens"], points["loss"], starts)
    samples = bootstrap_approach3(
        points["params"], points["tokens"], points["loss"], law["theta"], bootstrap, seed, starts
    )
    return law, samples


def interval(samples):
    n_opt = compute_optimal(TARGET_FLOPS, samples["A"], samples["B"], samples["alpha"], samples["beta"])[0]
    log_n = np.log(np.asarray(n_opt, float))
    log_n = log_n[np.isfinite(log_n)]
    return np.percentile(log_n, [2.5, 97.5])


def study_fit(points, bootstrap, starts, seed):
    """(the design's model, the interval of log N_opt at the target the study states): with --fit
    chinchilla, Approach 3's bootstrap; with --fit forms, `scalelab fit`'s every form, its rolling
    checks, weights and drift (the fit's N_opt interval, `load_fit().allocate`)."""
    if FIT == "chinchilla":
        _, samples = fit(points, bootstrap, starts, seed)
        return chinchilla_ensemble(samples), interval(samples)
    from scalelab import fit as fit_stage

    folder = tempfile.mkdtemp(prefix="suggest-vs-grid-")
    frame = points.assign(run=[f"r{i}" for i in range(len(points))])
    result = fit_stage.fit_all(frame, bootstrap=bootstrap, seed=seed, workers=1, grid_points=3, holdout="none")
    fit_stage.write_outputs(result, folder)
    stated = width_with_forms(folder, TARGET_FLOPS)
    _, model = uncertainty_from_fit_dir(folder, stated)
    allocation = scalelab_load_fit(folder).allocate([TARGET_FLOPS]).iloc[0]
    return model, np.log([allocation["params_low"], allocation["params_high"]])


def scalelab_load_fit(folder):
    from scalelab import load_fit

    return load_fit(folder)


def hand_made(points):
    sizes, tokens = sorted(set(points["params"])), sorted(set(points["tokens"]))
    new_size, new_tokens = 2 * sizes[-1], 2 * tokens[-1]
    runs = [(new_size, d) for d in tokens] + [(n, new_tokens) for n in [*sizes, new_size]]
    return np.array(runs, float)


def add(points, runs, rng):
    losses = true_loss(runs[:, 0], runs[:, 1], rng)
    new = pd.DataFrame(
        {"params": runs[:, 0], "tokens": runs[:, 1], "loss": losses, "flops": 6 * runs[:, 0] * runs[:, 1]}
    )
    return pd.concat([points, new], ignore_index=True)


def one_seed(seed, rounds, bootstrap, starts):
    # One noise stream for the start and one per strategy, so neither strategy's draws depend on
    # how many runs the other one added.
    start_rng, hand_rng, suggested_rng = (np.random.default_rng([seed, k]) for k in range(3))
    grid = np.array([(n, d) for n in START_SIZES for d in START_TOKENS], float)
    start = add(pd.DataFrame(columns=["params", "tokens", "loss", "flops"]), grid, start_rng)
    hand, suggested = start.copy(), start.copy()
    log = []
    for r in range(rounds):
        runs = hand_made(hand)
        budget, max_runs = float(np.sum(6 * runs[:, 0] * runs[:, 1])), len(runs)
        hand = add(hand, runs, hand_rng)
        model, (low, high) = study_fit(suggested, bootstrap, starts, seed)
        steps = int(round(np.log(SIZE_UP) / np.log(np.sqrt(2))))
        chosen, design = suggest_runs(
            model,
            suggested,
            TARGET_FLOPS,
            budget,
            max_runs,
            extra_sizes=[suggested["params"].max() * np.sqrt(2) ** k for k in range(3, steps + 1)],
            trusted_range=RANGE == "trusted",
            size_reach=SIZE_REACH,
        )
        picked = np.column_stack([chosen["params"], chosen["tokens"]]) if len(chosen) else np.empty((0, 2))
        placement = where_flops_go(suggested, picked)
        suggested = add(suggested, picked, suggested_rng)
        log.append(
            {
                "round": r + 1,
                **placement,
                "budget": budget,
                "hand_runs": max_runs,
                "suggested_runs": len(picked),
                "suggested_flops": design.cost,
                "width_before": design.width_now,
                "expected_width": design.width_after[-1] if len(picked) else design.width_now,
                "stated_width": float(high - low),
                "expected_stated_width": design.forms_width_after[-1] if len(picked) else float(high - low),
                "picked": [[float(n), float(d)] for n, d in picked],
            }
        )
    truth = np.log(true_n_opt(TARGET_FLOPS))
    out = {"seed": seed, "rounds": log}
    for name, points in (("hand", hand), ("suggested", suggested)):
        model, (low, high) = study_fit(points, bootstrap, starts, seed)
        out[name] = {
            "width": float(high - low),
            "bootstrap_width": width_now(as_uncertainty(model).point, TARGET_FLOPS),
            "covers": bool(low <= truth <= high),
            "runs": len(points),
            "flops": float(points["flops"].sum()),
        }
    out["ratio"] = out["hand"]["width"] / out["suggested"]["width"]
    # The design's forecast against the width the refit then measured (the next round's width
    # before, or the final width): how far to trust `expected_width_after`.
    measured = [entry["width_before"] for entry in log[1:]] + [out["suggested"]["bootstrap_width"]]
    for entry, width in zip(log, measured):
        entry["measured_width"] = width
    # With --fit forms, also the fit's stated interval (every form, drift) against its forecast.
    stated = [entry["stated_width"] for entry in log[1:]] + [out["suggested"]["width"]]
    for entry, width in zip(log, stated):
        entry["measured_stated_width"] = width
    return out


def by_round(results, rounds) -> dict:
    """Median over seeds of measured / forecast width after each round: the bootstrap's and the fit's."""

    def median(measured, expected, k):
        return float(np.median([r["rounds"][k][measured] / r["rounds"][k][expected] for r in results]))

    return {
        "measured_to_expected_stated_width_by_round": [
            median("measured_stated_width", "expected_stated_width", k) for k in range(rounds)
        ],
        "measured_to_expected_width_by_round": [median("measured_width", "expected_width", k) for k in range(rounds)],
    }


def summarise(results, args, started) -> dict:
    """The JSON object of the run: medians over seeds and the per-round forecasts against the refits."""
    ratios = [r["ratio"] for r in results]
    summary = {
        "bench": "suggest_vs_grid",
        "truth": args.truth,
        "fit": args.fit,
        "range": args.range,
        "size_reach": args.size_reach,
        "size_up": args.size_up,
        "law": TRUE_LAW,
        "noise": NOISE,
        "start": "3x3",
        "target_flops": TARGET_FLOPS,
        "seeds": args.seeds,
        "rounds": args.rounds,
        "bootstrap": args.bootstrap,
        "median_width_ratio": float(np.median(ratios)),
        "min_width_ratio": float(np.min(ratios)),
        "max_width_ratio": float(np.max(ratios)),
        "median_width_hand": float(np.median([r["hand"]["width"] for r in results])),
        "median_width_suggested": float(np.median([r["suggested"]["width"] for r in results])),
        "coverage_hand": float(np.mean([r["hand"]["covers"] for r in results])),
        "coverage_suggested": float(np.mean([r["suggested"]["covers"] for r in results])),
        "median_runs_hand": float(np.median([r["hand"]["runs"] for r in results])),
        "median_runs_suggested": float(np.median([r["suggested"]["runs"] for r in results])),
        "flops_ratio_suggested_to_hand": float(
            np.median([r["suggested"]["flops"] / r["hand"]["flops"] for r in results])
        ),
        "median_measured_to_expected_width": float(
            np.median([e["measured_width"] / e["expected_width"] for r in results for e in r["rounds"]])
        ),
        "median_bootstrap_width_ratio": float(
            np.median([r["hand"]["bootstrap_width"] / r["suggested"]["bootstrap_width"] for r in results])
        ),
        **by_round(results, args.rounds),
        "flops_near_frontier": float(
            np.median(
                [e["flops_near_frontier"] for r in results for e in r["rounds"] if e["flops_near_frontier"] is not None]
            )
        ),
        "flops_at_or_below_largest": float(
            np.median(
                [
                    e["flops_at_or_below_largest"]
                    for r in results
                    for e in r["rounds"]
                    if e["flops_at_or_below_largest"] is not None
                ]
            )
        ),
        # how often a round's suggested runs kept half of their FLOPs near the true frontier (the design asks
        # it of 80 % of the fit's draws: scalelab.suggest.core.FRONTIER_CONFIDENCE)
        "rounds_with_half_near_frontier": float(
            np.mean(
                [
                    e["flops_near_frontier"] >= 0.5
                    for r in results
                    for e in r["rounds"]
                    if e["flops_near_frontier"] is not None
                ]
            )
        ),
        "runs_below_smallest": int(sum(e["runs_below_smallest"] for r in results for e in r["rounds"])),
        "seconds": round(time.perf_counter() - started, 1),
        "per_seed": [{k: r[k] for k in ("seed", "ratio", "hand", "suggested", "rounds")} for r in results],
    }
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--grid-points", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--truth", choices=["chinchilla", "farseer_like"], default="chinchilla")
    parser.add_argument("--fit", choices=["chinchilla", "forms"], default="chinchilla")
    parser.add_argument("--range", choices=["trusted", "share-only"], default="trusted")
    parser.add_argument("--size-reach", type=float, default=1.0)
    parser.add_argument("--size-up", type=float, default=2.0)
    args = parser.parse_args(argv)
    global TRUTH, FIT, RANGE, SIZE_REACH, SIZE_UP
    TRUTH, FIT, RANGE, SIZE_REACH, SIZE_UP = args.truth, args.fit, args.range, args.size_reach, args.size_up
    starts = start_grid(args.grid_points)
    started = time.perf_counter()
    results = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        result = one_seed(seed, args.rounds, args.bootstrap, starts)
        results.append(result)
        print(
            f"seed {seed}: width hand {result['hand']['width']:.4f} ({result['hand']['runs']} runs, "
            f"{result['hand']['flops']:.3g} FLOPs, covers {result['hand']['covers']}), suggested "
            f"{result['suggested']['width']:.4f} ({result['suggested']['runs']} runs, "
            f"{result['suggested']['flops']:.3g} FLOPs, covers {result['suggested']['covers']}), "
            f"ratio {result['ratio']:.2f}",
            file=sys.stderr,
            flush=True,
        )
    summary = summarise(results, args, started)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
