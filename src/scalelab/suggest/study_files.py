"""The study's own files for `scalelab suggest` run by hand: its config and its corpus's meta.json.

The workflow's rule passes the model shapes, the step and the WSD cooldown in --spec; a user who
types the README's command passes only the CSV. So the study's config is looked for beside the
results folder the CSV lives in (CONFIG_NAMES under the folder above it), or given with --config,
and the same spec the rule passes is built from it (scalelab.plan.resolved.suggest_spec). Without
shapes the suggested sizes cannot be trained as they stand: that is one line, naming what to pass.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ScalelabError

CONFIG_NAMES = ("config/config.yaml", "config.yaml")  # `make run`'s layout, then a study folder's


def find_config(metrics) -> Path | None:
    """The study's config beside the results folder holding `metrics` (None when there is none)."""
    folder = Path(metrics).resolve().parent
    for root in (folder.parent, folder):
        for name in CONFIG_NAMES:
            if (root / name).is_file():
                return root / name
    return None


def find_meta(metrics) -> Path | None:
    """results/data/meta.json beside the metrics CSV, as the workflow writes it (None when absent)."""
    meta = Path(metrics).resolve().parent / "data" / "meta.json"
    return meta if meta.is_file() else None


def config_spec(path) -> dict:
    """The --spec the workflow's suggest rule passes, built from the study's config file."""
    from ..config import load as config_file
    from ..plan.resolved import suggest_spec

    return suggest_spec(config_file.load(path))


def study_values(values: dict, metrics, config_path=None) -> tuple[dict, Path | None]:
    """`values` (from --spec and the flags, which win) completed from the study's config; and the
    config used. ScalelabError when no shapes can be had."""
    if values.get("models"):
        return values, None
    path = Path(config_path) if config_path else find_config(metrics)
    if path is None:
        raise ScalelabError(
            f"{metrics}: no study config beside it to build model shapes from: pass --config CONFIG_YAML "
            "(the study's config) or the shapes in --spec '{\"models\": {...}}'"
        )
    if not path.is_file():
        raise ScalelabError(f"--config {path}: no such file")
    return {**config_spec(path), **values}, path
