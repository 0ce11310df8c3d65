"""Hyperparameter sweeps in the grid: expansion, run ids, checks at load, and aggregate's marks."""

from __future__ import annotations

import copy
import hashlib
import json
import random
from pathlib import Path

import pytest

from scalelab.evaluate import aggregate
from scalelab.config import load as study_config
from scalelab.plan import grid
from scalelab.config import sweeps
from scalelab.errors import ScalelabError

REPO = Path(__file__).resolve().parents[1]

# sha256 of "\n".join(f"{id}\t{spec_json}") over expand_grid(), computed with the code before sweeps
# existed (commit 9a466f6): a study without sweeps must keep every id and spec, or it would retrain.
GOLDEN = {
    "config/examples/cosine-4x3.yaml": (12, "a356f491f9b7acae55e8798dd0a58b9bd985c28061db09b9a70d1278da133020"),
    "config/examples/isoflop.yaml": (12, "8e4bbb19862cb59b25eba52532d9ae5dd586c93359e79f9f0904a946a0e22c62"),
    "config/examples/gpu-tinystories.yaml": (20, "009b6f68682cef267f84e9db4142efa40ea634eadc4f34395709d65bff37e807"),
}


def base(**grid) -> dict:
    config = {
        "models": {"a": {"n_layer": 1, "d_model": 16, "n_head": 2}, "b": {"n_layer": 2, "d_model": 32, "n_head": 2}},
        "grid": {"models": ["a", "b"], "tokens": ["4K", "8K"], "seeds": [0], **grid},
        "train": {"context": 32, "batch_size": 8, "lr": 3.0e-3, "val_tokens": 512},
        "eval": {"prompt_tokens": 8, "max_new_tokens": 8},
    }
    return config


def expand(config: dict):
    return grid.expand_grid(study_config.validate(copy.deepcopy(config)))


@pytest.mark.parametrize("path", sorted(GOLDEN))
def test_studies_without_sweeps_keep_their_ids_and_specs(path):
    runs = grid.expand_grid(study_config.load(REPO / path))
    blob = "\n".join(f"{r.id}\t{r.spec_json}" for r in runs)
    assert (len(runs), hashlib.sha256(blob.encode()).hexdigest()) == GOLDEN[path]
    assert all(r.sweep == {} and r.group == r.id for r in runs)
    assert grid.sweep_keys(runs) == []


def test_sweep_is_the_cross_product_with_readable_suffixes():
    runs = expand(base(sweep={"lr": ["1e-3", 3.0e-3], "batch_size": [8, 16]}))
    assert len(runs) == 2 * 2 * 2 * 2
    by_id = {r.id: r for r in runs}
    run = by_id["a-4K-s0-batch_size16-lr1e-3"]  # keys in alphabetical order
    assert run.spec["lr"] == 0.001 and run.spec["batch_size"] == 16 and run.sweep == {"batch_size": 16, "lr": 0.001}
    assert run.group == "a-4K-s0" and run.spec["tokens"] == 4000
    assert grid.sweep_keys(runs) == ["batch_size", "lr"]
    # the unswept settings are the model's own
    assert {r.spec["weight_decay"] for r in runs} == {0.1}


def test_per_model_sweep_replaces_the_grid_key_and_times_is_relative():
    config = base(sweep={"lr": [1.0e-3, 3.0e-3], "weight_decay": [0.0, 0.1]})
    config["overrides"] = {"b": {"lr": 2.0e-3, "sweep": {"lr": {"times": [0.5, 1, 3]}}}}
    runs = expand(config)
    lrs = {m: sorted({r.spec["lr"] for r in runs if r.model == m}) for m in "ab"}
    assert lrs == {"a": [0.001, 0.003], "b": [0.001, 0.002, 0.006]}  # 2e-3 x 3 is 0.006, not 0.006000000000000001
    assert {r.spec["weight_decay"] for r in runs if r.model == "b"} == {0.0, 0.1}  # grid keys still apply
    assert "b-8K-s0-lr6e-3-weight_decay0" in {r.id for r in runs}


