"""Synthetic runs drawn from a known law, numpy only: the one generator that tests and benchmarks share.

Three shapes of study, each returned as a dict of equal-length numpy arrays (the columns of a
metrics CSV; `pandas.DataFrame(d)` makes the table):

- `ladder`: every model size trained at every token count (Approach 3's grid).
- `isoflop`: at each compute budget C, model sizes spread geometrically around the law's
  compute-optimal N, each trained on D = C / (6 N) tokens (Approach 2's IsoFLOP profiles).
- `hparam_sweep`: at each (N, D), one hyperparameter (e.g. the peak learning rate) swept over a
  geometric grid; the loss is the law's plus a U in log(value) centred on a known optimum
  `optimum = coefficient · N^exponent`.

Noise is multiplicative and log-normal: loss · exp(Normal(0, noise)), so noise=0.01 is 1 %.
"""

from __future__ import annotations

import numpy as np

from .law import compute_optimal, predict_loss

# The Approach 3 fit of Hoffmann et al. (2022): E, A, B, alpha, beta.
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def _noisy(loss, noise, rng):
    return loss * np.exp(rng.normal(0, noise, np.size(loss))) if noise else np.asarray(loss, float)


def ladder(n_sizes=6, n_tokens=6, noise=0.0, seed=0, law=CHINCHILLA, sizes=(1e7, 3e9), tokens=(1e8, 1e11)):
    """Every one of `n_sizes` model sizes (geometric in `sizes`) at every one of `n_tokens` token
    counts (geometric in `tokens`). Columns: run, params, tokens, flops (6·N·D), loss."""
    params, tok = np.meshgrid(np.geomspace(*sizes, n_sizes), np.geomspace(*tokens, n_tokens))
    params, tok = params.ravel(), tok.ravel()
    rng = np.random.default_rng(seed)
    loss = _noisy(predict_loss(params, tok, **law), noise, rng)
    return {
        "run": np.array([f"r{i}" for i in range(params.size)]),
        "params": params,
        "tokens": tok,
        "flops": 6 * params * tok,
        "loss": loss,
    }


def optimal_params(flops, law=CHINCHILLA):
    """The law's compute-optimal model size at `flops` (C = 6·N·D)."""
    return compute_optimal(flops, law["A"], law["B"], law["alpha"], law["beta"])[0]


def isoflop(budgets, span=100.0, n_sizes=15, noise=0.0, seed=0, law=CHINCHILLA, offset=1.0):
    """IsoFLOP profiles: at each budget, `n_sizes` sizes geometric over a factor `span` in N,
    centred (in log N) on `offset` times the law's optimal N. Columns: run, params, tokens,
    flops, isoflop_budget, loss."""
    rows = {"params": [], "budget": []}
    for flops in budgets:
        centre = optimal_params(flops, law) * offset
        sizes = centre * np.geomspace(1 / np.sqrt(span), np.sqrt(span), n_sizes)
        rows["params"] += list(sizes)
        rows["budget"] += [float(flops)] * n_sizes
    params, budget = np.array(rows["params"]), np.array(rows["budget"])
    tokens = budget / (6 * params)
    rng = np.random.default_rng(seed)
    loss = _noisy(predict_loss(params, tokens, **law), noise, rng)
    return {
        "run": np.array([f"iso-{c:.0e}-{i}" for i, c in enumerate(budget)]),
        "params": params,
        "tokens": tokens,
        "flops": budget.copy(),
        "isoflop_budget": budget,
        "loss": loss,
    }


def hparam_optimum(params, coefficient, exponent):
    """The sweep's true optimum: coefficient · N^exponent."""
    return coefficient * np.asarray(params, float) ** exponent


def hparam_sweep(
    params,
    tokens,
    values,
    coefficient=0.3,
    exponent=-0.3,
    curvature=0.02,
    noise=0.0,
    seed=0,
    law=CHINCHILLA,
    key="lr",
    seeds=1,
):
    """One hyperparameter `key` swept over `values` at each (params[i], tokens[i]) pair, `seeds`
    runs per value. loss = law(N, D) + curvature · (log value - log optimum(N))^2, with
    optimum(N) = coefficient · N^exponent, times the noise. Columns: run, params, tokens, flops,
    seed, <key>, loss, sweep_group, best_in_sweep (the lowest loss of each (N, D, seed) group)."""
    params, tokens = np.broadcast_arrays(np.asarray(params, float), np.asarray(tokens, float))
    values = np.asarray(values, float)
    n_grid, n_values = params.size, values.size
    p = np.repeat(params.ravel(), n_values * seeds)
    d = np.repeat(tokens.ravel(), n_values * seeds)
    s = np.tile(np.repeat(np.arange(seeds), n_values), n_grid)
    v = np.tile(values, n_grid * seeds)
    clean = predict_loss(p, d, **law) + curvature * (np.log(v) - np.log(hparam_optimum(p, coefficient, exponent))) ** 2
    rng = np.random.default_rng(seed)
    loss = _noisy(clean, noise, rng)
    group = np.repeat(np.arange(n_grid * seeds), n_values)
    best = np.zeros(loss.size, dtype=bool)
    for g in range(n_grid * seeds):
        where = np.flatnonzero(group == g)
        best[where[np.argmin(loss[where])]] = True
    return {
        "run": np.array([f"sw{i}" for i in range(loss.size)]),
        "params": p,
        "tokens": d,
        "flops": 6 * p * d,
        "seed": s,
        key: v,
        "loss": loss,
        "sweep_group": np.array([f"g{g}" for g in group]),
        "best_in_sweep": best,
    }


# A downstream task of the two-step truth (Bhagia et al. 2024): a task loss that is an affine
# function of the loss, then accuracy = chance + (ceiling - chance) · sigmoid(-k (task loss - midpoint)).
EXAMPLE_TASK = {
    "chance": 0.25,
    "ceiling": 0.85,
    "k": 8.0,
    "midpoint": 1.3,
    "offset": 0.1,
    "slope": 0.5,
    "items": 1000,
    "loss_noise": 0.005,
}


def task_loss(params, tokens, task=EXAMPLE_TASK, law=CHINCHILLA):
    """The task's true loss at (N, D): offset + slope · the law's loss."""
    return task["offset"] + task["slope"] * predict_loss(np.asarray(params, float), np.asarray(tokens, float), **law)


def task_accuracy(params, tokens, task=EXAMPLE_TASK, law=CHINCHILLA):
    """The task's expected accuracy at (N, D) (before evaluation noise)."""
    x = task["k"] * (task_loss(params, tokens, task, law) - task["midpoint"])
    return task["chance"] + (task["ceiling"] - task["chance"]) / (1 + np.exp(x))


def with_task(runs: dict, name: str, task=EXAMPLE_TASK, seed=0, law=CHINCHILLA) -> dict:
    """`runs` (a dict of columns with params and tokens) plus the columns `name` (accuracy on
    task["items"] questions, binomial noise) and `name`_loss (the task loss, log-normal noise)."""
    rng = np.random.default_rng(seed)
    params, tokens = np.asarray(runs["params"], float), np.asarray(runs["tokens"], float)
    correct = rng.binomial(task["items"], task_accuracy(params, tokens, task, law))
    return {
        **runs,
        name: correct / task["items"],
        f"{name}_loss": _noisy(task_loss(params, tokens, task, law), task["loss_noise"], rng),
    }
