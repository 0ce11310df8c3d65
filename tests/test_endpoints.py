"""Predicted endpoints (grid.trained_cooldowns): the plan trains fewer cooldowns, the curve law's
predictions join the fit's table marked `predicted`, and the fit carries their interval."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from test_workflow_plan import plan_of  # the cosine example's grid on three small files

from scalelab.curves.command import fit_study
from scalelab.curves.endpoints import LOG_SD, STATUS, with_predicted
from scalelab.curves.model import Curves
from scalelab.errors import ScalelabError
from scalelab.fit.pipeline import fit_frame
from scalelab.plan import wsd

WSD = {"schedule": "wsd", "warmup_tokens": 1024, "cooldown": 0.25}


def test_a_study_that_does_not_ask_trains_every_run(tmp_path):
    plan = plan_of(tmp_path, **WSD)
    assert plan.predicted_ids == [] and plan.run_ids == list(plan.runs)


def test_trained_cooldowns_train_fewer_runs_and_every_trunk_segment(tmp_path):
    full = plan_of(tmp_path, **WSD)
    tokens = sorted({run.tokens for run in full.runs.values()})
    plan = plan_of(tmp_path, grid={"trained_cooldowns": [tokens[0], tokens[-1]]}, **WSD)
    assert set(plan.runs) == set(full.runs)  # the grid, its ids and specs are the study's
    assert all(plan.run_spec(r) == full.run_spec(r) for r in plan.runs)
    assert {plan.runs[r].tokens for r in plan.run_ids} == {tokens[0], tokens[-1]}
    assert sorted(plan.run_ids + plan.predicted_ids) == sorted(full.runs) and plan.predicted_ids
    assert plan.trunk_segments == full.trunk_segments  # the trunks are trained in full
    assert plan.fit_spec() == full.fit_spec()


def test_a_new_d_of_a_size_run_is_predicted_and_a_new_size_trained(tmp_path):
    extra = [{"model": "xs", "tokens": "700K"}, {"model": "l", "tokens": "700K"}]
    plan = plan_of(
        tmp_path, grid={"trained_cooldowns": ["100K", "400K"], "models": ["xs", "s", "m"], "extra": extra}, **WSD
    )
    assert "xs-700K-s0" in plan.predicted_ids  # its size has two trained cooldowns to predict from
    assert "l-700K-s0" in plan.run_ids  # a size with none: trained (as suggest's new sizes must be)


@pytest.mark.parametrize(
    "tokens, train, words",
    [
        (["100K", "123K"], WSD, "123,000 is not one of grid.tokens"),
        (["100K"], WSD, "at least 2 token counts"),
        (["100K", "400K"], {}, "need train.schedule: wsd"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_key(tmp_path, tokens, train, words):
    with pytest.raises(ScalelabError) as error:
        plan_of(tmp_path, grid={"trained_cooldowns": tokens}, **train)
    message = str(error.value)
    assert message.startswith("config: grid.trained_cooldowns:") and words in message and "\n" not in message


def chinchilla_table(noise: float = 0.003, seed: int = 0) -> pd.DataFrame:
    """A 4 x 6 grid whose loss follows a Chinchilla law with log-normal noise, as metrics.csv rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for params in (2e4, 5e4, 1.2e5, 3e5):
        for tokens in (3e5, 5e5, 9e5, 1.6e6, 2.8e6, 4.8e6):
            loss = 1.5 + 60 / params**0.3 + 200 / tokens**0.3
            rows.append(
                {
                    "run": f"{params:g}-{tokens:g}",
                    "status": "ok",
                    "params": params,
                    "tokens": tokens,
                    "flops": 6 * params * tokens,
                    "val_loss": loss * np.exp(rng.normal(0, noise)),
                }
            )
    return pd.DataFrame(rows)


def mark_predicted(table: pd.DataFrame, sd: float) -> pd.DataFrame:
    """The rows at 3 of the 6 token counts as predicted endpoints with a log sd of `sd`."""
    out = table.copy()
    predicted = out["tokens"].isin([5e5, 2.8e6, 4.8e6])
    out.loc[predicted, "status"] = STATUS
    out[LOG_SD] = np.where(predicted, sd, np.nan)
    return out