def test_adding_or_removing_a_value_keeps_every_other_run():
    before = {r.id: r.spec_json for r in expand(base(sweep={"lr": [1.0e-3, 3.0e-3]}))}
    after = {r.id: r.spec_json for r in expand(base(sweep={"lr": [1.0e-3, 3.0e-3, 1.0e-2]}))}
    assert set(before) < set(after) and all(after[k] == v for k, v in before.items())
    assert set(after) - set(before) == {"a-4K-s0-lr1e-2", "a-8K-s0-lr1e-2", "b-4K-s0-lr1e-2", "b-8K-s0-lr1e-2"}


def test_value_text_is_lossless_and_one_spelling_per_value():
    assert sweeps.sweep_value_text(1e-3) == sweeps.sweep_value_text(0.001) == "1e-3"
    assert [sweeps.sweep_value_text(v) for v in (3e-3, 1.5e-3, 0.1, 0.95, 10.0, 12345.0, 0.0, 32, "bf16-mixed")] == [
        "3e-3",
        "1.5e-3",
        "0.1",
        "0.95",
        "10",
        "1.2345e4",
        "0",
        "32",
        "bf16-mixed",
    ]
    rng = random.Random(0)
    values = {10 ** rng.uniform(-7, 6) for _ in range(20_000)} | {
        round(10 ** rng.uniform(-4, 2), 3) for _ in range(5000)
    }
    seen = {}
    for value in values:
        text = sweeps.sweep_value_text(value)
        assert set(text) <= set("0123456789.e-"), text
        assert float(text) == value  # lossless: the text reads back as the same float
        assert seen.setdefault(text, value) == value


@pytest.mark.parametrize(
    "sweep, overrides, words",
    [
        ({"bogus": [1]}, {}, ["grid.sweep.bogus", "unknown"]),
        ({"devices": [1, 2]}, {}, ["grid.sweep.devices", "cannot be swept"]),
        ({"accelerator": ["cpu"]}, {}, ["grid.sweep.accelerator", "cannot be swept"]),
        ({"val_tokens": [512, 1024]}, {}, ["grid.sweep.val_tokens", "cannot be swept"]),
        ({"lr": []}, {}, ["grid.sweep.lr", "empty"]),
        ({"lr": [1.0e-3, -1.0e-3]}, {}, ["grid.sweep.lr[1]", "positive"]),
        ({"lr": [0]}, {}, ["grid.sweep.lr[0]", "positive"]),
        ({"batch_size": [0, 8]}, {}, ["grid.sweep.batch_size[0]", "positive"]),
        ({"lr": {"times": [0.5, 0]}}, {}, ["grid.sweep.lr.times[1]", "positive"]),
        ({"lr": {"times": []}}, {}, ["grid.sweep.lr.times", "empty"]),
        ({"lr": ["1e-3", 0.001]}, {}, ["grid.sweep.lr", "same value"]),
        ({"lr": {"times": [1, 1.0]}}, {}, ["grid.sweep.lr.times", "same value"]),
        ({"lr": [11]}, {}, ["grid.sweep.lr[0]", "maximum"]),
        ({"lr": ["fast"]}, {}, ["grid.sweep.lr[0]", "not a number"]),
        ({"lr": [float("nan")]}, {}, ["grid.sweep.lr"]),
        ({"batch_size": [8.5]}, {}, ["grid.sweep.batch_size[0]", "whole"]),
        ({"batch_size": {"times": [0.3]}}, {}, ["grid.sweep.batch_size.times[0]", "whole"]),
        ({"schedule": ["cosine", "steps"]}, {}, ["grid.sweep.schedule[1]"]),
        ({"schedule": {"times": [2]}}, {}, ["grid.sweep.schedule.times"]),
        ({"lr": {"times": [1], "plus": [1]}}, {}, ["grid.sweep.lr", "times"]),
        ({"lr": 3.0e-3}, {}, ["grid.sweep.lr"]),
        ({"context": [32, 8]}, {}, ["grid.sweep.context", "eval.prompt_tokens"]),
        ({}, {"a": {"sweep": {"devices": [2]}}}, ["overrides.a.sweep.devices", "cannot be swept"]),
        ({}, {"a": {"sweep": [1.0e-3]}}, ["overrides.a.sweep", "mapping"]),
        ({}, {"a": {"sweep": {"lr": [1.0e-3, 0.001]}}}, ["overrides.a.sweep.lr", "same value"]),
    ],
)
def test_bad_sweeps_are_one_line_naming_the_key(sweep, overrides, words):
    config = base(sweep=sweep)
    config["overrides"] = overrides
    with pytest.raises(ScalelabError) as error:
        expand(config)
    message = str(error.value)
    assert "\n" not in message and message.startswith("config: ")
    for word in words:
        assert word in message, message


