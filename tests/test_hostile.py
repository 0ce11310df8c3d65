"""Hostile and broken input, unit level: every value that could only fail at job time (and so cost
a trained model: Snakemake deletes a job's outputs before it runs) is refused when the config is
read, in one line naming the key. The workflow-level cases are in test_workflow.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from scalelab.config import load as study_config
from scalelab.data import corpus
from scalelab.plan import grid
from scalelab.data import tokenize as data
from scalelab.plan import integrity
from scalelab.errors import ScalelabError

from conftest import make_corpus


def one_line_error(config: dict) -> str:
    with pytest.raises(ScalelabError) as caught:
        study_config.validate(config)
        grid.expand_grid(config)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 600, message
    return message


@pytest.mark.parametrize(
    "config, words",
    [
        ({"train": {"lr": float("nan")}}, ["train.lr", "finite"]),
        ({"train": {"lr": float("inf")}}, ["train.lr", "finite"]),
        ({"train": {"weight_decay": float("inf")}}, ["train.weight_decay", "finite"]),
        ({"train": {"warmup_tokens": float("nan")}}, ["train.warmup_tokens", "finite"]),
        ({"data": {"split": {"val": float("nan")}}}, ["data.split.val", "finite"]),
        (
            {"models": {"a": {"n_layer": 1.0, "d_model": 8, "n_head": 2}}, "grid": {"models": ["a"]}},
            ["models.a.n_layer", "integer"],
        ),
        ({"grid": {"seeds": [1.0]}}, ["grid.seeds[0]", "integer"]),
        ({"grid": {"seeds": [4294967296]}}, ["grid.seeds[0]", "4294967295"]),
        (
            {"models": {"a": {"n_layer": 2, "d_model": 1e9, "n_head": 2}}, "grid": {"models": ["a"]}},
            ["models.a.d_model"],
        ),
        (
            {"models": {"a": {"n_layer": 2, "d_model": 1000000000, "n_head": 2}}, "grid": {"models": ["a"]}},
            ["models.a.d_model", "65536"],
        ),
        ({"train": {"devices": 3, "batch_size": 8}}, ["batch_size", "devices"]),
        ({"overrides": {"xs": {"devices": 3}}, "train": {"batch_size": 8}}, ["overrides.xs.batch_size", "devices"]),
        ({"train": {"val_tokens": 1}}, ["train.val_tokens", "context window"]),
        ({"grid": {"tokens": [0.4]}}, ["grid.tokens[0]", "at least 1"]),
        ({"grid": {"models": []}}, ["grid.models"]),
        ({"fit": {"target": "nope"}}, ["fit.target", "val_loss"]),
        ({"eval": {"bleu_tokenize": "nope"}}, ["eval.bleu_tokenize", "13a"]),
        ({"eval": {"bleu_tokenize": "13a; touch /tmp/pwned; echo"}}, ["eval.bleu_tokenize"]),
        ({"fit": {"target": "val_loss --bootstrap 0; touch /tmp/pwned2; echo"}}, ["fit.target"]),
        ({"eval": {"task": "summarise"}}, ["eval.task"]),
        ({"models": {"a\n": {"n_layer": 1, "d_model": 8, "n_head": 2}}}, ["models", "'a\\n'", "letters"]),
        ({"models": {"../x": {"n_layer": 1, "d_model": 8, "n_head": 2}}}, ["models", "../x", "letters"]),
        ({"models": {"a b": {"n_layer": 1, "d_model": 8, "n_head": 2}}}, ["models", "a b", "letters"]),
        ({"models": {"$(id)": {"n_layer": 1, "d_model": 8, "n_head": 2}}}, ["models", "$(id)", "letters"]),
    ],
)
def test_values_that_would_fail_at_job_time_are_refused_up_front(config, words):
    message = one_line_error(config)
    for word in words:
        assert word in message, message
    assert "is not a count" not in message or "tokens" in message


def test_a_bad_model_name_is_not_called_a_count():
    message = one_line_error({"models": {"../x": {"n_layer": 1, "d_model": 8, "n_head": 2}}})
    assert "count" not in message


def test_yaml_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("grid:\n  tokens: " + _nested_alias_list(9) + "\n")
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "scalelab", "check", str(bomb)], capture_output=True, text=True)
    assert time.time() - started < 20
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and len(proc.stderr) < 600
    assert "alias" in proc.stderr and "grid.tokens" in proc.stderr


def _nested_alias_list(depth: int) -> str:
    """A YAML flow sequence whose anchors expand to 9**depth items (the billion-laughs shape)."""
    text = '[&l0 ["1K", "1K", "1K", "1K", "1K", "1K", "1K", "1K", "1K"]'
    for i in range(1, depth):
        text += f", &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]"
    return text + "]"


def test_non_utf8_and_binary_configs_are_one_line(tmp_path):
    for name, content in (
        ("latin1.yaml", "report: {title: 'caf\xe9'}\n".encode("latin-1")),
        ("random.yaml", bytes(range(256)) * 4),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        proc = subprocess.run([sys.executable, "-m", "scalelab", "check", str(path)], capture_output=True, text=True)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and str(path) in proc.stderr


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  lr: 1.0e-3\n  lr: 3.0e-3\n")
    with pytest.raises(ScalelabError, match=r"duplicate key 'lr'.*line 3|line 3.*duplicate key 'lr'"):
        study_config.load(path)


def test_the_same_trained_length_is_one_run():
    """A grid token count and an IsoFLOP budget that round to the same whole steps train once."""
    config = study_config.validate(
        {
            "models": {"a": {"n_layer": 1, "d_model": 16, "n_head": 2}},
            "grid": {"models": ["a"], "tokens": ["20K"]},
            "train": {"context": 32, "batch_size": 8},
            "eval": {"prompt_tokens": 8, "max_new_tokens": 8},
        }
    )
    from scalelab.plan.shapes import non_embedding_params

    step = 8 * 32
    trained = -(-20_000 // step) * step  # 20,224
    budget = 6 * non_embedding_params(1, 16) * trained
    config["grid"]["isoflop"] = {"budgets": [budget]}
    runs = grid.expand_grid(config)
    assert [r.id for r in runs] == ["a-20K-s0"]
    assert runs[0].spec["isoflop_budget"] == budget


def test_tokenize_refuses_a_split_too_small_and_names_the_fraction(tmp_path):
    make_corpus(tmp_path / "c", documents=12, words=400)
    cfg = {
        "source": {"files": [str(tmp_path / "c/*.txt")], "text_field": "text", "sample_by": "document"},
        "pairs": None,
        "split": {"val": 0.01, "test": 0.01},
        "tokenizer": {"vocab_size": 300},
    }
    with pytest.raises(
        ScalelabError, match=r"data\.split\.(val|test): 0\.01 .*use data\.split\.(val|test): [0-9.]+ or more"
    ):
        data.tokenize(cfg, tmp_path / "out", {"train": 100, "val": 65, "test": 65})
    assert not (tmp_path / "out").exists()


def test_context_larger_than_the_train_split_is_caught_from_meta():
    config = study_config.validate({"train": {"context": 4096, "val_tokens": 8192}, "data": {"allow_repeat": True}})
    runs = grid.expand_grid(config)
    meta = {
        "splits": {"train": {"tokens": 1000}, "val": {"tokens": 50_000}, "test": {"tokens": 50_000}},
        "settings": corpus.data_settings(config),
    }
    with pytest.raises(ScalelabError, match="train split has 1,000 tokens.*lower train.context"):
        corpus.check_corpus_budget(config, runs, meta)
    meta["splits"]["train"]["tokens"] = 10**7
    meta["splits"]["val"]["tokens"] = 100
    with pytest.raises(ScalelabError, match="val split has 100 tokens.*data.split.val"):
        corpus.check_corpus_budget(config, runs, meta)


def test_corrupt_meta_and_foreign_files_are_recognised(tiny_data, tmp_path):
    import shutil

    data_dir = tmp_path / "data"
    shutil.copytree(tiny_data, data_dir)
    assert integrity.check_data(data_dir) is None
    (data_dir / "tokenizer.json").write_text((data_dir / "tokenizer.json").read_text().replace("Ġ", "G", 1))
    assert "tokenizer.json" in integrity.check_data(data_dir)
    (data_dir / "meta.json").write_text("{garbage")
    assert "meta.json" in integrity.check_data(data_dir)

    run = tmp_path / "runs/a-1K-s0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"run": "a-1K-s0", "model_bytes": 10}))
    (run / "model.pt").write_bytes(b"x" * 5)
    (run / "eval.json").write_text("{")
    missing, damaged = integrity.check_run(run, "a-1K-s0")
    assert sorted(missing) == sorted(str(run / n) for n in ("curve.csv", "generations.jsonl"))
    assert any("model.pt has 5 bytes" in d for d in damaged) and any("eval.json" in d for d in damaged)
    (run / "metrics.json").write_text(json.dumps({"run": "b-1K-s0"}))
    assert any("metrics.json" in d for d in integrity.check_run(run, "a-1K-s0")[1])
    message = integrity.damage_message(integrity.check_run(run, "a-1K-s0")[1])
    assert "\n" not in message and f"rm {run / 'metrics.json'}" in message


def test_a_bad_corpus_file_is_named(tmp_path):
    make_corpus(tmp_path / "c", documents=20)
    (tmp_path / "c" / "zz_random.txt").write_bytes(bytes(range(128, 256)) * 50)
    cfg = {
        "source": {"files": [str(tmp_path / "c/*.txt")], "text_field": "text", "sample_by": "document"},
        "pairs": None,
        "split": {"val": 0.1, "test": 0.1},
        "tokenizer": {"vocab_size": 300},
    }
    with pytest.raises(ScalelabError) as caught:
        data.tokenize(cfg, tmp_path / "out")
    assert str(caught.value).startswith(str(tmp_path / "c" / "zz_random.txt"))
