"""Laws of evaluation metrics: `scalelab fit --metrics`, fit.json's `metrics`, predict(metric=)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import scalelab
from scalelab.laws import synthetic
from scalelab.errors import ScalelabError
from scalelab.fit import fit_all
from scalelab.fit.metric_laws import check_method, fit_metric, holdout_checks
from scalelab.fit.metric_mix import clearly_beaten, combined_section, set_weights
from scalelab.fit.metric_spec import metric_specs
from scalelab.fit.outputs import write_outputs
from scalelab.laws.fitted_metrics import MetricLaw, metric_values

EASY = {**synthetic.EXAMPLE_TASK, "midpoint": 1.8}  # mid-rise across the ladder: a clear trend


def _ladder(seed=1):
    runs = synthetic.ladder(5, 4, noise=0.01, seed=seed, sizes=(1e7, 4e8), tokens=(2e8, 1e10))
    runs = synthetic.with_task(runs, "easy", EASY, seed=seed + 1)
    rng = np.random.default_rng(seed)
    runs["noise_task"] = rng.binomial(200, 0.25, len(runs["params"])) / 200  # at chance everywhere
    return pd.DataFrame(runs)


def test_two_step_with_a_task_loss_predicts_a_larger_model_within_its_interval(tmp_path):
    df = _ladder()
    spec = {"easy": {"chance": 0.25, "via": "easy_loss"}, "noise_task": {"chance": 0.25}}
    fit = fit_all(df, bootstrap=40, metrics=["easy"], metric_spec=spec)
    write_outputs(fit, tmp_path)
    entry = json.loads((tmp_path / "fit.json").read_text())["metrics"]["easy"]
    assert entry["predictable"] and entry["chosen_method"] in ("direct", "two_step")
    assert set(entry["methods"]) == {"direct_nd", "two_step"}  # a grid spans many tokens per parameter
    assert "direct" in entry["skipped"]
    assert all(m["oos_error"] is not None for m in entry["methods"].values())
    n, d = 1.2e9, 3e10
    table = scalelab.load_fit(tmp_path).predict(n, d, metric="easy")
    assert list(table.columns[:5]) == ["params", "tokens", "easy", "low", "high"]
    truth = synthetic.task_accuracy(n, d, EASY)
    row = table.iloc[0]
    assert row["low"] <= truth <= row["high"]
    assert row["low"] <= row["easy"] <= row["high"] <= 1.0
    assert (tmp_path / "metrics.csv").read_text().startswith("metric,")


def test_a_task_at_chance_is_not_predictable_and_gets_no_forecast(tmp_path):
    df = _ladder()
    fit = fit_all(df, bootstrap=20, metrics=["noise_task"], metric_spec={"noise_task": {"chance": 0.25}})
    write_outputs(fit, tmp_path)
    entry = fit.result["metrics"]["noise_task"]
    assert entry["verdict"].startswith("NOT PREDICTABLE: ") and not entry["predictable"]
    assert entry["forecasts"] == []
    table = scalelab.load_fit(tmp_path).predict(1e9, 2e10, metric="noise_task")
    assert table["noise_task"].isna().all() and table["verdict"].iloc[0].startswith("NOT PREDICTABLE")


def test_direct_in_compute_is_fitted_to_runs_at_one_token_to_parameter_ratio():
    params = np.geomspace(1e7, 1e9, 8)
    runs = synthetic.with_task({"params": params, "tokens": 20 * params}, "easy", EASY, seed=4)
    df = pd.DataFrame(runs).assign(flops=lambda f: 6 * f["params"] * f["tokens"], loss=1.0)
    spec = metric_specs(df, ["easy"], {"easy": {"chance": 0.25}})[0]
    entry, _ = fit_metric(df, spec, [], bootstrap_n=0)
    assert "direct" in entry["methods"] and "direct" not in entry["skipped"]


def test_a_loss_metric_gets_a_power_law_and_its_checks_use_the_interface():
    df = _ladder()
    df["test_bpb"] = df["loss"] / np.log(2) / 4.0
    spec = metric_specs(df, ["test_bpb"])[0]
    assert spec.kind == "loss" and spec.link == "loglinear"
    seen = []

    def checks(runs):
        seen.append(len(runs))
        return holdout_checks(runs)

    entry, _ = fit_metric(df, spec, [(1e21, 2e9, 8e10)], checks=checks, bootstrap_n=20)
    assert seen and entry["predictable"]
    value = entry["forecasts"][0]["value"]
    truth = synthetic.CHINCHILLA
    true_bpb = (truth["E"] + truth["A"] / 2e9 ** truth["alpha"] + truth["B"] / 8e10 ** truth["beta"]) / np.log(2) / 4
    assert abs(value / true_bpb - 1) < 0.1
    low, high = entry["forecasts"][0]["ci95"]
    assert low <= true_bpb <= high


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"nope": {}}, "no column 'nope'"),
        ({"easy": {"chance": 2}}, "need 0 <= chance"),
        ({"easy": {"via": "missing_loss"}}, "no column 'missing_loss'"),
        ({"easy": {"colour": 1}}, "unknown key 'colour'"),
    ],
)
def test_bad_metric_specs_get_one_line(spec, words):
    with pytest.raises(ScalelabError, match=words):
        metric_specs(_ladder(), [], spec)


def test_unknown_metric_in_predict_names_the_fitted_ones(tmp_path):
    fit = fit_all(_ladder(), bootstrap=0, metrics=["easy"], metric_spec={"easy": {"chance": 0.25}})
    write_outputs(fit, tmp_path)
    with pytest.raises(ScalelabError, match="no law for the metric 'bleu'.*easy"):
        scalelab.load_fit(tmp_path).predict(1e9, 1e10, metric="bleu")


@pytest.fixture(scope="module")
def metric_fit(tmp_path_factory):
    """One fit with a predictable task (through its task loss) and a task at chance."""
    folder = tmp_path_factory.mktemp("metric-fit")
    df = _ladder(seed=3)
    spec = {"easy": {"chance": 0.25, "via": "easy_loss"}, "noise_task": {"chance": 0.25}}
    write_outputs(fit_all(df, bootstrap=40, metric_spec=spec), folder)
    return folder, df


def test_suggest_metric_narrows_that_metrics_interval(metric_fit):
    from scalelab.suggest.metric import metric_design

    folder, df = metric_fit
    fitted = scalelab.load_fit(folder)
    table, width_now = metric_design(fitted, "easy", df, 100 * df["flops"].max(), 0.5 * df["flops"].sum(), 3)
    assert 1 <= len(table) <= 3
    assert table["flops"].sum() <= 0.5 * df["flops"].sum()
    widths = table["expected_width_after"].to_numpy()
    assert np.all(np.diff(widths) <= 1e-12) and widths[-1] < width_now


def test_report_table_and_summary_show_forecasts_and_verdicts(metric_fit):
    from types import SimpleNamespace

    from scalelab.laws.fitjson import read_fit_json
    from scalelab.report.tables_metrics import metric_summary_lines, table_metric_laws

    folder, _ = metric_fit
    study = SimpleNamespace(fit=read_fit_json(folder / "fit.json"))
    table = table_metric_laws(study)
    by_metric = {row[0].text: row for row in table.rows}
    assert set(by_metric) == {"easy", "noise_task"}
    verdict = table.columns.index("verdict")
    assert by_metric["noise_task"][verdict].text.startswith("NOT PREDICTABLE")
    assert by_metric["noise_task"][verdict + 1].text == "not predictable"
    forecast = by_metric["easy"][verdict + 1]
    assert forecast.value == study.fit["metrics"]["easy"]["forecasts"][0]["value"]
    lines = metric_summary_lines(study)
    assert any("easy" in line and "[" in line for line in lines)
    assert any("noise_task" in line and "NOT PREDICTABLE" in line for line in lines)


def test_eval_extra_columns_join_metrics_csv_and_bad_files_get_one_line(tmp_path):
    from scalelab.config.extra_metrics import extra_columns, join_extra

    table = pd.DataFrame({"run": ["a", "b", "c"], "val_loss": [3.0, 2.5, 2.2]})
    good = tmp_path / "scores.csv"
    good.write_text("run,arc_easy,hellaswag\na,0.3,0.26\nc,0.5,\n")
    joined = join_extra(table, good)
    assert list(joined["run"]) == ["a", "b", "c"]
    assert joined["arc_easy"].tolist()[0] == 0.3 and np.isnan(joined["arc_easy"].tolist()[1])
    with pytest.raises(ScalelabError, match="no such|cannot read"):
        extra_columns(tmp_path / "missing.csv")
    (tmp_path / "norun.csv").write_text("model,acc\na,0.3\n")
    with pytest.raises(ScalelabError, match="no 'run' column"):
        extra_columns(tmp_path / "norun.csv")
    (tmp_path / "text.csv").write_text("run,acc\na,high\n")
    with pytest.raises(ScalelabError, match="column 'acc' is not numeric"):
        extra_columns(tmp_path / "text.csv")
    with pytest.raises(ScalelabError, match="repeats a metrics.csv column"):
        extra_columns(good, reserved={"hellaswag"})


def test_eval_extra_is_checked_when_the_config_loads(tmp_path):
    from scalelab.config import load as config_file

    config = config_file.read_yaml("config/config.yaml")
    config.setdefault("eval", {})["extra"] = str(tmp_path / "absent.csv")
    with pytest.raises(ScalelabError, match="eval.extra"):
        config_file.validate(config)


def test_downstream_bench_scores_every_method_and_the_choice():
    """bench/downstream.py on two small ladders: a row per method and forecast, errors against the
    known truth, and the JSON summary last."""
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("downstream_bench", REPO / "bench" / "downstream.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.score_ladder(0, 10) + bench.score_ladder(1, 10)
    table = pd.DataFrame(rows)
    assert {"direct_nd", "two_step", "auto"} <= set(table["method"])
    assert set(table["factor"]) == {10, 100}
    assert np.allclose(table["error"], 100 * (table["predicted"] - table["truth"]).abs(), equal_nan=True)
    summary = bench.summarise(table)
    assert 0 <= summary["auto_10x"]["coverage"] <= 1 and summary["auto_10x"]["n"] == 2


def test_the_forecast_averages_the_methods_the_checks_do_not_tell_apart(tmp_path):
    """fit.json's `point` is "weighted": each method no other clearly beats gets an equal share,
    the forecast is their mean, and the interval holds every weighted method's point."""
    df = _ladder()
    fit = fit_all(df, bootstrap=30, metrics=["easy"], metric_spec={"easy": {"chance": 0.25, "via": "easy_loss"}})
    write_outputs(fit, tmp_path)
    entry = json.loads((tmp_path / "fit.json").read_text())["metrics"]["easy"]
    assert entry["point"] == "weighted" and entry["weights_why"].startswith("forecast: ")
    assert entry["weights_why"] in (tmp_path / "fit.txt").read_text()
    weights = {m: s["weight"] for m, s in entry["methods"].items()}
    kept = [m for m, w in weights.items() if w > 0]
    assert kept and np.allclose([weights[m] for m in kept], 1 / len(kept))
    assert set(entry["combined"]["weights"]) == set(kept)
    law = scalelab.load_fit(tmp_path).metric_law("easy")
    n, d = np.array([1.2e9]), np.array([3e10])
    each = {m: float(metric_values(m, "sigmoid", entry["methods"][m]["params"], n, d)[0]) for m in kept}
    row = scalelab.load_fit(tmp_path).predict(n[0], d[0], metric="easy").iloc[0]
    assert row["easy"] == pytest.approx(np.mean(list(each.values())))
    assert all(row["low"] <= v <= row["high"] for v in each.values())
    assert law.weighted
    # the forecast's resamples (suggest --metric designs on them): the mean of the methods' paired resamples
    resamples = pd.read_csv(tmp_path / "metrics_bootstrap.csv")
    paired = [resamples[resamples["method"] == m] for m in kept]
    expected = np.mean(
        [
            metric_values(m, "sigmoid", {k: t[k].to_numpy()[:, None] for k in entry["methods"][m]["params"]}, n, d)
            for m, t in zip(kept, paired)
        ],
        axis=0,
    )
    assert np.allclose(law.ensemble(n, d), expected, equal_nan=True)


