import copy

import pytest

from scalelab.config import load as study_config
from scalelab.data import corpus
from scalelab.config import counts
from scalelab.plan import grid
from scalelab.errors import ScalelabError


@pytest.mark.parametrize(
    "text, expected",
    [
        (250000, 250_000),
        (2.5e5, 250_000),
        ("2.5e5", 250_000),
        ("1e13", 10**13),
        ("250K", 250_000),
        ("2M", 2_000_000),
        ("1.5m", 1_500_000),
        ("250_000", 250_000),
        ("3G", 3 * 10**9),
    ],
)
def test_parse_count_spellings(text, expected):
    assert counts.parse_count(text, "k") == expected


@pytest.mark.parametrize("bad", [0, -5, "abc", "1.2.3", "", True, float("nan")])
def test_parse_count_rejects(bad):
    with pytest.raises(ScalelabError, match="k"):
        counts.parse_count(bad, "k")


def test_compact_counts_are_readable_and_lossless():
    assert counts.compact_count(250_000) == "250K"
    assert counts.compact_count(1_000_000) == "1M"
    assert counts.compact_count(1_500_000) == "1.5M"
    assert counts.compact_count(999) == "999"
    seen = {}
    for n in list(range(1, 5000, 7)) + [10**6 + k for k in range(0, 5000, 128)]:
        text = counts.compact_count(n)
        assert seen.setdefault(text, n) == n, f"{text} names both {seen[text]} and {n}"
    assert counts.run_id("m", 1_000_000, 0) == "m-1M-s0"
    assert counts.run_id("xs", 250_000, 3) == "xs-250K-s3"


def test_defaults_fill_every_section():
    config = study_config.validate({})
    assert config["train"]["context"] == 128 and config["eval"]["task"] == "continuation"
    assert config["fit"]["target"] == "val_loss" and config["data"]["split"]["val"] == 0.01
    runs = grid.expand_grid(config)
    assert len(runs) == len(config["grid"]["models"]) * len(config["grid"]["tokens"])


def test_grid_union_is_deduplicated_and_ids_unique():
    config = study_config.validate(
        {
            "grid": {
                "models": ["xs", "s"],
                "tokens": ["100K", 100_000, "200K"],
                "seeds": [0, 1],
                "isoflop": {"budgets": ["1e12", 1e12], "models": ["xs", "s", "m"]},
            },
        }
    )
    runs = grid.expand_grid(config)
    ids = [r.id for r in runs]
    assert len(ids) == len(set(ids))
    grid_runs = {(r.model, r.tokens, r.seed) for r in runs if r.spec["isoflop_budget"] is None}
    assert grid_runs == {(m, t, s) for m in ("xs", "s") for t in (100_000, 200_000) for s in (0, 1)}
    iso = [r for r in runs if r.spec["isoflop_budget"] == 10**12]
    assert {r.model for r in iso} == {"xs", "s", "m"}
    for r in iso:  # D = C / (6 N), rounded to whole steps
        per_step = r.spec["batch_size"] * r.spec["context"]
        assert r.tokens % per_step == 0
        from scalelab.plan.shapes import non_embedding_params

        n = non_embedding_params(r.spec["n_layer"], r.spec["d_model"])
        assert abs(r.tokens - 1e12 / (6 * n)) <= per_step / 2


def test_overrides_change_only_that_models_spec():
    base = study_config.validate({})
    changed = study_config.validate({"overrides": {"m": {"lr": 1e-4}}})
    before = {r.id: r.spec_json for r in grid.expand_grid(base)}
    after = {r.id: r.spec_json for r in grid.expand_grid(changed)}
    differ = {k for k in before if before[k] != after[k]}
    assert differ == {k for k in before if k.startswith("m-")}


def test_spec_is_plain_json_and_data_settings_are_in_it():
    runs = grid.expand_grid(study_config.validate({}))
    import json

    spec = json.loads(runs[0].spec_json)
    assert spec == runs[0].spec
    other = grid.expand_grid(study_config.validate({"data": {"tokenizer": {"vocab_size": 1024}}}))
    assert all(a.spec["data"] != b.spec["data"] for a, b in zip(runs, other))


