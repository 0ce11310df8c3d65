"""`scalelab check CONFIG`: validate a config file and list its runs and the FLOPs they spend."""

from __future__ import annotations

from pathlib import Path

from . import endpoints, wsd
from ..config.load import load, source_files
from ..data.corpus_check import check_files
from .grid import expand_grid


LISTED_RUNS = 200  # runs listed one a line up to this many; larger grids are summarised per model


def runs_summary(runs) -> str:
    """One line per model: its run count and the span of its token counts and seeds."""
    by_model: dict[str, list] = {}
    for r in runs:
        by_model.setdefault(r.model, []).append(r)
    lines = []
    for model, own in by_model.items():
        tokens, seeds = [r.tokens for r in own], {r.seed for r in own}
        lines.append(f"  {model}: {len(own):,} runs, {min(tokens):,} to {max(tokens):,} tokens, {len(seeds)} seed(s)")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("config", help="a study config (YAML)")


def run(args) -> None:
    config = load(args.config)
    check_files(config["data"], source_files(config, Path(args.config).resolve().parent))
    runs = expand_grid(config)
    _, predicted = endpoints.split_runs(config, runs)  # grid.trained_cooldowns, checked
    print(f"{args.config}: valid, {len(runs)} runs")
    if len(runs) > LISTED_RUNS:  # a large grid: one line per model, not one per run
        print(runs_summary(runs))
    else:
        for r in runs:
            budget = f"  isoflop budget {r.spec['isoflop_budget']:.3g}" if r.spec["isoflop_budget"] else ""
            print(
                f"  {r.id}: {r.model} ({r.spec['n_layer']}x{r.spec['d_model']}), {r.tokens:,} tokens, "
                f"seed {r.seed}{budget}" + ("  (predicted, not trained)" if r.id in predicted else "")
            )
    print(wsd.flops_line(config, runs))
    if predicted:
        print(endpoints.predicted_line(config, runs, predicted))