def test_a_method_beaten_on_every_check_by_more_than_their_spread_gets_no_weight():
    methods = {
        "direct_nd": {"checks": {"a": 0.02, "b": 0.03, "c": 0.025, "d": 0.02}},
        "two_step": {"checks": {"a": 0.10, "b": 0.12, "c": 0.11, "d": 0.13}},
    }
    assert clearly_beaten(methods) == {"two_step": "direct_nd"}
    why = set_weights(methods, "direct_nd")
    assert methods["direct_nd"]["weight"] == 1.0 and methods["two_step"]["weight"] == 0.0
    assert "two_step is beaten by direct_nd" in why
    close = {
        "direct_nd": {"checks": {"a": 0.02, "b": 0.05, "c": 0.025}},
        "two_step": {"checks": {"a": 0.03, "b": 0.02, "c": 0.03}},
    }
    assert clearly_beaten(close) == {}
    set_weights(close, "two_step")
    assert close["direct_nd"]["weight"] == close["two_step"]["weight"] == 0.5


def test_the_weighted_mean_is_checked_as_one_predictor():
    """`combined`: its misses are the weighted mean of the methods' misses at the same runs; its
    out-of-sample error is their mean absolute value per check, averaged over the checks."""
    methods = {
        "direct_nd": {"weight": 0.5, "residual_sigma": 0.01},
        "two_step": {"weight": 0.5, "residual_sigma": 0.03},
    }
    d = np.array([0.5, 1.0])
    misses = {
        "direct_nd": {"a": (np.array([0.04, -0.02]), d, np.full(2, 0.01)), "b": (np.array([0.1]), d[:1], [0.01])},
        "two_step": {"a": (np.array([-0.02, -0.04]), d, np.full(2, 0.03))},
    }
    combined = combined_section(methods, misses)
    assert set(combined["checks"]) == {"a"}  # b: not every weighted method ran it
    assert combined["oos_error"] == pytest.approx(np.mean(np.abs([0.01, -0.03])))
    assert combined["residual_sigma"] == pytest.approx(0.02)
    assert combined["extrapolation_sigma"] >= 0


