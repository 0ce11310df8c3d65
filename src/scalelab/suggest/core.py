"""`suggest_runs`: from the runs done and the fit's ensemble to the table of suggested runs."""
from __future__ import annotations

import pandas as pd

from .candidates import Costs, candidates
from .design import Design, Ensemble, choose

TABLE_COLUMNS = ["params", "tokens", "flops", "expected_width_after", "expected_loss_width_after"]


def suggest_runs(ensemble: Ensemble, points: pd.DataFrame, target_flops: float, budget_flops: float,
                 max_runs: int, extra_sizes=(), cooldown: float | None = None, realise=None,
                 tokens_per_step: int | None = None, max_tokens: int | None = None) -> tuple[pd.DataFrame, Design]:
    """The suggested runs (one row each, in the order of what they add) and the design behind them.

    `points` has the runs done: params, tokens and, when the CSV has one, flops (their FLOPs per
    token price new runs; otherwise 6·N per token). `cooldown` (WSD's) makes runs of one size
    share a trunk. `realise(N)` maps a new size to the parameters of the shape that would be
    built for it, and `tokens_per_step` rounds new token counts up to whole optimizer steps, so the
    runs suggested are exactly the runs a config can train.
    """
    done_params = points["params"].to_numpy(float)
    done_tokens = points["tokens"].to_numpy(float)
    per_token = (points["flops"].to_numpy(float) / done_tokens) if "flops" in points else None
    cand_params, cand_tokens = candidates(done_params, done_tokens, extra_sizes, realise, tokens_per_step)
    if max_tokens:  # the corpus cannot feed more (a config without data.allow_repeat)
        fits = cand_tokens <= max_tokens
        cand_params, cand_tokens = cand_params[fits], cand_tokens[fits]
    costs = Costs(done_params, done_tokens, cand_params, cand_tokens, per_token, cooldown)
    design = choose(ensemble, done_params, done_tokens, cand_params, cand_tokens, target_flops, budget_flops,
                    max_runs, costs)
    rows, so_far = [], []
    for i, width, loss_width in zip(design.chosen, design.width_after, design.loss_width_after):
        # A run's FLOPs: what it adds to the runs before it (under WSD a shared trunk is paid once).
        before = costs(so_far)
        so_far.append(i)
        rows.append({"params": float(cand_params[i]), "tokens": float(cand_tokens[i]),
                     "flops": costs(so_far) - before, "expected_width_after": width,
                     "expected_loss_width_after": loss_width})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS), design
