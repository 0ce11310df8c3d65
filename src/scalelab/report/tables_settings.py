"""Tables of what produced the numbers: the study's settings (the resolved config) and the
corpus, tokenizer and software."""

from __future__ import annotations

import platform

from ..version import __version__
from .fmt import human, num
from .inputs import Study
from .tables import Cell, Table, blank_repeats, new_table


SETTINGS_SECTIONS = ("data", "models", "grid", "train", "eval", "fit", "report", "code")


def _setting_rows(section: str, value, prefix: str = "") -> list[tuple[str, str, str]]:
    """(section, dotted key, value text) for every leaf of a settings section."""
    if isinstance(value, dict) and value and not (section == "models" and prefix):
        rows = []
        for key, item in value.items():
            rows += _setting_rows(section, item, f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(value, dict):  # a model's shape on one line; an empty section as {}
        text = ", ".join(f"{k} {_setting_text(v)}" for k, v in value.items()) or "{}"
    else:
        text = _setting_text(value)
    return [(section, prefix or "–", text)]


def _setting_text(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_setting_text(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def _train_rows(per_model: dict) -> list[tuple[str, str, str]]:
    """Each train setting once: its value when every model has it, else the value per model."""
    keys = list(dict.fromkeys(k for settings in per_model.values() for k in settings))
    rows = []
    for key in keys:
        texts = {model: _setting_text(settings.get(key)) for model, settings in per_model.items()}
        shown = (
            next(iter(texts.values()))
            if len(set(texts.values())) == 1
            else "; ".join(f"{model}: {text}" for model, text in texts.items())
        )
        rows.append(("train", key, shown))
    return rows


def table_settings(s: Study) -> Table:
    table = new_table("settings", ["section", "setting", "value"])
    settings = s.study_settings
    if not settings:
        table.notes.append(
            "No study settings were given to `scalelab report` (--settings); the workflow passes "
            "them from the resolved config."
        )
        return table
    rows = []
    for section in [*SETTINGS_SECTIONS, *(k for k in settings if k not in SETTINGS_SECTIONS)]:
        if section not in settings:
            continue
        if section == "train" and isinstance(settings["train"], dict):
            rows += _train_rows(settings["train"])
        else:
            rows += _setting_rows(section, settings[section])
    table.rows = [[Cell(section), Cell(key), Cell(value)] for section, key, value in rows]
    table.notes.append(
        "From the study's config after validation filled every default and each model's overrides "
        "were applied; code: the fingerprint of each stage's code (`scalelab --version`)."
    )
    return blank_repeats(table)


def _flat(value) -> str:
    """A meta.json entry in one line: nested objects as `key: value`, lists joined."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_flat(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value)
    big = isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) >= 1e4
    return human(value) if big else str(value)


def _meta_rows(meta: dict) -> list[tuple[str, str]]:
    rows = [(key, _flat(meta[key])) for key in ("corpus", "tokenizer", "format", "vocab_size", "dtype") if key in meta]
    for split, info in (meta.get("splits") or {}).items():
        if isinstance(info, dict):
            rows.append(
                (
                    f"{split} split",
                    ", ".join(f"{human(info[k])} {k}" for k in ("documents", "tokens", "bytes") if k in info),
                )
            )
    if isinstance(meta.get("bytes_per_token"), dict):
        rows.append(("bytes per token", ", ".join(f"{k} {num(v)}" for k, v in meta["bytes_per_token"].items())))
    return rows


def _software() -> str:
    import matplotlib
    import numpy as np
    import pandas as pd

    return (
        f"scalelab {__version__}, python {platform.python_version()}, numpy {np.__version__}, "
        f"pandas {pd.__version__}, matplotlib {matplotlib.__version__}"
    )


def table_reproducibility(s: Study) -> Table:
    table = new_table("reproducibility", ["what", "value"])
    rows = []
    if s.meta is None:
        table.notes.append(f"{s.meta_path} was not found, so the corpus and tokenizer are not described.")
    else:
        rows += _meta_rows(s.meta)
    for column, what in (("torch_version", "torch (training)"), ("lightning_version", "lightning (training)")):
        if column in s.metrics.columns:
            versions = sorted({str(v) for v in s.metrics[column].dropna()})
            rows.append((what, ", ".join(versions) if versions else "–"))
    rows.append(("fit", f"target {s.target}, N column {s.n_col}, D column {s.d_col}, C column {s.c_col}"))
    rows.append(("report software", _software()))
    table.rows = [[Cell(what), Cell(value)] for what, value in rows]
    return table