def test_a_fit_without_weighted_point_forecasts_its_chosen_method_alone(tmp_path):
    """A fit.json written before the weighted forecast (no `point`) reads back as the chosen method."""
    df = _ladder()
    spec = metric_specs(df, ["easy"], {"easy": {"chance": 0.25, "via": "easy_loss"}})[0]
    entry, samples = fit_metric(df, spec, [], bootstrap_n=20)
    old = {k: v for k, v in entry.items() if k not in ("point", "combined")}
    n, d = np.array([1.2e9]), np.array([3e10])
    chosen = entry["chosen_method"]
    expected = metric_values(chosen, "sigmoid", entry["methods"][chosen]["params"], n, d)
    assert MetricLaw("easy", old, samples, entry["range"]).point(n, d) == pytest.approx(expected)
    assert not MetricLaw("easy", old, samples, entry["range"]).weighted


def test_the_checks_scatter_holds_the_refits_own_spread():
    """With resamples of each check's refit, the scatter a refit explains itself is at least its
    residual sigma (the extrapolation scatter learnt per e-fold need not also carry its parameter noise)."""
    df = _ladder()
    spec = metric_specs(df, ["easy"], {"easy": {"chance": 0.25, "via": "easy_loss"}})[0]
    runs = df.copy()
    plain = check_method("two_step", spec, runs, holdout_checks)
    resampled = check_method("two_step", spec, runs, holdout_checks, n_boot=10, seed=0)
    assert plain["checks"] == resampled["checks"] and plain["misses"]
    for name, (_, _, explained) in resampled["misses"].items():
        assert np.all(explained >= plain["misses"][name][2] - 1e-12)
        assert np.any(explained > plain["misses"][name][2])
