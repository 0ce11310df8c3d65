"""How far can any design beat the hand-made extension, and how much of that can a bootstrap width show?

bench/suggest_vs_grid.py compares the 95 % bootstrap widths of log N_opt at its target after three rounds of
`scalelab suggest` and of the hand-made extension. This bench splits that ratio into what a design could buy
and what the width measured afterwards shows of it, on the same in-family truth (Epoch AI's Chinchilla law,
1 % noise, the same 3 x 3 start, budgets and run caps):

1. **The ceiling.** The design run with the truth itself as its one-row ensemble (no fitting noise: the best
   this design could do), three rounds, with the hand-made round's FLOPs and number of runs, under
   - the trusted range and the frontier share (`scalelab suggest`'s default),
   - the range with sizes down to the smallest trained / sqrt(2) (`size_reach`),
   - no range (the frontier share only),
   - the trusted range with new sizes up to 4x the largest (toward the target; by default a new size is at
     most 2x the largest).
   Each is scored by the linearised sd of log N_opt at the truth (sigma^2 g^T (J^T J)^-1 g, noise-free), as a
   ratio hand-made / designed. Round 1 is also solved as the continuous relaxation of the same choice (each
   candidate at most once, at most the hand-made's runs, the budget, half of the FLOPs within 2x of the
   frontier) with scipy's SLSQP from several starts: a bound no design of these candidates beats, so the gap
   to the greedy design is what a better optimiser could add.
2. **What the width shows.** For `--seeds` studies of bench/suggest_vs_grid.py (Approach 3's bootstrap, the
   default `--fit chinchilla`), the final hand-made and suggested ladders are each refit under `--draws`
   fresh noise draws: the spread of their log N_opt (the sampling width a perfect interval would have), the
   linearised width at the truth, and the mean case-bootstrap width over the first `--boot-draws` of them
   (what the study reports).

    python bench/suggest_ceiling.py [--seeds 6] [--draws 40] [--boot-draws 8] [--bootstrap 60]

The last line printed is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

from scalelab.fit.approach3 import fit_approach3, start_grid  # noqa: E402
from scalelab.laws.law import compute_optimal  # noqa: E402
from scalelab.suggest import core, design, suggest_runs  # noqa: E402
from scalelab.suggest.candidates import candidates  # noqa: E402
from scalelab.suggest.ensemble import chinchilla_ensemble  # noqa: E402

_spec = importlib.util.spec_from_file_location("suggest_vs_grid", Path(__file__).with_name("suggest_vs_grid.py"))
grid = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(grid)

RANGES = {  # name -> suggest_runs keywords
    "trusted": {},
    "size_reach_sqrt2": {"size_reach": float(np.sqrt(2))},
    "share_only": {"trusted_range": False},
    # the trusted range, with new sizes up to 4x the largest (the user's `--sizes`) besides the default
    # one or two sqrt(2) steps above it
    "trusted_sizes_to_4x": {"size_up": 4.0},
}
RELAX_STARTS = 4


def truth_ensemble():
    return chinchilla_ensemble(pd.DataFrame([grid.TRUE_LAW] * 2))


def start_points() -> np.ndarray:
    return np.array([(n, d) for n in grid.START_SIZES for d in grid.START_TOKENS], float)


def frame(points) -> pd.DataFrame:
    return pd.DataFrame({"params": points[:, 0], "tokens": points[:, 1], "flops": 6 * points[:, 0] * points[:, 1]})


def linearised(ensemble, done, cand):
    """(information, gradient of log N_opt, candidates' Jacobians) at the truth, noise-free (sigma = 1)."""
    rows = np.asarray(ensemble.samples, float)
    state, J_cand, _ = design._linearised(
        ensemble, rows, grid.TARGET_FLOPS, done[:, 0], done[:, 1], cand[:, 0], cand[:, 1]
    )
    return state.info[0], state.grad_g[0], J_cand[0]


def sd_at_truth(ensemble, points) -> float:
    """The linearised sd of log N_opt at the target for a ladder, in units of the noise sd."""
    info, g, _ = linearised(ensemble, points, points[:1])
    return float(np.sqrt(g @ np.linalg.solve(info, g)))


def hand_rounds(rounds: int):
    """The hand-made ladder after each round, and each round's (FLOPs, runs)."""
    points, ladders, rounds_out = start_points(), [], []
    for _ in range(rounds):
        runs = grid.hand_made(frame(points))
        rounds_out.append((float(np.sum(6 * runs[:, 0] * runs[:, 1])), len(runs)))
        points = np.vstack([points, runs])
        ladders.append(points)
    return ladders, rounds_out


def sizes_up(points, keywords) -> list:
    """Sizes above the largest in sqrt(2) steps up to keywords["size_up"] x it (none without the key)."""
    steps = int(round(np.log(keywords.get("size_up", 1.0)) / np.log(np.sqrt(2))))
    return [float(points[:, 0].max() * np.sqrt(2) ** k) for k in range(1, steps + 1)]


def oracle_rounds(ensemble, rounds_out, keywords) -> list:
    """The ladder after each round of the design run with the truth as its ensemble."""
    points, ladders = start_points(), []
    options = {k: v for k, v in keywords.items() if k != "size_up"}
    for budget, runs in rounds_out:
        extra = sizes_up(points, keywords)
        chosen, _ = suggest_runs(ensemble, frame(points), grid.TARGET_FLOPS, budget, runs, extra, **options)
        points = np.vstack([points, np.column_stack([chosen["params"], chosen["tokens"]])])
        ladders.append(points)
    return ladders


def relaxed_sd(ensemble, budget: float, runs: int, keywords) -> float:
    """The round-1 continuous relaxation's sd: weights in [0, 1] per candidate, at most `runs` in all, the
    budget, and half of the weighted FLOPs within 2x of the true compute-optimal N at their own C."""
    done = start_points()
    cand_params, cand_tokens = candidates(done[:, 0], done[:, 1], sizes_up(done, keywords))
    if keywords.get("trusted_range", True):
        keep = core.trusted(done[:, 0], done[:, 1], cand_params, cand_tokens, keywords.get("size_reach", 1.0))
        cand_params, cand_tokens = cand_params[keep], cand_tokens[keep]
    info, g, J = linearised(ensemble, done, np.column_stack([cand_params, cand_tokens]))
    flops = 6 * cand_params * cand_tokens
    n_opt = np.array([grid.true_n_opt(c) for c in flops])
    near = (np.abs(np.log(cand_params / n_opt)) <= np.log(2)).astype(float)

    def variance(w):
        v = np.linalg.solve(info + (J.T * w) @ J, g)
        return float(g @ v), -((J @ v) ** 2)

    constraints = [
        {"type": "ineq", "fun": lambda w: budget - flops @ w, "jac": lambda w: -flops},
        {"type": "ineq", "fun": lambda w: runs - w.sum(), "jac": lambda w: -np.ones_like(w)},
        {"type": "ineq", "fun": lambda w: (near - 0.5) * flops @ w, "jac": lambda w: (near - 0.5) * flops},
    ]
    best = np.inf
    for start in range(RELAX_STARTS):
        w0 = np.random.default_rng(start).uniform(0, 1, len(flops))
        w0 *= min(0.5 * budget / (flops @ w0), 0.5 * runs / w0.sum())
        result = minimize(
            lambda w: variance(w)[0],
            w0,
            jac=lambda w: variance(w)[1],
            bounds=[(0, 1)] * len(flops),
            constraints=constraints,
            method="SLSQP",
            options={"maxiter": 500, "ftol": 1e-12},
        )
        feasible = all(c["fun"](result.x) >= -1e-6 * scale for c, scale in zip(constraints, (budget, runs, budget)))
        if feasible and np.all(
            (result.x >= -1e-9) & (result.x <= 1 + 1e-9)
        ):  # SLSQP may stop early at a feasible point
            best = min(best, float(result.fun))
    return float(np.sqrt(best))


def ceiling(rounds: int = 3) -> dict:
    """Part 1: hand-made / designed linearised sd at the truth per round, per range, and round 1's bound."""
    ensemble = truth_ensemble()
    hand, rounds_out = hand_rounds(rounds)
    out = {}
    for name, keywords in RANGES.items():
        designed = oracle_rounds(ensemble, rounds_out, keywords)
        out[name] = {
            "sd_ratio_by_round": [sd_at_truth(ensemble, h) / sd_at_truth(ensemble, d) for h, d in zip(hand, designed)],
            "relaxed_bound_round_1": sd_at_truth(ensemble, hand[0]) / relaxed_sd(ensemble, *rounds_out[0], keywords),
        }
    return out


def refit_spread(points, draws: int, boot_draws: int, bootstrap: int, starts) -> dict:
    """Log N_opt at the target refit under fresh noise: its sd and 95 % range, and the mean bootstrap width."""
    estimates, widths = [], []
    for k in range(draws):
        data = grid.add(
            pd.DataFrame(columns=["params", "tokens", "loss", "flops"]), points, np.random.default_rng([99, k])
        )
        law = fit_approach3(data["params"], data["tokens"], data["loss"], starts)
        estimates.append(
            float(np.log(compute_optimal(grid.TARGET_FLOPS, law["A"], law["B"], law["alpha"], law["beta"])[0]))
        )
        if k < boot_draws:
            low, high = grid.interval(grid.fit(data, bootstrap, starts, k)[1])
            widths.append(float(high - low))
    estimates = np.array(estimates)
    estimates = estimates[np.isfinite(estimates)]
    low, high = np.percentile(estimates, [2.5, 97.5])
    return {"refit_width": float(high - low), "bootstrap_width": float(np.mean(widths))}


def shown(seeds: int, draws: int, boot_draws: int, bootstrap: int) -> dict:
    """Part 2: per study, the final ladders' sampling width, linearised width and bootstrap width."""
    ensemble, starts = truth_ensemble(), start_grid(3)
    hand = hand_rounds(3)[0][-1]
    hand_figures = {
        **refit_spread(hand, draws, boot_draws, bootstrap, starts),
        "linearised_width": 3.92 * grid.NOISE * sd_at_truth(ensemble, hand),
    }
    studies = []
    for seed in range(seeds):
        result = grid.one_seed(seed, 3, bootstrap, starts)
        suggested = np.vstack([start_points(), *[np.reshape(e["picked"], (-1, 2)) for e in result["rounds"]]])
        figures = refit_spread(suggested, draws, boot_draws, bootstrap, starts)
        figures["linearised_width"] = 3.92 * grid.NOISE * sd_at_truth(ensemble, suggested)
        figures["seed"], figures["bench_ratio"] = seed, result["ratio"]
        studies.append(figures)
        print(f"seed {seed}: {json.dumps(figures)}", file=sys.stderr, flush=True)

    def median_ratio(key):
        return float(np.median([hand_figures[key] / s[key] for s in studies]))

    return {
        "hand": hand_figures,
        "per_seed": studies,
        "median_ratio_refit_width": median_ratio("refit_width"),
        "median_ratio_linearised_width": median_ratio("linearised_width"),
        "median_ratio_bootstrap_width": median_ratio("bootstrap_width"),
        "median_bench_ratio": float(np.median([s["bench_ratio"] for s in studies])),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--draws", type=int, default=40)
    parser.add_argument("--boot-draws", type=int, default=8)
    parser.add_argument("--bootstrap", type=int, default=60)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    summary = {
        "bench": "suggest_ceiling",
        "truth": "chinchilla",
        "noise": grid.NOISE,
        "target_flops": grid.TARGET_FLOPS,
    }
    summary["ceiling"] = ceiling()
    print(f"ceiling: {json.dumps(summary['ceiling'])}", file=sys.stderr, flush=True)
    summary["shown"] = shown(args.seeds, args.draws, args.boot_draws, args.bootstrap)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
