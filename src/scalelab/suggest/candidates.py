"""Candidate runs and what a set of them costs.

Candidates are (N, D) pairs: N one of the study's sizes, a size the user names (`--sizes`), or one
or two sqrt(2) steps beyond the sizes at either end; D one of the study's token counts or on a
sqrt(2) grid from the smallest D to 16x the largest. Pairs the study already ran are left out.

A set's cost is C = (FLOPs per token of its size) x D per run, where the FLOPs per token come from
the CSV's own flops / tokens (interpolated in log N for a new size, as 6·N otherwise). Under
`schedule: wsd` runs of one size share a trunk (scalelab.plan.wsd: a run of D tokens branches off it
at (1 - cooldown)·D, and the trunk's state is kept at every branch point), so a new D costs the
trunk from the branch point before its own (a run's, or 0) to its own, plus its cooldown: little
for a D inside a size's range, and a trunk shared by every new D of a new size. Where the study allows
predicted endpoints (config grid.trained_cooldowns, `scalelab suggest --curves`), a new D of a size it
ran costs its trunk extension alone: its cooldown is not trained, the curve law predicts its endpoint.
"""

from __future__ import annotations

import numpy as np

ROOT2 = np.sqrt(2.0)
SAME = 0.02  # sizes or token counts within 2 % are one value
MAX_TOKEN_REACH = 16  # the token grid reaches 16x the largest D


def _distinct(values) -> np.ndarray:
    values = np.sort(np.asarray(values, float))
    out = []
    for value in values:
        if not out or value > out[-1] * (1 + SAME):
            out.append(value)
    return np.array(out)


def _contains(values, value) -> bool:
    values = np.asarray(values, float)
    return bool(len(values)) and bool(np.any(np.abs(values / value - 1) <= SAME))


def candidate_sizes(study_sizes, extra_sizes=(), realise=None) -> np.ndarray:
    """The study's sizes, the user's, and one or two sqrt(2) steps beyond either end; a new size
    becomes the size of the shape that would be built for it (`realise`) when there is one."""
    sizes = _distinct(study_sizes)
    new = [*extra_sizes, sizes[-1] * ROOT2, sizes[-1] * 2, sizes[0] / ROOT2, sizes[0] / 2]
    new = [
        value
        for value in (realise(v) if realise else v for v in new)
        if value is not None and not _contains(sizes, value)
    ]
    return _distinct([*sizes, *new])


def candidate_tokens(study_tokens, tokens_per_step=None) -> np.ndarray:
    """The study's token counts, and a sqrt(2) grid from the smallest to MAX_TOKEN_REACH x the
    largest (rounded up to whole optimizer steps when `tokens_per_step` is given)."""
    tokens = _distinct(study_tokens)
    steps = int(np.ceil(np.log(tokens[-1] * MAX_TOKEN_REACH / tokens[0]) / np.log(ROOT2)))
    grid = tokens[0] * ROOT2 ** np.arange(steps + 1)
    # Two significant digits, as a config writes them (1.6M, 23M); at least one optimizer step.
    scale = 10.0 ** (np.floor(np.log10(grid)) - 1)
    grid = np.round(grid / scale) * scale
    if tokens_per_step:
        grid = np.maximum(grid, tokens_per_step)
    grid = np.round(grid)  # whole tokens
    merged = list(tokens)
    for value in grid:
        if not _contains(merged, value):
            merged.append(value)
    return _distinct(merged)


def candidates(done_params, done_tokens, extra_sizes=(), realise=None, tokens_per_step=None):
    """(N, D) candidate arrays: every size x every token count, less the pairs already run."""
    sizes = candidate_sizes(done_params, extra_sizes, realise)
    tokens = candidate_tokens(done_tokens, tokens_per_step)
    done = np.column_stack([np.asarray(done_params, float), np.asarray(done_tokens, float)])
    pairs = [
        (n, d)
        for n in sizes
        for d in tokens
        if not np.any((np.abs(done[:, 0] / n - 1) <= SAME) & (np.abs(done[:, 1] / d - 1) <= SAME))
    ]
    pairs = np.array(pairs, float).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def flops_per_token(done_params, done_flops_per_token, params) -> np.ndarray:
    """FLOPs per token of size N: the study's own where it ran N, interpolated (in log N, as a ratio
    to 6·N) between its sizes and held at the nearest end beyond them; 6·N without a flops column."""
    params = np.asarray(params, float)
    if done_flops_per_token is None:
        return 6 * params
    sizes, ratios = [], []
    done_params = np.asarray(done_params, float)
    for size in _distinct(done_params):
        near = np.abs(done_params / size - 1) <= SAME
        sizes.append(size)
        ratios.append(float(np.median(np.asarray(done_flops_per_token, float)[near] / (6 * done_params[near]))))
    ratio = np.interp(np.log(params), np.log(sizes), ratios)
    return 6 * params * ratio


class Costs:
    """The FLOPs of a set of candidate runs, plain or under WSD (trunks shared by size)."""

    def __init__(
        self,
        done_params,
        done_tokens,
        cand_params,
        cand_tokens,
        done_flops_per_token=None,
        cooldown: float | None = None,
        predicted=None,
    ):
        self.cand_params = np.asarray(cand_params, float)
        self.cand_tokens = np.asarray(cand_tokens, float)
        self.per_token = flops_per_token(done_params, done_flops_per_token, self.cand_params)
        self.cooldown = cooldown
        # predicted endpoints (WSD): these candidates' cooldowns are not trained, only their trunk extension
        self.predicted = np.zeros(len(self.cand_params), bool) if predicted is None else np.asarray(predicted, bool)
        # Under WSD: the trunk points (in tokens) whose state each candidate's size already has.
        done_params, done_tokens = np.asarray(done_params, float), np.asarray(done_tokens, float)
        self.kept = [
            (1 - cooldown) * done_tokens[np.abs(done_params / size - 1) <= SAME]
            if cooldown is not None
            else np.empty(0)
            for size in self.cand_params
        ]

    def single(self, i) -> float:
        return float(self(np.array([i])))

    def __call__(self, chosen) -> float:
        chosen = np.asarray(chosen, int)
        if not len(chosen):
            return 0.0
        if self.cooldown is None:
            return float(np.sum(self.per_token[chosen] * self.cand_tokens[chosen]))
        total = 0.0
        sizes = self.cand_params[chosen]
        for size in _distinct(sizes):
            group = chosen[np.abs(sizes / size - 1) <= SAME]
            new = np.sort((1 - self.cooldown) * self.cand_tokens[group])
            points = np.concatenate([[0.0], self.kept[group[0]], new])
            # Each new branch point trains the trunk from the point before it, kept or new.
            trunk = sum(point - points[points < point].max() for point in new)
            cooled = self.cand_tokens[group][~self.predicted[group]].sum()
            total += self.per_token[group[0]] * (trunk + self.cooldown * cooled)
        return float(total)
