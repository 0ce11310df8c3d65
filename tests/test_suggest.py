"""`scalelab suggest`: the contract of its command line, its bad inputs, its costs and shapes, the
paste-and-dry-run loop, and a fast version of bench/suggest_vs_grid.py on a known law."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, make_corpus
from scalelab.cli import main
from scalelab.laws.law import predict_loss
from scalelab.plan.shapes import non_embedding_params
from scalelab.suggest.candidates import Costs, candidates
from scalelab.suggest.snippet import Shapes

TRUE_LAW = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}  # Epoch AI's Chinchilla


def _ladder(path: Path, sizes, tokens, seed=0, noise=0.01) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        {
            "run": f"n{n:.0f}-d{d:.0f}",
            "params": n,
            "tokens": d,
            "flops": 6 * n * d,
            "loss": predict_loss(n, d, **TRUE_LAW) * math.exp(rng.normal(0, noise)),
        }
        for n in sizes
        for d in tokens
    ]
    frame = pd.DataFrame(rows)
    frame.to_csv(path, index=False)
    return frame


def _fit(csv: Path, out: Path, bootstrap=60) -> None:
    assert (
        main(
            [
                *"fit".split(),
                str(csv),
                "--out",
                str(out),
                "--bootstrap",
                str(bootstrap),
                "--grid-points",
                "3",
                "--holdout",
                "none",
                "--workers",
                "1",
            ]
        )
        == 0
    )


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("suggest")
    frame = _ladder(root / "metrics.csv", (2e7, 4e7, 8e7, 1.6e8), (4e8, 8e8, 1.6e9, 3.2e9))
    _fit(root / "metrics.csv", root / "fit")
    return root, frame


def _suggest(root, *args):
    return main(["suggest", str(root / "metrics.csv"), "--fit", str(root / "fit"), "--ideal-sizes", *args])


def test_contract_columns_budget_and_widths(fitted, tmp_path, capsys):
    root, frame = fitted
    out = tmp_path / "out"
    assert _suggest(root, "--target-flops", "1e21", "--budget-flops", "2e19", "--max-runs", "5", "--out", str(out)) == 0
    table = pd.read_csv(out / "suggestions.csv")
    assert list(table.columns[:4]) == ["params", "tokens", "flops", "expected_width_after"]
    assert 1 <= len(table) <= 5
    assert table["flops"].sum() <= 2e19 * (1 + 1e-9)
    np.testing.assert_allclose(table["flops"], 6 * table["params"] * table["tokens"], rtol=1e-9)
    done = set(zip(frame["params"].round(), frame["tokens"].round()))
    assert not done & set(zip(table["params"].round(), table["tokens"].round())), "a run already done"
    summary = json.loads((out / "suggest.json").read_text())
    widths = table["expected_width_after"].to_numpy()
    assert np.all(np.diff(widths) < 0) and widths[0] < summary["width_now"]
    # The width now is the bootstrap's 95 % interval of log N_opt at C, recomputed here from bootstrap.csv.
    boot = pd.read_csv(root / "fit" / "bootstrap.csv").dropna()
    g = (boot["alpha"] * boot["A"] / (boot["beta"] * boot["B"])) ** (1 / (boot["alpha"] + boot["beta"]))
    log_n = np.log(g * (1e21 / 6) ** (boot["beta"] / (boot["alpha"] + boot["beta"])))
    assert summary["width_now"] == pytest.approx(np.subtract(*np.percentile(log_n, [97.5, 2.5])), rel=1e-9)
    text = (out / "suggest.txt").read_text()
    assert "width of log N_opt now" in text and "expected after" in text and len(text.splitlines()) >= len(table) + 5


def test_spends_the_budget_rather_than_the_cheapest_runs(fitted, tmp_path):
    """Greedy width-per-FLOP underspends; the design spends most of a budget it can use."""
    root, _ = fitted
    out = tmp_path / "out"
    assert _suggest(root, "--target-flops", "1e21", "--budget-flops", "3e19", "--max-runs", "8", "--out", str(out)) == 0
    assert pd.read_csv(out / "suggestions.csv")["flops"].sum() >= 0.8 * 3e19


def test_default_target_and_budget(fitted, tmp_path):
    root, frame = fitted
    out = tmp_path / "out"
    assert _suggest(root, "--out", str(out)) == 0
    summary = json.loads((out / "suggest.json").read_text())
    assert summary["target_flops"] == pytest.approx(100 * frame["flops"].max())
    assert summary["budget_flops"] == pytest.approx(frame["flops"].sum())
    assert len(pd.read_csv(out / "suggestions.csv")) <= 8


def test_infeasible_budget_writes_an_empty_table_and_says_so(fitted, tmp_path, capsys):
    root, _ = fitted
    out = tmp_path / "out"
    assert _suggest(root, "--target-flops", "1e21", "--budget-flops", "1e3", "--out", str(out)) == 0
    assert len(pd.read_csv(out / "suggestions.csv")) == 0
    said = capsys.readouterr().out
    assert "no runs suggested" in said
    assert "no runs suggested" in (out / "suggest.txt").read_text()


def test_sizes_are_candidates(fitted, tmp_path):
    root, _ = fitted
    out = tmp_path / "out"
    # A size far above the range, with a budget that affords only it at small D: it must be considered.
    assert _suggest(root, "--target-flops", "1e21", "--budget-flops", "5e19", "--sizes", "2e9", "--out", str(out)) == 0
    from scalelab.suggest.candidates import candidate_sizes

    assert 2e9 in candidate_sizes([2e7, 4e7], [2e9])


def test_data_meta_bounds_new_token_counts_by_the_train_split(fitted, tmp_path):
    root, _ = fitted
    (tmp_path / "meta.json").write_text(json.dumps({"splits": {"train": {"tokens": 4_000_000_000}}}))
    out = tmp_path / "out"
    assert (
        _suggest(
            root,
            "--target-flops",
            "1e21",
            "--budget-flops",
            "3e19",
            "--data-meta",
            str(tmp_path / "meta.json"),
            "--out",
            str(out),
        )
        == 0
    )
    table = pd.read_csv(out / "suggestions.csv")
    assert len(table) and table["tokens"].max() <= 4e9
    unbounded = pd.read_csv(_suggest_out(root, tmp_path / "free", "--target-flops", "1e21", "--budget-flops", "3e19"))
    assert unbounded["tokens"].max() > 4e9  # the bound is what kept them in


def _suggest_out(root, out, *args):
    assert _suggest(root, *args, "--out", str(out)) == 0
    return out / "suggestions.csv"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--budget-flops", "0"], "--budget-flops"),
        (["--budget-flops=-5e18"], "--budget-flops"),
        (["--budget-flops", "-5"], "--budget-flops"),
        (["--budget-flops", "inf"], "--budget-flops"),
        (["--budget-flops", "nan"], "--budget-flops"),
        (["--target-flops", "1e15"], "below the largest run"),
        (["--sizes", "1e8", "0"], "--sizes"),
        (["--sizes", "-30000000"], "--sizes"),
        (["--max-runs", "0"], "--max-runs"),
    ],
)
def test_bad_numbers_are_one_line_and_nothing_is_written(fitted, tmp_path, capsys, args, words):
    root, _ = fitted
    out = tmp_path / "out"
    assert _suggest(root, "--out", str(out), *args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert not out.exists()


def test_a_fit_of_another_csv_is_refused(fitted, tmp_path, capsys):
    root, frame = fitted
    other = frame.copy()
    other.loc[3, "loss"] *= 1.001
    other.to_csv(tmp_path / "metrics.csv", index=False)
    code = main(
        [
            "suggest",
            str(tmp_path / "metrics.csv"),
            "--fit",
            str(root / "fit"),
            "--out",
            str(tmp_path / "o"),
            "--ideal-sizes",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "not of" in err, err
    assert not (tmp_path / "o").exists()
    # The same rows in another order are the same CSV (fit.json's fingerprint is of canonical rows).
    frame.sample(frac=1, random_state=1).to_csv(tmp_path / "shuffled.csv", index=False)
    assert (
        main(
            [
                "suggest",
                str(tmp_path / "shuffled.csv"),
                "--fit",
                str(root / "fit"),
                "--out",
                str(tmp_path / "o2"),
                "--ideal-sizes",
                "--budget-flops",
                "1e3",
            ]
        )
        == 0
    )


def test_a_fit_without_bootstrap_is_refused(fitted, tmp_path, capsys):
    root, _ = fitted
    _fit(root / "metrics.csv", tmp_path / "fit0", bootstrap=0)
    code = main(
        [
            "suggest",
            str(root / "metrics.csv"),
            "--fit",
            str(tmp_path / "fit0"),
            "--out",
            str(tmp_path / "o"),
            "--ideal-sizes",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "bootstrap" in err, err
    assert not (tmp_path / "o").exists()
    # The workflow's --or-explain writes the reason and an empty table instead.
    assert (
        main(
            [
                "suggest",
                str(root / "metrics.csv"),
                "--fit",
                str(tmp_path / "fit0"),
                "--out",
                str(tmp_path / "o"),
                "--or-explain",
                "--ideal-sizes",
            ]
        )
        == 0
    )
    assert len(pd.read_csv(tmp_path / "o" / "suggestions.csv")) == 0
    assert "bootstrap" in json.loads((tmp_path / "o" / "suggest.json").read_text())["why_none"]


def test_wsd_cost_counts_only_the_trunk_extension_and_cooldowns():
    done_params, done_tokens = [1e6, 1e6, 2e6, 2e6], [1e8, 2e8, 1e8, 2e8]
    cand_params = np.array([1e6, 1e6, 4e6, 4e6])
    cand_tokens = np.array([4e8, 1.5e8, 1e8, 2e8])
    plain = Costs(done_params, done_tokens, cand_params, cand_tokens)
    wsd = Costs(done_params, done_tokens, cand_params, cand_tokens, cooldown=0.2)
    assert plain([0]) == pytest.approx(6e6 * 4e8)
    # A longer D on an existing size: its trunk from 0.8·2e8 to 0.8·4e8, then its cooldown 0.2·4e8.
    assert wsd([0]) == pytest.approx(6e6 * ((0.8 * 4e8 - 0.8 * 2e8) + 0.2 * 4e8))
    # A D inside the trained trunk: its trunk from the branch point before it (0.8·1e8), and its cooldown.
    assert wsd([1]) == pytest.approx(6e6 * ((0.8 * 1.5e8 - 0.8 * 1e8) + 0.2 * 1.5e8))
    assert wsd([0, 1]) == pytest.approx(wsd([0]) + wsd([1]))  # they need different trunk segments
    # Two D of a new size share one trunk (to 0.8 of the longer), each with its cooldown.
    assert wsd([2, 3]) == pytest.approx(24e6 * (0.8 * 2e8 + 0.2 * 1e8 + 0.2 * 2e8))
    assert wsd([2, 3]) < plain([2, 3])


def test_candidates_reach_beyond_the_range_and_skip_runs_done():
    params, tokens = candidates([1e6, 2e6, 4e6], [1e8, 2e8, 4e8])
    assert params.max() == pytest.approx(8e6) and params.min() == pytest.approx(0.5e6)
    assert tokens.max() >= 16 * 4e8 * 0.99
    done = {(1e6, 1e8), (2e6, 2e8), (4e6, 4e8)}
    assert not done & {(round(n), round(d)) for n, d in zip(params, tokens)}


def test_new_shapes_follow_the_study_rules():
    shapes = Shapes({"a": {"n_layer": 2, "d_model": 32, "n_head": 2}, "b": {"n_layer": 2, "d_model": 64, "n_head": 2}})
    target = 2 * non_embedding_params(2, 64)
    shape = shapes.shape_for(target)
    # Widths step by the study's own (gcd 32, at most half the smallest width: 16).
    assert shape["n_layer"] == 2 and shape["n_head"] == 2 and shape["d_model"] % 16 == 0
    assert shapes.realise(target) == non_embedding_params(2, shape["d_model"])
    assert abs(math.log(shapes.realise(target) / target)) < 0.2  # the nearest width on that step
    heads = Shapes({"a": {"n_layer": 4, "d_model": 64, "n_head": 2}, "b": {"n_layer": 4, "d_model": 128, "n_head": 4}})
    wide = heads.shape_for(4 * non_embedding_params(4, 128))
    assert wide["d_model"] // wide["n_head"] == 32  # the same head size as every shape


def test_fast_simulation_stays_where_the_law_holds_and_beats_the_hand_made_extension():
    """bench/suggest_vs_grid.py, small, on a truth outside the fitted form (a D exponent that grows
    with N): after two rounds the suggested design's interval of log N_opt is narrower than the
    hand-made extension's at the same FLOPs and no more runs, at least half of its FLOPs go to runs
    within 2x of the true compute-optimal N for their own FLOPs, and no run is below the smallest size."""
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "suggest_vs_grid.py"),
            "--seeds",
            "3",
            "--rounds",
            "2",
            "--bootstrap",
            "30",
            "--truth",
            "farseer_like",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["median_width_ratio"] > 1.0, result
    assert result["flops_near_frontier"] >= 0.45 and result["runs_below_smallest"] == 0, result
    assert result["median_runs_suggested"] <= result["median_runs_hand"]
    assert result["flops_ratio_suggested_to_hand"] <= 1 + 1e-9


# ----------------------------------------------------------------------------- paste and dry-run

TINY = {
    "data": {
        "source": {"files": ["corpus/*.txt"]},
        "split": {"val": 0.1, "test": 0.1},
        "tokenizer": {"vocab_size": 300},
    },
    "models": {
        "a": {"n_layer": 1, "d_model": 16, "n_head": 2},
        "b": {"n_layer": 1, "d_model": 32, "n_head": 2},
        "c": {"n_layer": 1, "d_model": 48, "n_head": 2},
    },
    "grid": {"models": ["a", "b", "c"], "tokens": ["4K", "8K", "16K"], "seeds": [0]},
    "train": {"context": 32, "batch_size": 8, "val_tokens": 512, "val_evals": 2},
    "eval": {"test_tokens": 512, "prompts": 4, "prompt_tokens": 8, "max_new_tokens": 8, "batch_size": 4},
    "fit": {"bootstrap": 40},
}


def _planned_train_runs(study: Path, config: Path) -> set[str]:
    snakemake = str(Path(sys.executable).parent / "snakemake")
    proc = subprocess.run(
        [
            snakemake,
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(study),
            "--configfile",
            str(config),
            "--cores",
            "1",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    return set(re.findall(r"rule train:.*?wildcards: run=(\S+)", out, re.S))


def _merge(config: dict, snippet: dict) -> dict:
    merged = json.loads(json.dumps(config))
    merged["models"].update(snippet.get("models") or {})
    merged["grid"]["extra"] = list(merged["grid"].get("extra") or []) + snippet["grid"]["extra"]
    return merged


def _suggest_for_config(tmp_path, config: dict, spec: dict):
    """Metrics of every run of `config` from a known law (at each run's shape and tokens), its fit, and
    `scalelab suggest` with the spec the workflow's rule passes; returns the runs, the table and the snippet."""
    from scalelab.config import load as study_config
    from scalelab.plan.grid import expand_grid

    validated = study_config.validate(json.loads(json.dumps(config)))
    runs = expand_grid(validated)
    rng = np.random.default_rng(0)
    rows = []
    for run in runs:
        n = non_embedding_params(run.spec["n_layer"], run.spec["d_model"])
        rows.append(
            {
                "run": run.id,
                "params": n,
                "tokens": run.tokens,
                "flops": 6 * n * run.tokens,
                "loss": predict_loss(n, run.tokens, E=1.5, A=40.0, B=60.0, alpha=0.35, beta=0.3)
                * math.exp(rng.normal(0, 0.01)),
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "metrics.csv", index=False)
    _fit(tmp_path / "metrics.csv", tmp_path / "fit", bootstrap=40)
    assert (
        main(
            [
                "suggest",
                str(tmp_path / "metrics.csv"),
                "--fit",
                str(tmp_path / "fit"),
                "--out",
                str(tmp_path / "s"),
                "--spec",
                json.dumps(spec),
            ]
        )
        == 0
    )
    table = pd.read_csv(tmp_path / "s" / "suggestions.csv")
    snippet = yaml.safe_load((tmp_path / "s" / "snippet.yaml").read_text())
    return runs, table, snippet


def _check_pasted(study: Path, config: dict, runs, table, snippet, config_path: Path):
    from scalelab.config.counts import run_id

    pasted = _merge(config, snippet)
    (study / "pasted.yaml").write_text(yaml.safe_dump(pasted, sort_keys=False))
    before = _planned_train_runs(study, config_path)
    after = _planned_train_runs(study, study / "pasted.yaml")
    assert before == {run.id for run in runs}
    expected = {run_id(model, int(tokens), 0) for model, tokens in zip(table["model"], table["tokens"])}
    assert after - before == expected and before <= after
    # Each suggested N is the parameter count of the shape that trains it.
    shapes = {**config["models"], **(snippet.get("models") or {})}
    for model, params in zip(table["model"], table["params"]):
        assert params == non_embedding_params(shapes[model]["n_layer"], shapes[model]["d_model"])


def test_pasting_the_snippet_trains_exactly_the_suggested_runs(tmp_path):
    study = tmp_path / "study"
    make_corpus(study / "corpus", documents=20)
    (study / "config.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    spec = {"models": TINY["models"], "tokens_per_step": 8 * 32, "max_runs": 4}
    runs, table, snippet = _suggest_for_config(tmp_path, TINY, spec)
    assert len(table) >= 1
    for name, shape in (snippet.get("models") or {}).items():  # new shapes keep depth and heads
        assert shape["n_layer"] == 1 and shape["n_head"] == 2
    _check_pasted(study, TINY, runs, table, snippet, study / "config.yaml")


def test_pasting_into_the_default_wsd_study_trains_exactly_the_suggested_runs(tmp_path):
    """The default config (WSD, 4 x 6): the spec its rule passes (shapes, step, cooldown), then paste."""
    from scalelab.config import load as study_config

    default = study_config.read_yaml(REPO / "config" / "config.yaml")
    train = {**study_config.validate(json.loads(json.dumps(default)))["train"]}
    assert train["schedule"] == "wsd"
    spec = {
        "models": default["models"],
        "tokens_per_step": train["batch_size"] * train["context"],
        "cooldown": train["cooldown"],
    }
    runs, table, snippet = _suggest_for_config(tmp_path, default, spec)
    assert 1 <= len(table) <= 8
    summary = json.loads((tmp_path / "s" / "suggest.json").read_text())
    assert summary["cooldown"] == train["cooldown"] and "wsd" in (tmp_path / "s" / "suggest.txt").read_text()
    study = tmp_path / "study"
    study.mkdir()
    (study / "config.yaml").write_text(yaml.safe_dump(default, sort_keys=False))
    _check_pasted(study, default, runs, table, snippet, study / "config.yaml")


# ----------------------------------------------------------------------------- the report's section


def test_report_shows_what_to_run_next_and_summary_ends_with_the_best_run(tmp_path, capsys):
    from test_report import make_study, run_report

    make_study(tmp_path, bootstrap=0)
    results = tmp_path / "results"
    models = {
        "xs": {"n_layer": 2, "d_model": 32, "n_head": 2},
        "s": {"n_layer": 2, "d_model": 64, "n_head": 2},
        "m": {"n_layer": 3, "d_model": 96, "n_head": 3},
        "l": {"n_layer": 4, "d_model": 128, "n_head": 4},
    }
    assert (
        main(
            [
                "fit",
                str(results / "metrics.csv"),
                "--out",
                str(results / "fit2"),
                "--bootstrap",
                "40",
                "--grid-points",
                "2",
                "--workers",
                "1",
                "--holdout",
                "none",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "suggest",
                str(results / "metrics.csv"),
                "--fit",
                str(results / "fit2"),
                "--out",
                str(results / "suggest"),
                "--max-runs",
                "3",
                "--spec",
                json.dumps({"models": models}),
            ]
        )
        == 0
    )
    plan = json.loads((results / "suggest" / "suggest.json").read_text())
    assert 1 <= len(plan["runs"]) <= 3
    assert run_report(tmp_path, "--suggest", str(results / "suggest" / "suggest.json")) == 0
    md = (results / "report" / "report.md").read_text()
    section = md.split("## What to run next", 1)[1].split("\n## ", 1)[0]
    assert "```yaml" in section and "extra:" in section
    assert section.count("\n| ") >= 1 + len(plan["runs"])  # header and one row per run
    assert f"{plan['width_now']:.3g}" in section and f"{plan['width_after']:.3g}" in section
    assert 'class="snippet"' in (results / "report" / "index.html").read_text()
    last = (results / "report" / "summary.txt").read_text().rstrip("\n").splitlines()[-1]
    assert last.startswith("  next run") and plan["best_run"] in last


def test_an_optimum_without_a_closed_form_is_found_by_search():
    """Kaplan's form has no `optimal` in scalelab.laws.law; the search along C agrees with its
    closed form, min over N of (N_c/N)^(alpha_N/alpha_D) + D_c·6N/C."""
    from scalelab.laws.law import FORMS
    from scalelab.suggest.ensemble import _search_optimum

    form = FORMS["kaplan"]
    rows = np.array([[1.7, 8.8e13, 5.4e13, 0.076, 0.095], [2.0, 1e14, 1e13, 0.1, 0.08]])
    n_opt, d_opt = _search_optimum(form, tuple(form.param_names), rows, 1e21)
    a = rows[:, 3] / rows[:, 4]
    closed = (a * rows[:, 1] ** a * 1e21 / (6 * rows[:, 2])) ** (1 / (a + 1))
    np.testing.assert_allclose(n_opt, closed, rtol=1e-5)
    np.testing.assert_allclose(6 * n_opt * d_opt, 1e21, rtol=1e-12)


# ------------------------------------------------- the fit's forms, drift and frontier share (issue 26 item 4)


def _chinchilla_ensemble(root):
    from scalelab.suggest.ensemble import chinchilla_ensemble

    return chinchilla_ensemble(pd.read_csv(root / "fit" / "bootstrap.csv"))


def test_the_forecast_of_the_fits_interval_never_drops_below_what_the_runs_cannot_narrow(fitted):
    """The forecast of the fit's interval after the runs keeps its floor: the drift beyond the largest
    run shrinks only as a run moves that largest compute toward the target; a bare bootstrap ensemble
    forecasts its own width times the linearised ratio (and the bootstrap's small-sample factor)."""
    from scalelab.suggest.design import log_n_opt
    from scalelab.suggest.uncertainty import Component, Uncertainty, as_uncertainty, forecast, variance_parts

    root, frame = fitted
    ensemble, target, top = _chinchilla_ensemble(root), 1e21, float(frame["flops"].max())

    def parts(model):
        return variance_parts(model, lambda e, rows: log_n_opt(e, rows, target), target)

    drifting = Uncertainty([Component(1.0, ensemble, drift=0.5)], top_flops=top, stated_width=4.0)
    parts(drifting)
    floor_here = forecast(drifting, 0.0, 1.0, top, 4.0)[0]
    assert forecast(drifting, 1.0, 1.0, top, 4.0)[0] == pytest.approx(4.0)  # nothing added: the width now
    assert 0 < floor_here < 4.0
    assert forecast(drifting, 0.3, 1.0, top, 4.0)[1] == pytest.approx(floor_here)
    assert forecast(drifting, 0.3, 1.0, top, 4.0)[0] > floor_here
    # A run at 10x the largest compute removes 2.3 of the e-folds the drift grows over.
    assert forecast(drifting, 0.0, 1.0, 10 * top, 4.0)[0] < floor_here * (1 - 0.1)
    bare = as_uncertainty(ensemble)
    parts(bare)
    assert forecast(bare, 0.25, 1.2, None, 3.0)[0] == pytest.approx(3.0 * math.sqrt(0.25 * 1.2))


def test_the_forecast_carries_the_noise_the_fit_has_measured(fitted, monkeypatch):
    """A width now is in units of the noise scale s the fit estimated from n - p residual degrees of freedom:
    the forecast carries E[sigma / s_now] E[s_after / sigma] (squared, on the variance), as drawn from the
    chi-square laws of the two estimates; without room to estimate (n - p <= 1) nothing. Before, the forecast
    assumed s was sigma, and from a 3 x 3 start, where s came out low by chance, the refit measured a median
    1.71x the forecast in round 1 (bench/suggest_vs_grid.py, seeds 6-11)."""
    from scalelab.suggest import design, suggest_runs
    from scalelab.suggest.uncertainty import noise_factor

    rng = np.random.default_rng(0)
    for n_done, added in ((9, 7), (16, 9), (30, 4)):
        nu = n_done - 5
        s_now, s_after = (
            np.sqrt(rng.chisquare(nu, 400_000) / nu),
            np.sqrt(rng.chisquare(nu + added, 400_000) / (nu + added)),
        )
        assert math.sqrt(noise_factor(n_done, 5, added)) == pytest.approx(
            np.mean(s_after) * np.mean(1 / s_now), rel=0.01
        )
    assert noise_factor(9, 5, 7) > noise_factor(16, 5, 7) > noise_factor(40, 5, 7) > 1
    assert noise_factor(6, 5, 3) == 1.0 and noise_factor(5, 5, 3) == 1.0

    root, frame = fitted
    ensemble, target = _chinchilla_ensemble(root), 1e21
    _, carried = suggest_runs(ensemble, frame, target, 3e19, 4, frontier_band=None)
    monkeypatch.setattr(design, "noise_factor", lambda n_done, n_params, added: 1.0)
    _, plain = suggest_runs(ensemble, frame, target, 3e19, 4, frontier_band=None)
    assert carried.chosen == plain.chosen  # it forecasts; it does not choose
    factors = [math.sqrt(noise_factor(len(frame), 5, k)) for k in range(1, len(plain.chosen) + 1)]
    np.testing.assert_allclose(np.divide(carried.width_after, plain.width_after), factors, rtol=1e-9)


def test_the_design_weighs_each_form_by_its_share_of_the_interval(fitted):
    """Over two forms, a form whose bootstrap does not spread adds nothing to narrow: the runs are those
    the other form alone asks for, and two equal forms ask for what one does."""
    from scalelab.suggest.design import Ensemble, choose
    from scalelab.suggest.uncertainty import Component, Uncertainty

    root, frame = fitted
    spread = _chinchilla_ensemble(root)
    point = np.median(spread.samples, axis=0)
    fixed = Ensemble(spread.names, np.repeat(point[None, :], 40, axis=0), spread.loss, spread.optimum, point)
    cand_n = np.repeat([2e7, 4e7, 8e7, 1.6e8, 3.2e8], 4)
    cand_d = np.tile([6.4e9, 1.28e10, 2.56e10, 2e8], 5)
    args = (frame["params"], frame["tokens"], cand_n, cand_d, 1e21, 1e20, 4, lambda s: float(len(s)))
    alone = choose(spread, *args)
    mixed = choose(Uncertainty([Component(0.5, fixed), Component(0.5, spread)]), *args)
    twice = choose(Uncertainty([Component(0.5, spread), Component(0.5, spread)]), *args)
    assert alone.chosen and mixed.chosen == alone.chosen and twice.chosen == alone.chosen
    np.testing.assert_allclose(twice.width_after, alone.width_after, rtol=1e-9)


def test_a_form_that_drifts_makes_the_design_move_the_largest_run_toward_the_target(fitted):
    """With the fit's drift of N_opt beyond its largest run, the run that most narrows the fit's interval
    is the one furthest past the largest compute (only that shrinks the drift part); the bootstrap alone
    asks first for another."""
    from scalelab.suggest.design import choose
    from scalelab.suggest.uncertainty import Component, Uncertainty

    root, frame = fitted
    ensemble, top = _chinchilla_ensemble(root), float(frame["flops"].max())
    cand_n = np.repeat([2e7, 4e7, 8e7, 1.6e8, 3.2e8], 5)
    cand_d = np.tile([2e8, 6.4e9, 1.28e10, 2.56e10, 5.12e10], 5)
    cand_flops = 6 * cand_n * cand_d
    args = (frame["params"], frame["tokens"], cand_n, cand_d, 1e21, 1e21, 3, lambda s: float(len(s)))
    plain = choose(ensemble, *args)
    drifting = choose(Uncertainty([Component(1.0, ensemble, drift=1.0)], top_flops=top), *args)
    assert cand_flops[plain.chosen[0]] < cand_flops.max()
    assert cand_flops[drifting.chosen[0]] == cand_flops.max() > top
    assert drifting.forms_width_after[-1] >= drifting.floor_after[-1] > 0


def test_a_fit_without_a_drift_yet_says_the_forecast_lacks_it(tmp_path):
    """A 3 x 3 ladder has no rolling-origin check, so no drift of N_opt: suggest.txt says its forecast
    of the fit's interval cannot carry one."""
    _ladder(tmp_path / "metrics.csv", (2e7, 4e7, 8e7), (4e8, 8e8, 1.6e9))
    _fit(tmp_path / "metrics.csv", tmp_path / "fit", bootstrap=30)
    assert (
        main(
            [
                "suggest",
                str(tmp_path / "metrics.csv"),
                "--fit",
                str(tmp_path / "fit"),
                "--ideal-sizes",
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 0
    )
    assert "no drift of N_opt yet" in (tmp_path / "s" / "suggest.txt").read_text()


def test_half_the_suggested_flops_are_near_the_frontier_even_when_the_budget_is_not_spent(fitted, tmp_path):
    """The frontier share is of the suggested runs' own FLOPs: a budget far beyond what the runs spend
    must not let off-frontier runs take it all."""
    import scalelab

    root, _ = fitted
    out = tmp_path / "out"
    assert _suggest(root, "--target-flops", "1e21", "--budget-flops", "1e22", "--max-runs", "4", "--out", str(out)) == 0
    table = pd.read_csv(out / "suggestions.csv")
    assert len(table) and table["flops"].sum() < 0.5 * 1e22
    n_opt = scalelab.load_fit(root / "fit").allocate(6 * table["params"] * table["tokens"])["params"].to_numpy()
    near = np.abs(np.log(table["params"].to_numpy() / n_opt)) <= np.log(2) + 1e-9
    assert table["flops"][near].sum() >= 0.5 * table["flops"].sum() * (1 - 1e-9)


def test_the_frontier_share_is_asked_of_the_fits_draws_not_of_its_point_law(fitted):
    """A run whose N is 2x the median frontier of the fit's draws is within 2x in about half of them (the
    point law alone would count it in full); one at that median is within 2x in nearly all. A form's
    drift beyond the largest fitted run spreads the frontier there wider than the band: near then means
    within the draws' own spread, so the run at the median still counts in FRONTIER_CONFIDENCE of them
    (before, in too few: no run past the fitted compute could meet the share) and one far off in few."""
    from scalelab.suggest.core import FRONTIER_CONFIDENCE, frontier_draws
    from scalelab.suggest.uncertainty import Component, Uncertainty

    root, frame = fitted
    ensemble, flops = _chinchilla_ensemble(root), 1e18
    median = float(np.median(ensemble.optimum(ensemble.samples, flops)[0]))
    params = np.array([median, 2 * median])
    inside, weights, _ = frontier_draws(ensemble, params, flops / (6 * params), 2.0)
    assert weights.sum() == pytest.approx(1.0)
    held = inside @ weights
    assert held[0] >= 0.95 and 0.3 <= held[1] <= 0.7 < FRONTIER_CONFIDENCE
    drifting = Uncertainty([Component(1.0, ensemble, drift=0.5)], top_flops=flops / np.exp(3.0))
    params = np.array([median, 2 * median, np.exp(4.0) * median])
    inside, weights, _ = frontier_draws(drifting, params, flops / (6 * params), 2.0)
    spread = inside @ weights
    assert spread[0] >= FRONTIER_CONFIDENCE * (1 - 1e-9) and spread[1] > held[1] and spread[2] < 0.2


def test_a_resample_whose_optimum_does_not_move_leaves_the_design_to_the_others(fitted):
    """A resample whose N_opt at the target does not move with its parameters (a search clamped at its
    bound) makes its variance ratios 0/0. Before, that one NaN in the mean over the resamples left no run
    worth suggesting, from any start (a 3 x 3 study of bench/suggest_vs_grid.py --fit forms got none in
    three rounds)."""
    from scalelab.suggest import suggest_runs
    from scalelab.suggest.design import Ensemble

    root, frame = fitted
    base, target = _chinchilla_ensemble(root), 1e21
    stuck = np.asarray(base.samples, float)[0]
    n_stuck = float(base.optimum(stuck[None, :], target)[0][0])

    def optimum(rows, flops):
        n_opt, d_opt = base.optimum(rows, flops)
        at = np.all(np.isclose(rows, stuck, rtol=1e-2), axis=1)
        return np.where(at, n_stuck, n_opt), np.where(at, flops / (6 * n_stuck), d_opt)

    ensemble = Ensemble(base.names, base.samples, base.loss, optimum, base.point)
    chosen, design = suggest_runs(ensemble, frame, target, 3e19, 4, frontier_band=None)
    assert len(chosen) and design.why_none is None and np.isfinite(design.width_after).all()


def test_suggest_says_when_near_the_frontier_reached_past_the_band(fitted):
    """Where the fit's draws of the frontier spread wider than the band, near means within that spread: the
    design records how far it reached, and suggest.txt says so, since "within 2x" alone would read as runs
    on the frontier."""
    from scalelab.config.stage_settings import SuggestSettings
    from scalelab.suggest import suggest_runs
    from scalelab.suggest.outputs import build
    from scalelab.suggest.uncertainty import Component, Uncertainty

    root, frame = fitted
    ensemble = _chinchilla_ensemble(root)
    drifting = Uncertainty([Component(1.0, ensemble, drift=1.0)], top_flops=float(frame["flops"].max()))
    table, design = suggest_runs(drifting, frame, 1e21, 3e19, 4)
    assert len(table) and design.frontier_band_used > 2.0
    result = {
        "design": design,
        "settings": SuggestSettings(max_runs=4),
        "table": table,
        "done_sizes": frame["params"].to_numpy(),
        "done_tokens": frame["tokens"].to_numpy(),
        "target_flops": 1e21,
        "budget_flops": 3e19,
        "n_resamples": len(ensemble.samples),
    }
    out = build(result)
    assert f"near it meant within {design.frontier_band_used:.3g}x" in out["text"]
    assert out["json"]["frontier_band_used"] == pytest.approx(design.frontier_band_used)


def test_suggest_states_the_fits_interval_after_the_runs_and_its_floor(fitted, tmp_path):
    root, _ = fitted
    out = tmp_path / "out"
    assert _suggest(root, "--target-flops", "1e21", "--budget-flops", "3e19", "--out", str(out)) == 0
    summary = json.loads((out / "suggest.json").read_text())
    assert summary["width_floor_after"] <= summary["width_with_forms_after"] <= summary["width_with_forms"]
    assert (
        summary["forms"]
        and list(summary["forms"])[0] == json.loads((root / "fit" / "fit.json").read_text())["chosen_form"]
    )
    text = (out / "suggest.txt").read_text()
    assert f"expected after the runs {summary['width_with_forms_after']:.4g}" in text and "floor" in text


# ------------------------------------------------------------- the README's command, by hand (issue 31)


def test_the_readme_command_alone_gives_a_snippet_that_trains_exactly_the_suggested_runs(tmp_path, capsys):
    """`scalelab suggest results/metrics.csv --fit results/fit --out S` in a study folder, with no --spec:
    the shapes, step and corpus bound come from the study's config and meta.json beside the CSV."""
    runs, _, _ = _suggest_for_config(tmp_path, TINY, {"models": TINY["models"]})  # writes the CSV and its fit
    study = tmp_path / "study"
    make_corpus(study / "corpus", documents=20)
    (study / "config.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    (study / "results").mkdir()
    for name in ("metrics.csv", "fit"):
        os.rename(tmp_path / name, study / "results" / name)
    cwd = os.getcwd()
    os.chdir(study)
    try:
        code = main(["suggest", "results/metrics.csv", "--fit", "results/fit", "--out", "S", "--max-runs", "4"])
    finally:
        os.chdir(cwd)
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(study / "S" / "suggestions.csv")
    snippet = yaml.safe_load((study / "S" / "snippet.yaml").read_text())
    assert len(table) >= 1 and table["model"].notna().all()
    assert (table["params"] == table["params"].round()).all() and (table["tokens"] == table["tokens"].round()).all()
    assert not table.duplicated(["params", "tokens"]).any()
    assert len(snippet["grid"]["extra"]) == len(table)
    _check_pasted(study, TINY, runs, table, snippet, study / "config.yaml")


def test_without_the_study_config_one_line_names_what_to_pass(fitted, tmp_path, capsys):
    root, _ = fitted
    code = main(["suggest", str(root / "metrics.csv"), "--fit", str(root / "fit"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "--config" in err, err
    assert not (tmp_path / "o").exists()


def test_the_cosine_study_by_hand_gives_a_table_or_one_line_never_duplicates(cosine_study, tmp_path, capsys):
    """The tiny cosine study, the README's command alone: buildable named runs with integer sizes within
    the corpus, or (a fit without an optimum) one line and no table; never the same run twice."""
    import shutil

    study = tmp_path / "study"
    shutil.copytree(cosine_study / "results", study / "results")
    shutil.copy(cosine_study / "config.yaml", study / "config.yaml")
    code = main(
        [
            "suggest",
            str(study / "results" / "metrics.csv"),
            "--fit",
            str(study / "results" / "fit"),
            "--out",
            str(tmp_path / "S"),
        ]
    )
    out, err = capsys.readouterr()
    if code == 1:  # a fit with no law or no resamples: one line naming it, nothing written
        assert len(err.strip().splitlines()) == 1 and "the fit" in err and "--config" not in err, err
        assert not (tmp_path / "S").exists()
        return
    assert code == 0, err
    table = pd.read_csv(tmp_path / "S" / "suggestions.csv")
    snippet = (tmp_path / "S" / "snippet.yaml").read_text()
    assert not table.duplicated(["params", "tokens"]).any()
    if len(table):
        meta = json.loads((study / "results" / "data" / "meta.json").read_text())
        assert table["model"].notna().all() and (table["params"] == table["params"].round()).all()
        assert (table["tokens"] <= meta["splits"]["train"]["tokens"]).all()
        assert "extra:" in snippet
    else:
        assert "no runs suggested" in out and "extra:" not in snippet