@pytest.mark.parametrize(
    "config, words",
    [
        ({"bogus": 1}, ["bogus"]),
        ({"train": {"lrr": 0.1}}, ["train", "lrr"]),
        ({"grid": {"models": ["xs", "huge"]}}, ["grid.models", "huge"]),
        (
            {"models": {"a": {"n_layer": 1, "d_model": 10, "n_head": 3}}, "grid": {"models": ["a"]}},
            ["models.a", "divisible"],
        ),
        ({"grid": {"tokens": [-5]}}, ["grid.tokens[0]"]),
        ({"grid": {"tokens": ["lots"]}}, ["grid.tokens[0]", "lots"]),
        ({"models": {"xs": {"n_layer": 0, "d_model": 32, "n_head": 2}}}, ["models.xs.n_layer"]),
        ({"overrides": {"nope": {"lr": 1.0}}}, ["overrides.nope"]),
        ({"overrides": {"xs": {"learning_rate": 1.0}}}, ["overrides.xs.learning_rate"]),
        ({"overrides": {"xs": {"lr": -1}}}, ["overrides.xs.lr"]),
        ({"eval": {"task": "pairs"}}, ["data.pairs"]),
        ({"train": {"context": 48}}, ["eval.prompt_tokens", "context of 48"]),
    ],
)
def test_bad_configs_name_the_key(config, words):
    with pytest.raises(ScalelabError) as info:
        grid.expand_grid(study_config.validate(copy.deepcopy(config)))
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_missing_and_empty_files(tmp_path):
    config = study_config.validate({"data": {"source": {"files": ["nothing/*.txt"]}}})
    with pytest.raises(ScalelabError, match=r"data.source.files\[0\].*matches no file"):
        study_config.source_files(config, tmp_path)
    (tmp_path / "empty.txt").write_text("")
    config = study_config.validate({"data": {"source": {"files": ["*.txt"]}}})
    with pytest.raises(ScalelabError, match="empty"):
        study_config.source_files(config, tmp_path)


def test_corpus_budget_checked_against_meta(tmp_path):

    config = study_config.validate({"grid": {"tokens": ["2M"]}})
    runs = grid.expand_grid(config)
    meta = {
        "splits": {"train": {"tokens": 1_000_000}, "val": {"tokens": 5000}, "test": {"tokens": 5000}},
        "settings": corpus.data_settings(config),
    }
    with pytest.raises(ScalelabError, match="allow_repeat"):
        corpus.check_corpus_budget(config, runs, meta)
    config["data"]["allow_repeat"] = True
    corpus.check_corpus_budget(config, runs, meta)  # allowed


def test_float_settings_accept_exponent_notation_as_written():
    """YAML 1.1 reads `3e-3` as a string; a float setting takes it as the number, as sweeps do."""
    import yaml

    written = yaml.safe_load(
        "train: {lr: 3e-3, weight_decay: 1e-1}\noverrides: {s: {lr: 2E-3}}\ndata: {split: {val: 5e-2}}"
    )
    assert written["train"]["lr"] == "3e-3"  # what PyYAML (and Snakemake's --configfile) hands over
    config = study_config.validate(written)
    assert config["train"]["lr"] == 0.003 and config["train"]["weight_decay"] == 0.1
    assert config["overrides"]["s"]["lr"] == 0.002 and config["data"]["split"]["val"] == 0.05
    # The same run ids as the config written with decimals.
    decimal = study_config.validate(
        {
            "train": {"lr": 0.003, "weight_decay": 0.1},
            "overrides": {"s": {"lr": 0.002}},
            "data": {"split": {"val": 0.05}},
        }
    )
    assert [r.id for r in grid.expand_grid(config)] == [r.id for r in grid.expand_grid(decimal)]
    for bad in ("abc", "1e-3x", "0x10"):
        with pytest.raises(ScalelabError, match="train.lr"):
            study_config.validate({"train": {"lr": bad}})


def test_version_prints_the_version_and_every_code_fingerprint(capsys):
    from scalelab import __version__, cli
    from scalelab.store.fingerprint import STAGE_CODE, code_fingerprint

    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"scalelab {__version__}\n")
    for stage in STAGE_CODE:
        assert f"{stage} " in out and code_fingerprint(stage) in out
