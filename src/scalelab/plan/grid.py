"""The grid: every run of a study (models x tokens x seeds, IsoFLOP points, sweeps), its `Run`
record, its id and its spec (the run's identity, byte for byte).

Imported at DAG-build time: no torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from . import wsd
from ..data.corpus import data_fingerprint
from ..config.counts import parse_count, run_id
from ..errors import ScalelabError
from .shapes import non_embedding_params
from ..config.sweeps import NOT_IDENTITY, model_sweep, sweep_combos, sweep_suffix, train_settings


@dataclass(frozen=True)
class Run:
    """One grid point. `spec` holds exactly the values that decide the run (plain JSON types)."""

    id: str
    model: str
    tokens: int
    seed: int
    spec: dict
    sweep: dict = field(default_factory=dict)  # the swept keys' values of this run ({} outside a sweep)

    @property
    def group(self) -> str:
        """Its sweep group: the grid point (model, requested tokens, seed), i.e. the id without the suffix."""
        return run_id(self.model, self.tokens, self.seed)

    @property
    def spec_json(self) -> str:
        return json.dumps(self.spec, sort_keys=True)


def sweep_keys(runs) -> list[str]:
    """Every key swept in these runs, in alphabetical order ([] for a study without sweeps)."""
    return sorted({key for run in runs for key in run.sweep})


def spec_settings(settings: dict) -> dict:
    """The train settings that enter a run's spec: none of NOT_IDENTITY, and the cooldown keys only
    under schedule: wsd (wsd.run_settings), so other specs stay as they were."""
    return wsd.run_settings({k: v for k, v in settings.items() if k not in NOT_IDENTITY})


def isoflop_tokens(budget: int, params: int, batch_size: int, context: int) -> int:
    """D = C / (6 N), rounded to whole optimizer steps (at least one)."""
    tokens_per_step = batch_size * context
    steps = max(1, round(budget / (6 * params) / tokens_per_step))
    return steps * tokens_per_step


MAX_RUNS = 10_000  # grid.max_runs' default (the schema's): runs of a whole study


def grid_size(config: dict) -> int:
    """An upper bound of the study's runs (before de-duplication), counted without building them."""
    grid = config["grid"]
    isoflop = grid.get("isoflop") or {}
    isoflop_models = set(isoflop.get("models") or grid["models"]) if isoflop else set()
    total = 0
    for model in set(grid["models"]) | isoflop_models:
        points = (len(grid["tokens"]) if model in grid["models"] else 0) + (
            len(isoflop["budgets"]) if model in isoflop_models else 0
        )
        combos = math.prod(len(values) for _, values in model_sweep(config, model).values())
        total += points * len(grid["seeds"]) * combos
    return total + len(grid.get("extra") or []) * len(grid["seeds"])


def check_grid_size(config: dict) -> None:
    """A grid larger than grid.max_runs is refused in one line, before any run is built: Snakemake
    needs minutes and gigabytes to plan 10^5 jobs, and nobody means to train them by mistake."""
    size, ceiling = grid_size(config), config["grid"].get("max_runs", MAX_RUNS)
    if size > ceiling:
        raise ScalelabError(
            f"config: grid: up to {size:,} runs (models x tokens x seeds x sweep combinations), more "
            f"than grid.max_runs ({ceiling:,}); shrink the grid, or raise grid.max_runs"
        )


def _trained(step_settings: dict, tokens: int) -> int:
    """The tokens that `tokens` trains: whole steps of batch_size x context."""
    step = step_settings["batch_size"] * step_settings["context"]
    return math.ceil(tokens / step) * step


