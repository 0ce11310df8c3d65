"""scalelab.load_study on hand-made results: the numbers, the intervals and the error messages."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import scalelab
from scalelab import fit as fitting
from scalelab.errors import ScalelabError
from scalelab.laws.law import predict_loss

LAW = {"E": 1.5, "A": 400.0, "B": 1000.0, "alpha": 0.34, "beta": 0.28}
RUNS = ["xs-100K-s0", "s-100K-s0", "m-100K-s0"]


def _resamples() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = [{k: v * rng.uniform(0.9, 1.1) for k, v in LAW.items()} for _ in range(40)]
    rows.append(dict.fromkeys(LAW, np.nan))  # a failed resample, as fit.py writes it
    table = pd.DataFrame(rows)
    table["a"] = table["beta"] / (table["alpha"] + table["beta"])
    table["b"] = table["alpha"] / (table["alpha"] + table["beta"])
    table["objective"] = 0.001
    return table


@pytest.fixture()
def results(tmp_path):
    """A study folder holding a minimal, consistent results/ tree."""
    root = tmp_path / "study" / "results"
    (root / "fit").mkdir(parents=True)
    pd.DataFrame(
        {
            "run": RUNS + ["l-100K-s0"],
            "params": [1e4, 3e4, 1e5, 3e5],
            "tokens": [1e5] * 4,
            "val_loss": [3.0, 2.8, 2.6, np.nan],
            "status": ["ok", "ok", "ok", "missing"],
        }
    ).to_csv(root / "metrics.csv", index=False)
    for i, run in enumerate(RUNS):
        (root / "runs" / run).mkdir(parents=True)
        pd.DataFrame(
            {
                "step": [0, 1, 2],
                "tokens": [0, 512, 1024],
                "flops": [0.0, 1e9, 2e9],
                "lr": [1e-3] * 3,
                "train_loss": [5.0, 4.0 - i, 3.0 - i],
                "val_loss": [np.nan, np.nan, 3.1],
            }
        ).to_csv(root / "runs" / run / "curve.csv", index=False)
    fit = {
        "target": "val_loss",
        "columns": {"params": "params", "tokens": "tokens"},
        "approach3": {**LAW, "ci95": {}, "bootstrap": 41},
    }
    (root / "fit" / "fit.json").write_text(json.dumps(fit))
    _resamples().to_csv(root / "fit" / "bootstrap.csv", index=False)
    return root


def test_import_stays_light_until_load_study_is_used():
    code = (
        "import sys, scalelab; assert 'pandas' not in sys.modules and 'numpy' not in sys.modules; "
        "scalelab.load_study; assert 'pandas' in sys.modules; "
        "assert 'torch' not in sys.modules and 'scipy' not in sys.modules and 'matplotlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tables_are_read_from_the_study_folder_or_results(results):
    for path in (results.parent, results):
        study = scalelab.load_study(path)
        assert study.path == results
        assert list(study.metrics["run"]) == RUNS + ["l-100K-s0"]
        assert study.fit["approach3"]["alpha"] == LAW["alpha"] and study.law == LAW
        assert len(study.bootstrap) == 41 and study.params_column == "params"
    # one long table, `run` first; the run without outputs has no curve
    assert list(study.curves.columns) == ["run", "step", "tokens", "flops", "lr", "train_loss", "val_loss"]
    assert study.curves.groupby("run").size().to_dict() == {run: 3 for run in RUNS}
    assert study.curves.set_index(["run", "step"]).loc[("m-100K-s0", 2), "train_loss"] == 1.0


def test_predict_is_the_law_with_percentile_intervals_over_the_resamples(results):
    study = scalelab.load_study(results)
    table = study.predict(N=[1e6, 1e7], D=2e7)
    assert list(table.columns) == [
        "params",
        "tokens",
        "mean",
        "mean_ci_lower",
        "mean_ci_upper",
        "obs_ci_lower",
        "obs_ci_upper",
    ]
    np.testing.assert_allclose(table["mean"], predict_loss([1e6, 1e7], 2e7, **LAW), rtol=1e-12)
    samples = _resamples().dropna()
    for row in table.itertuples():
        losses = [predict_loss(row.params, row.tokens, *s) for s in samples[list(LAW)].itertuples(index=False)]
        np.testing.assert_allclose(
            [row.mean_ci_lower, row.mean_ci_upper], np.percentile(losses, [2.5, 97.5]), rtol=1e-12
        )
        assert row.mean_ci_lower < row.mean < row.mean_ci_upper
    narrow = study.predict(1e6, 2e7, level=0.5)
    assert (
        table["mean_ci_lower"][0] < narrow["mean_ci_lower"][0] < narrow["mean_ci_upper"][0] < table["mean_ci_upper"][0]
    )
    pd.testing.assert_frame_equal(study.predict(1e6, 2e7, alpha=0.5), narrow)  # statsmodels' alpha = 1 - level


# Study.allocate's columns and the fit.json allocation keys they record
ALLOCATION_NAMES = (
    ("params", "n_opt"),
    ("tokens", "d_opt"),
    ("tokens_per_param", "tokens_per_param"),
    ("loss", "loss_pred"),
)
ALLOCATION_COLUMNS = (
    "flops",
    "params",
    "tokens",
    "tokens_per_param",
    "loss",
    "low",
    "high",
    "params_low",
    "params_high",
)
ALLOCATION_COLUMNS += ("tokens_low", "tokens_high")


def test_allocate_matches_what_fit_writes_to_fit_json(results):
    study = scalelab.load_study(results)
    budgets = [1e15, 1e17, 1e19]
    table = study.allocate(C=budgets)
    expected = fitting.allocation(LAW, budgets, _resamples())  # fit.json's allocation section
    assert list(table.columns) == [*ALLOCATION_COLUMNS]  # each number once (issue 31 item 9)
    for row, want in zip(table.to_dict("records"), expected):
        for mine, key in (("flops", "flops"), *ALLOCATION_NAMES):
            assert row[mine] == pytest.approx(want[key], rel=1e-12), key
        for mine, name in (("", "loss"), ("params_", "n_opt"), ("tokens_", "d_opt")):
            assert [row[f"{mine}low"], row[f"{mine}high"]] == pytest.approx(want[f"{name}_ci95"], rel=1e-12)
    assert np.allclose(6 * table["params"] * table["tokens"], budgets)


def test_without_a_bootstrap_the_intervals_are_nan(results):
    pd.DataFrame(columns=[*LAW, "a", "b", "objective"]).to_csv(results / "fit/bootstrap.csv", index=False)
    study = scalelab.load_study(results)
    assert study.predict(1e6, 1e7).filter(like="_ci_").isna().all(axis=None)
    table = study.allocate(1e16)
    assert table["params"].notna().all() and table.filter(regex="low|high").isna().all(axis=None)


def test_unfitted_law_and_bad_arguments_are_one_line_errors(results):
    study = scalelab.load_study(results)
    for call, words in (
        (lambda: study.predict(-1, 1e6), ["N must be a positive number"]),
        (lambda: study.predict(1e6, "many"), ["D must be"]),
        (lambda: study.predict([1, 2], [1, 2, 3]), ["same length"]),
        (lambda: study.allocate([1e15, 0]), ["C must be a positive number"]),
        (lambda: study.allocate(1e15, level=95), ["level"]),
    ):
        with pytest.raises(ScalelabError) as error:
            call()
        assert all(word in str(error.value) for word in words) and "\n" not in str(error.value)
    fit = json.loads((results / "fit/fit.json").read_text())
    fit.update(approach3=None, approach3_why="needs runs at 3 or more token counts, found 1")
    (results / "fit/fit.json").write_text(json.dumps(fit))
    study = scalelab.load_study(results)  # the tables still load
    assert study.law is None and len(study.curves) == 9
    with pytest.raises(ScalelabError, match="fit.json: Approach 3 was not fitted .needs runs at 3 or more"):
        study.predict(1e6, 1e7)
    fit["approach3"] = {**LAW, "A": None}  # an infinite estimate, as fit.json writes it
    (results / "fit/fit.json").write_text(json.dumps(fit))
    study = scalelab.load_study(results)
    assert study.law is None
    with pytest.raises(ScalelabError, match="fit.json: approach3.A is null"):
        study.allocate(1e16)
    fit["approach3"] = {**LAW, "alpha": 0.0}  # on its bound: a law, but no compute-optimal split
    (results / "fit/fit.json").write_text(json.dumps(fit))
    with pytest.raises(ScalelabError, match="not both positive"):
        scalelab.load_study(results).allocate(1e16)
    fit["approach3"] = {**LAW, "alpha": -0.1}  # no fit gives this: refused when read (issue 21, finding 10)
    (results / "fit/fit.json").write_text(json.dumps(fit))
    with pytest.raises(ScalelabError, match=r"approach3.alpha = -0.1 is outside \[0, 10\]"):
        scalelab.load_study(results)


def _remove(path):
    path.unlink()


@pytest.mark.parametrize(
    "damage, named, words",
    [
        (lambda r: _remove(r / "metrics.csv"), "metrics.csv", ["not found"]),
        (lambda r: (r / "metrics.csv").write_text(""), "metrics.csv", ["empty"]),
        (lambda r: (r / "metrics.csv").write_text("model,params\nxs,1\n"), "metrics.csv", ["run"]),
        (lambda r: _remove(r / "fit/fit.json"), "fit/fit.json", ["not found"]),
        (lambda r: (r / "fit/fit.json").write_text('{"approach3": '), "fit/fit.json", ["not valid JSON"]),
        (lambda r: (r / "fit/fit.json").write_text("[1, 2]"), "fit/fit.json", ["not a JSON object"]),
        (lambda r: (r / "fit/fit.json").write_text("{}"), "fit/fit.json", ["approach3"]),
        (
            lambda r: (r / "fit/fit.json").write_text('{"approach3": {"E": 1, "A": 1, "B": 1, "beta": 1}}'),
            "fit/fit.json",
            ["approach3.alpha is missing"],
        ),
        (
            lambda r: (r / "fit/fit.json").write_text(
                '{"approach3": {"E": 1, "A": "x", "B": 1, "alpha": 1, "beta": 1}}'
            ),
            "fit/fit.json",
            ["approach3.A is not a number"],
        ),
        (lambda r: _remove(r / "fit/bootstrap.csv"), "fit/bootstrap.csv", ["not found"]),
        (lambda r: (r / "fit/bootstrap.csv").write_text("E,A\n1,2\n"), "fit/bootstrap.csv", ["alpha"]),
        (lambda r: _remove(r / "runs/s-100K-s0/curve.csv"), "runs/s-100K-s0/curve.csv", ["not found"]),
        (lambda r: (r / "runs/s-100K-s0/curve.csv").write_bytes(b"\xff\xfe\x00bad"), "runs/s-100K-s0/curve.csv", []),
    ],
)
def test_bad_or_missing_files_are_one_line_errors_naming_the_file(results, damage, named, words):
    damage(results)
    with pytest.raises(ScalelabError) as error:
        scalelab.load_study(results.parent)
    message = str(error.value)
    assert str(results / named) in message and "\n" not in message
    for word in words:
        assert word in message


def test_a_folder_without_results_is_named(tmp_path):
    with pytest.raises(ScalelabError, match="nowhere: no such study folder"):
        scalelab.load_study(tmp_path / "nowhere")
    with pytest.raises(ScalelabError) as error:
        scalelab.load_study(tmp_path)
    assert str(tmp_path / "results" / "metrics.csv") in str(error.value)


def test_switching_the_logger_changes_nothing_the_report_is_given():
    """Issue 31 item 11: the report rule's settings param must not hold train.logger, else switching
    the logger reruns the report (the README says it reruns nothing)."""
    import json as _json

    from scalelab.config import load as config_file
    from scalelab.plan.resolved import study_settings

    from pathlib import Path

    raw = config_file.read_yaml(Path(__file__).resolve().parents[1] / "config" / "config.yaml")
    config = config_file.validate(_json.loads(_json.dumps(raw)))
    other = _json.loads(_json.dumps(raw))
    other.setdefault("train", {})["logger"] = "tensorboard" if config["train"]["logger"] != "tensorboard" else "csv"
    other = config_file.validate(other)
    assert other["train"]["logger"] != config["train"]["logger"]
    assert study_settings(other) == study_settings(config)