def test_the_fit_fits_predicted_rows_but_checks_only_measured_ones():
    settings = {"bootstrap": 0, "grid_points": 2, "forms": ["chinchilla"], "workers": 1}
    table = mark_predicted(chinchilla_table(), 0.02)
    fit = fit_frame(table, **settings)
    assert fit["n_points"] == len(table) and not fit["excluded"]
    held = fit["holdout"]["held_out"]
    assert held and not set(held) & set(table.loc[table["status"] == STATUS, "run"])
    no_sd = table.drop(columns=[LOG_SD])  # a predicted row without its interval is not fitted
    excluded = fit_frame(no_sd, **{**settings, "holdout": "none"})["excluded"]
    assert len(excluded) == 12 and {e["reason"] for e in excluded} == {STATUS}


def test_the_predicted_rows_interval_widens_the_bootstrap():
    settings = {"bootstrap": 20, "grid_points": 2, "forms": ["chinchilla"], "holdout": "none", "workers": 1}
    table = chinchilla_table()
    narrow = fit_frame(mark_predicted(table, 0.0), **settings)["forms"]["chinchilla"]["ci95"]
    wide = fit_frame(mark_predicted(table, 0.05), **settings)["forms"]["chinchilla"]["ci95"]
    width = lambda ci, key: np.log(ci[key][1] / ci[key][0])  # noqa: E731
    assert width(wide, "B") > 1.5 * width(narrow, "B") and width(wide, "beta") > width(narrow, "beta")
    measured = fit_frame(table.assign(**{LOG_SD: np.nan}), **settings)["forms"]["chinchilla"]["ci95"]
    assert measured == narrow  # sd 0: the same resamples, the same draws of nothing


@pytest.fixture(scope="module")
def curve_study(tmp_path_factory):
    """Synthetic WSD curves of model m at every token count of the default study (test_curves' law)."""
    from test_curves import write_study

    from scalelab.config.load import load
    from scalelab.plan.grid import expand_grid

    config = load(REPO / "config" / "config.yaml")
    specs = {run.id: run.spec for run in expand_grid(config) if run.model == "m"}
    return write_study(tmp_path_factory.mktemp("endpoints"), specs, np.random.default_rng(5)), specs


def test_predicted_rows_join_metrics_marked_with_their_interval(curve_study):
    study, specs = curve_study
    trained = ["m-290K-s0", "m-1.6M-s0"]
    data, _ = fit_study(study, trained, specs=specs, target="val_loss", trunk_checkpoints=False, checks=False)
    per_token = 3 * 56640 * 2
    metrics = pd.DataFrame(
        [
            {
                "run": r,
                "status": "ok",
                "model": "m",
                "params": 56640,
                "tokens": t,
                "flops": per_token * t,
                "val_loss": 3.0,
            }
            for r, t in (("m-290K-s0", 290816), ("m-1.6M-s0", 1599488))
        ]
    )
    predicted = [r for r in specs if r not in trained]
    table = with_predicted(metrics, Curves(data), specs, predicted)
    rows = table[table["status"] == STATUS].set_index("run")
    assert sorted(rows.index) == sorted(predicted) and (table["status"] == "ok").sum() == 2
    assert (rows["val_loss_low"] < rows["val_loss"]).all() and (rows["val_loss"] < rows["val_loss_high"]).all()
    assert (rows[LOG_SD] > 0).all() and table.loc[table["status"] == "ok", LOG_SD].isna().all()
    spec = specs["m-4.8M-s0"]
    assert rows.loc["m-4.8M-s0", "flops"] == per_token * wsd.total_steps(spec) * 2048
    families = wsd.plan_families(specs.values())
    segment = wsd.branch_step(spec) - families[wsd.family_id(spec)].previous(wsd.branch_step(spec))
    assert rows.loc["m-4.8M-s0", "flops_spent"] == segment * 2048 * per_token  # the trunk segment, not the cooldown
    with pytest.raises(ScalelabError, match="no trained run of model m"):
        with_predicted(metrics.assign(status="failed"), Curves(data), specs, predicted)