def test_a_run_id_collision_is_refused(monkeypatch):
    monkeypatch.setattr(sweeps, "sweep_value_text", lambda value: "x")  # a lossy rule would collide
    with pytest.raises(ScalelabError, match=r"grid.sweep: two runs would share the id 'a-4K-s0-lrx'"):
        expand(base(sweep={"lr": [1.0e-3, 3.0e-3]}))


def _metrics(run: str, model: str, lr: float, val_loss, status="ok", tokens=4096, seed=0) -> dict:
    return {
        "run": run,
        "model": model,
        "tokens": tokens,
        "tokens_requested": 4000,
        "seed": seed,
        "lr": lr,
        "val_loss": val_loss,
        "status": status,
    }


def test_aggregate_marks_the_best_usable_run_of_each_group(tmp_path):
    runs = {
        "a-4K-s0-lr1e-3": _metrics("a-4K-s0-lr1e-3", "a", 1e-3, 5.0),
        "a-4K-s0-lr3e-3": _metrics("a-4K-s0-lr3e-3", "a", 3e-3, 4.5),
        "a-4K-s0-lr1e-2": _metrics("a-4K-s0-lr1e-2", "a", 1e-2, None, status="diverged"),
        "b-4K-s0-lr1e-3": _metrics("b-4K-s0-lr1e-3", "b", 1e-3, 4.0),
        "b-4K-s0-lr3e-3": _metrics("b-4K-s0-lr3e-3", "b", 3e-3, 4.0),  # a tie: the name that sorts first wins
        "b-4K-s1-lr1e-3": _metrics("b-4K-s1-lr1e-3", "b", 1e-3, float("nan"), seed=1),
        "b-4K-s1-lr3e-3": _metrics("b-4K-s1-lr3e-3", "b", 3e-3, 9.0, seed=1),
    }
    for name, metrics in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "c-4K-s0-lr1e-3").mkdir()  # never trained: missing, in no known group
    table = aggregate.aggregate(sorted(tmp_path.iterdir()), ["lr", "weight_decay"]).set_index("run")
    assert table.loc["a-4K-s0-lr1e-3", "sweep_group"] == "a-4K-s0"
    assert table.loc["b-4K-s1-lr3e-3", "sweep_group"] == "b-4K-s1"
    best = set(table.index[table["best_in_sweep"]])
    assert best == {"a-4K-s0-lr3e-3", "b-4K-s0-lr1e-3", "b-4K-s1-lr3e-3"}  # never the diverged or the NaN run
    assert table.loc["c-4K-s0-lr1e-3", "status"] == "missing" and not table.loc["c-4K-s0-lr1e-3", "best_in_sweep"]
    assert "weight_decay" in table.columns and table["weight_decay"].isna().all()
    plain = aggregate.aggregate(sorted(tmp_path.iterdir()))
    assert "sweep_group" not in plain.columns and "best_in_sweep" not in plain.columns


def test_aggregate_sweep_argument_is_checked(tmp_path, capsys):
    from scalelab import cli

    assert cli.main(["aggregate", "--out", str(tmp_path / "m.csv"), "--sweep", '{"lr": 1}', str(tmp_path)]) == 1
    assert "--sweep: expected a JSON list" in capsys.readouterr().err and not (tmp_path / "m.csv").exists()


def test_moving_the_base_of_a_times_sweep_keeps_the_values_that_stay():
    def runs(lr):
        config = base(sweep={"lr": {"times": [0.5, 1, 2]}})
        config["overrides"] = {"a": {"lr": lr}}
        return {r.id: r.spec_json for r in expand(config) if r.model == "a"}

    before, after = runs(5.0e-3), runs(2.5e-3)
    kept = set(before) & set(after)
    assert kept == {f"a-{t}-s0-lr{v}" for t in ("4K", "8K") for v in ("2.5e-3", "5e-3")}
    assert all(before[k] == after[k] for k in kept)  # same spec: not retrained
