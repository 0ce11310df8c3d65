"""Each setting has one default, in its dataclass; the schema repeats them only because
Snakemake's `validate` fills defaults in. These tests keep the two in agreement."""

from __future__ import annotations

import dataclasses

import pytest

from scalelab.config import load as study_config
from scalelab.config import counts, schema
from scalelab.config.stage_settings import (
    BLEU_TOKENIZERS,
    EVAL_TASKS,
    SUGGEST_CONFIG_KEYS,
    EvalSettings,
    FitSettings,
    ReportSettings,
    SuggestSettings,
)


def _schema_defaults(section: str) -> dict:
    properties = schema.load_schema()["properties"][section]["properties"]
    return {key: spec["default"] for key, spec in properties.items() if "default" in spec}


@pytest.mark.parametrize(
    "section, cls, skip",
    [
        ("eval", EvalSettings, {"device"}),  # device is derived from the run, not a config key
        # fit.select is a config key; fit.suggest is SuggestSettings' (below)
        ("fit", FitSettings, {"budgets", "sweep_keys", "grid_points", "workers", "suggest"}),
        ("report", ReportSettings, set()),
    ],
)
def test_schema_defaults_agree_with_the_settings_dataclasses(section, cls, skip):
    schema = _schema_defaults(section)
    fields = {f.name: f.default for f in dataclasses.fields(cls) if f.name not in skip}
    for key, default in schema.items():
        if key in skip:
            continue
        value = counts.parse_count(default, key) if key == "test_tokens" and default is not None else default
        assert key in fields, f"{section}.{key} has a schema default but no setting"
        assert fields[key] == value, f"{section}.{key}: schema {default!r}, {cls.__name__} {fields[key]!r}"
    assert set(fields) <= set(schema), f"{section}: settings without a schema default: {set(fields) - set(schema)}"


def test_fit_suggest_defaults_agree_with_suggest_settings():
    properties = schema.load_schema()["properties"]["fit"]["properties"]["suggest"]["properties"]
    assert tuple(properties) == SUGGEST_CONFIG_KEYS
    defaults = {f.name: f.default for f in dataclasses.fields(SuggestSettings)}
    for key, spec in properties.items():
        assert (tuple(spec["default"]) if isinstance(spec["default"], list) else spec["default"]) == defaults[key], key


def test_closed_sets_are_enums_in_the_schema():
    properties = schema.load_schema()["properties"]
    assert tuple(properties["eval"]["properties"]["task"]["enum"]) == EVAL_TASKS
    assert set(properties["eval"]["properties"]["bleu_tokenize"]["enum"]) == set(BLEU_TOKENIZERS)
    for key in ("target", "params", "holdout"):
        assert "enum" in properties["fit"]["properties"][key], key


def test_eval_settings_refuse_bad_values_in_one_line():
    for values, word in (
        ({"prompts": 0}, "prompts"),
        ({"bleu_tokenize": "spm"}, "bleu_tokenize"),
        ({"task": "x"}, "task"),
        ({"bogus": 1}, "bogus"),
    ):
        with pytest.raises(study_config.ScalelabError, match=word):
            EvalSettings.from_dict(values)


def test_train_fingerprint_follows_what_decides_the_numbers(tmp_path, monkeypatch):
    """Restructuring the code that checks inputs or writes files keeps the train fingerprint; a
    change to the step, the schedule, the data order or a helper they use changes it."""
    import shutil

    from scalelab.store import fingerprint

    package = tmp_path / "scalelab"
    shutil.copytree(fingerprint.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fingerprint, "PACKAGE", package)

    def train_fp(edit=None):
        fingerprint.module_fingerprint.cache_clear()
        if edit:
            name, old, new = edit
            source = (package / name).read_text()
            assert old in source, old
            (package / name).write_text(source.replace(old, new, 1))
        return fingerprint.code_fingerprint("train")

    base = train_fp()
    group = tuple(package / name for name in fingerprint.UNITS["train.py"])
    assert "lr_factor" in fingerprint.used_definitions(group, ("build_module",))
    assert (
        train_fp(("train/outputs.py", '"spec_sha": metrics["spec_sha"],', '"spec_sha": metrics["spec_sha"], "x": 1,'))
        == base
    )  # save_run
    assert train_fp(("train/outputs.py", "def run_metrics(", "def run_metrics_renamed(")) == base
    assert train_fp(("train/trainer.py", '".*LeafSpec.*",', '".*LeafSpec.*", ".*x.*",')) == base  # warnings
    changed = train_fp(
        (
            "train/schedule.py",
            "return min_ratio + (1 - min_ratio) * decay",
            "return min_ratio + (1 - min_ratio) * decay ** 2",
        )
    )
    assert changed != base  # lr_factor: used by LitGPT through build_module, from another file of the group
    assert train_fp(
        ("train/batches.py", "size=self.batch_size, endpoint=True)", "size=self.batch_size, endpoint=False)")
    ) not in (base, changed)  # the data order
    assert fingerprint.code_fingerprint("tokenize") == fingerprint.code_fingerprint("tokenize")