@pytest.mark.e2e
def test_the_workflow_trains_fewer_cooldowns_and_fits_predicted_endpoints(wsd_study, tmp_path):
    from test_workflow import planned_jobs, snakemake
    from test_workflow_wsd import WSD_TINY

    study = tmp_path / "study"
    shutil.copytree(wsd_study, study, symlinks=True)
    config = {**WSD_TINY, "grid": {**WSD_TINY["grid"], "trained_cooldowns": ["4K", "16K"]}}
    (study / "config.yaml").write_text(yaml.safe_dump(config))
    dry = snakemake(study, "--dry-run", "--forceall")
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", (dry.stdout + dry.stderr).split("Job stats:", 1)[1], re.M))
    jobs = {rule: int(count) for rule, count in jobs.items()}
    assert jobs["train"] == 4 and jobs["evaluate"] == 4 and jobs["trunk"] == 6  # 6 runs, 3 segments a family
    assert planned_jobs(study) == {"aggregate": 1, "curves": 1, "endpoints": 1, "fit": 1, "suggest": 1, "report": 1}
    snakemake(study)
    table = pd.read_csv(study / "results/curves/endpoints.csv").set_index("run")
    assert sorted(table.index[table["status"] == STATUS]) == ["a-8K-s0", "b-8K-s0"]
    assert (table.loc[table["status"] == STATUS, LOG_SD] > 0).all()
    assert len(pd.read_csv(study / "results/metrics.csv")) == 4  # the trained runs
    fit = json.loads((study / "results/fit/fit.json").read_text())
    assert fit["n_points"] == 6 and not fit["excluded"]  # the fit read the 4 trained and the 2 predicted


def test_suggest_prices_a_predicted_endpoint_at_its_trunk_extension():
    from scalelab.suggest.candidates import Costs
    from scalelab.suggest.core import predicted_candidates

    done_params, done_tokens = [1e6, 1e6, 2e6, 2e6], [1e8, 2e8, 1e8, 2e8]
    cand_params, cand_tokens = np.array([1e6, 4e6]), np.array([4e8, 2e8])
    predicted, weights = predicted_candidates(done_params, cand_params, 0.2, (0.015, 0.03))
    assert predicted.tolist() == [True, False]  # a new D of a size run: predicted; a new size: trained
    assert weights.tolist() == pytest.approx([0.03**2 / (0.03**2 + 0.015**2), 1.0])
    trained = Costs(done_params, done_tokens, cand_params, cand_tokens, cooldown=0.2)
    priced = Costs(done_params, done_tokens, cand_params, cand_tokens, cooldown=0.2, predicted=predicted)
    assert priced([0]) == pytest.approx(6e6 * (0.8 * 4e8 - 0.8 * 2e8))  # its trunk extension, no cooldown
    assert priced([0]) < trained([0]) and priced([1]) == trained([1])
    assert predicted_candidates(done_params, cand_params, None, (0.015, 0.03))[1] is None  # not WSD: none


def test_the_report_counts_and_explains_predicted_endpoints(tmp_path):
    from test_report import make_study, run_report

    make_study(tmp_path, isoflop=False, extras=False)
    path = tmp_path / "results" / "metrics.csv"
    table = pd.read_csv(path)
    table.loc[:1, "status"] = STATUS
    table[LOG_SD] = np.where(table["status"] == STATUS, 0.015, np.nan)
    table.to_csv(path, index=False)
    assert run_report(tmp_path) == 0
    summary = (tmp_path / "results" / "report" / "summary.txt").read_text()
    assert "2 predicted" in summary
    page = (tmp_path / "results" / "report" / "index.html").read_text()
    assert f">{STATUS}<" in page and "the curve law&#x27;s prediction" in page
