"""`scalelab check CONFIG`: validate a config file and list its runs and the FLOPs they spend."""
from __future__ import annotations

from pathlib import Path

from . import wsd
from .config import load, source_files
from .grid import expand_grid


def add_arguments(parser) -> None:
    parser.add_argument("config", help="a study config (YAML)")


def run(args) -> None:
    config = load(args.config)
    source_files(config, Path(args.config).resolve().parent)
    runs = expand_grid(config)
    print(f"{args.config}: valid, {len(runs)} runs")
    for r in runs:
        budget = f"  isoflop budget {r.spec['isoflop_budget']:.3g}" if r.spec["isoflop_budget"] else ""
        print(f"  {r.id}: {r.model} ({r.spec['n_layer']}x{r.spec['d_model']}), {r.tokens:,} tokens, seed {r.seed}{budget}")
    print(wsd.flops_line(config, runs))
