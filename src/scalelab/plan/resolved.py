"""The study's settings as resolved from its config, for the report's "Study settings" table.

`study_settings(config)` is what the report shows: the data, tokenizer, models, grid, every
model's train settings after its overrides, and the eval, fit and report settings, all after
validation filled the defaults, plus the code fingerprint of every stage. Built from the
validated config (never written by hand), so the page cannot drift from what ran. Plain JSON
types, in the config's order: the report rule passes it as one JSON param.
"""

from __future__ import annotations

import json

from ..config.sweeps import NOT_IDENTITY, train_settings
from ..store.fingerprint import STAGE_CODE, code_fingerprint


def study_settings(config: dict) -> dict:
    """{section: {key: value}} of a validated config, train settings per model."""
    grid = config["grid"]
    used = set(grid["models"]) | set((grid.get("isoflop") or {}).get("models") or [])
    models = [name for name in config["models"] if name in used]  # in the config's order
    settings = {
        "data": config["data"],
        "models": {name: config["models"][name] for name in models},
        "grid": grid,
        # without the keys that decide no number (train.logger): switching the logger reruns nothing
        "train": {name: _shown_train_settings(config, name) for name in models},
        "eval": config["eval"],
        "fit": config["fit"],
        "report": config.get("report") or {},
        "code": {stage: code_fingerprint(stage) for stage in STAGE_CODE},
    }
    return json.loads(json.dumps(settings, default=str))


def settings_lines(settings: dict) -> list[str]:
    """`section.key = value` per leaf of `study_settings`, values as compact JSON. The report rule
    passes these as its compared params, so that Snakemake's rerun reason names the setting that
    changed instead of printing the whole settings object twice."""
    lines = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            lines.append(f"{prefix} = {json.dumps(value, separators=(',', ':'))}")

    walk("", settings)
    return lines


def _shown_train_settings(config: dict, model: str) -> dict:
    settings = train_settings(config, model)
    return {key: value for key, value in settings.items() if key not in NOT_IDENTITY}


def suggest_spec(config: dict) -> dict:
    """`scalelab suggest --spec` of a validated config: its fit.suggest keys, and what the workflow knows
    that a CSV does not (the shapes, the step, and under WSD the cooldown, which lets runs share trunks).
    The suggest rule passes it; `scalelab suggest` builds it itself from the study's config at hand."""
    train = config["train"]
    spec = {k: v for k, v in (config["fit"].get("suggest") or {}).items() if v not in (None, [])}
    spec.update(
        models=config["models"],
        tokens_per_step=train["batch_size"] * train["context"],
        allow_repeat=config["data"]["allow_repeat"],
    )
    if train["schedule"] == "wsd":
        spec["cooldown"] = train["cooldown"]
    return spec
