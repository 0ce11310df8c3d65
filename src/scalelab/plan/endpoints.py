"""Predicted endpoints (`grid.trained_cooldowns`): a WSD study that trains its trunks in full but only
the cooldowns at some token counts, and fits L(N, D) with the curve law's predicted final loss for
the other runs (scalelab.curves.endpoints writes them, marked `predicted`).

`split_runs(config, runs)` says which runs are trained and which are predicted, after checking the
setting: one line naming the key when it cannot work. A size with fewer than two runs at the listed
counts (IsoFLOP-only, or a new size in grid.extra) trains all its runs. Without the key every run is trained and
nothing here changes the plan. Imported at DAG-build time: standard library only.
"""

from __future__ import annotations

from ..config.counts import parse_count
from ..errors import ScalelabError
from . import wsd

KEY = "grid.trained_cooldowns"
MIN_TRAINED = 2  # per family: one cooldown cannot tell how the annealing gain grows with its length


def trained_tokens(config: dict) -> list[int] | None:
    """The token counts whose cooldowns are trained (None: the key is absent, every run is trained)."""
    values = (config.get("grid") or {}).get("trained_cooldowns")
    if values is None:
        return None
    return [parse_count(v, f"{KEY}[{i}]") for i, v in enumerate(values)]


def split_runs(config: dict, runs) -> tuple[list[str], list[str]]:
    """(the ids of the runs to train, the ids of the runs whose endpoint is predicted), in grid order.
    `runs`: grid.Run objects. ScalelabError (one line, naming the key) for a setting that cannot work."""
    runs = list(runs)
    tokens = trained_tokens(config)
    if tokens is None:
        return [run.id for run in runs], []
    grid_tokens = config["grid"]["tokens"]
    for value in tokens:
        if value not in grid_tokens:
            raise ScalelabError(
                f"config: {KEY}: {value:,} is not one of grid.tokens ({', '.join(f'{t:,}' for t in grid_tokens)})"
            )
    not_wsd = next((run for run in runs if not wsd.is_wsd(run.spec)), None)
    if not_wsd is not None:
        raise ScalelabError(
            f"config: {KEY}: predicted endpoints need train.schedule: wsd (trunks whose curves the law reads); "
            f"run {not_wsd.id} has schedule {not_wsd.spec['schedule']}"
        )
    if len(set(tokens)) < MIN_TRAINED:
        raise ScalelabError(
            f"config: {KEY}: name at least {MIN_TRAINED} token counts; the curve law needs two cooldowns "
            f"of every size to fit how a cooldown's gain grows with its length"
        )
    # A size (WSD family) with fewer than MIN_TRAINED cooldowns at the listed counts (an IsoFLOP-only
    # model, or a new size in grid.extra as `scalelab suggest` writes it) has nothing for the curve law
    # to predict from: all its runs are trained.
    listed: dict[str, int] = {}
    for run in runs:
        listed[wsd.family_id(run.spec)] = listed.get(wsd.family_id(run.spec), 0) + (run.tokens in tokens)
    trained = [run.id for run in runs if run.tokens in tokens or listed[wsd.family_id(run.spec)] < MIN_TRAINED]
    return trained, [run.id for run in runs if run.id not in trained]


def predicted_line(config: dict, runs, predicted: list[str]) -> str:
    """`scalelab check`'s line: the cooldowns not trained and the FLOPs they would have cost."""
    from .shapes import GPTConfig, flops_per_token

    vocab = config["data"]["tokenizer"]["vocab_size"]
    saved = 0.0
    for run in (r for r in runs if r.id in predicted):
        spec = run.spec
        shape = GPTConfig(vocab, spec["context"], spec["n_layer"], spec["d_model"], spec["n_head"])
        steps = wsd.total_steps(spec) - wsd.branch_step(spec)
        saved += steps * spec["batch_size"] * spec["context"] * flops_per_token(shape)[0]
    return (
        f"  predicted endpoints ({KEY}): {len(predicted)} run(s) not trained, their cooldowns' {saved:.4g} FLOPs "
        f"not spent (the trunks are trained in full); the FLOPs above count every run"
    )