def _grid_points(config: dict, settings: dict) -> dict[tuple[str, int, int], list]:
    """(model, trained tokens, seed) -> [requested tokens, isoflop budget]: two requests that train
    the same number of whole steps are one run (the first one's id), never two identical runs."""
    grid, models = config["grid"], config["models"]
    points: dict[tuple[str, int, int], list] = {}
    for model in grid["models"]:
        for i, value in enumerate(grid["tokens"]):
            tokens = parse_count(value, f"grid.tokens[{i}]")
            for seed in grid["seeds"]:
                points.setdefault((model, _trained(settings[model], tokens), seed), [tokens, None])
    # Single runs beside the grid (grid.extra, as `scalelab suggest` writes them), at every seed.
    for i, item in enumerate(grid.get("extra") or []):
        tokens = parse_count(item["tokens"], f"grid.extra[{i}].tokens")
        for seed in grid["seeds"]:
            points.setdefault((item["model"], _trained(settings[item["model"]], tokens), seed), [tokens, None])
    if grid.get("isoflop"):
        for i, value in enumerate(grid["isoflop"]["budgets"]):
            budget = parse_count(value, f"grid.isoflop.budgets[{i}]")
            for model in grid["isoflop"].get("models") or grid["models"]:
                params = non_embedding_params(models[model]["n_layer"], models[model]["d_model"])
                tokens = isoflop_tokens(budget, params, settings[model]["batch_size"], settings[model]["context"])
                for seed in grid["seeds"]:
                    points.setdefault((model, _trained(settings[model], tokens), seed), [tokens, None])[1] = budget
    return points


def _swept_points(config: dict, points: dict) -> dict[tuple, list]:
    """Each grid point, once per combination of the model's swept values (once when none are); a
    combination that trains the same whole steps for two requests is again one run.
    (model, combo, trained tokens, seed) -> [requested tokens, isoflop budget, combo, its settings]."""
    combos = {name: sweep_combos(config, name) for name in {model for model, _, _ in points}}
    expanded: dict[tuple, list] = {}
    for (model, _, seed), (tokens, budget) in points.items():
        for combo, combo_settings in combos[model]:
            key = (model, tuple(sorted(combo.items())), _trained(combo_settings, tokens), seed)
            entry = expanded.setdefault(key, [tokens, None, combo, combo_settings])
            if budget is not None:
                entry[1] = budget
    return expanded


def expand_grid(config: dict, vocab_size: int | None = None) -> list[Run]:
    """Every run of the study: models x tokens x seeds, plus grid.extra and the IsoFLOP runs, de-duplicated."""
    check_grid_size(config)
    models = config["models"]
    vocab_size = vocab_size or config["data"]["tokenizer"]["vocab_size"]
    settings = {name: spec_settings(train_settings(config, name)) for name in models}
    expanded = _swept_points(config, _grid_points(config, settings))
    fingerprint = data_fingerprint(config)
    runs = []
    for (model, _, _, seed), (tokens, budget, combo, combo_settings) in expanded.items():
        shape = models[model]
        spec = {
            "run": run_id(model, tokens, seed) + sweep_suffix(combo),
            "model": model,
            "n_layer": shape["n_layer"],
            "d_model": shape["d_model"],
            "n_head": shape["n_head"],
            "tokens": tokens,
            "seed": seed,
            "isoflop_budget": budget,
            "data": fingerprint,
            **spec_settings(combo_settings),
        }
        runs.append(Run(spec["run"], model, tokens, seed, spec, dict(combo)))
    check_unique_ids(runs)
    wsd.plan_families(runs, config)  # WSD runs must be able to branch from their trunks: checked now, one line
    return runs


def check_unique_ids(runs) -> None:
    """Two different runs under one id would share a folder: refused, naming both (lossless ids make
    this unreachable today; the guard keeps the invariant if the id rule ever changes)."""
    seen: dict[str, Run] = {}
    for run in runs:
        other = seen.setdefault(run.id, run)
        if other is not run:
            where = "grid.sweep" if run.sweep or other.sweep else "grid"
            raise ScalelabError(
                f"config: {where}: two runs would share the id {run.id!r} "
                f"({json.dumps(other.sweep or other.tokens)} and {json.dumps(run.sweep or run.tokens)})"
            )
