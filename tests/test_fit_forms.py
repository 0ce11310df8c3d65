"""The law forms of scalelab.laws.law.FORMS: recovery of known parameters, the choice by out-of-sample
error, prediction intervals, load_fit, and every bad input of the forms (one line each)."""

from __future__ import annotations

import json
import subprocess
import sys

from scalelab import fit  # first: it pins OpenBLAS to one thread before numpy and scipy load

import numpy as np
import pandas as pd
import pytest

import scalelab
from scalelab.laws import synthetic
from scalelab.errors import ScalelabError
from scalelab.fit import forms as F
from scalelab.fit.inputs import rows_sha256
from scalelab.laws.law import FORMS, effective_tokens

KAPLAN = {"E": 1.6, "N_c": 3e6, "D_c": 2e8, "alpha_N": 0.35, "alpha_D": 0.4}
DC = {**synthetic.CHINCHILLA, "R_star": 6.0}


def _grid(n_sizes=6, n_tokens=6):
    n, d = np.meshgrid(np.geomspace(1e7, 3e9, n_sizes), np.geomspace(1e9, 1e11, n_tokens))
    return n.ravel(), d.ravel()


def _frame(n, d, loss, **extra):
    return pd.DataFrame(
        {"run": [f"r{i}" for i in range(len(n))], "params": n, "tokens": d, "flops": 6 * n * d, "loss": loss, **extra}
    )


def _noisy(loss, noise, seed):
    return loss * np.exp(np.random.default_rng(seed).normal(0, noise, len(loss)))


@pytest.mark.parametrize("name, truth", [("chinchilla", synthetic.CHINCHILLA), ("kaplan", KAPLAN)])
def test_each_form_recovers_its_known_parameters(name, truth):
    n, d = _grid()
    form = FORMS[name]
    data = F.form_data(n, d, form.loss(truth, n, d))
    best = F.fit_form(form, data, 4)
    got = F.natural(form, best["theta"], data)
    for key, value in truth.items():
        assert got[key] == pytest.approx(value, rel=1e-3), key
    assert best["converged"] and best["starts_at_optimum"] >= 1


def test_data_constrained_recovers_r_star_from_repeated_runs():
    n, d = _grid(5, 6)
    unique = np.full(n.shape, 1e9)  # 1 to 100 epochs of one billion unique tokens
    form = FORMS["data_constrained"]
    loss = form.loss(DC, n, d, unique)
    data = F.form_data(n, d, loss, unique)
    got = F.natural(form, F.fit_form(form, data, 4)["theta"], data)
    assert got["R_star"] == pytest.approx(DC["R_star"], rel=1e-2)
    assert got["alpha"] == pytest.approx(DC["alpha"], rel=1e-2)
    # One epoch: D' = D, so the form is Chinchilla's.
    assert effective_tokens(1e9, 1e9, 6.0) == pytest.approx(1e9)


def test_chinchilla_form_gives_the_point_estimate_of_the_approach3_code():
    """The generic form fitter against fit_approach3 (unchanged from before the forms): the same
    optimum to 1e-6 relative in every parameter and in the predictions."""
    ladder = synthetic.ladder(4, 6, noise=0.02, seed=3)
    old = fit.fit_approach3(ladder["params"], ladder["tokens"], ladder["loss"], workers=1)
    form = FORMS["chinchilla"]
    data = F.form_data(ladder["params"], ladder["tokens"], ladder["loss"])
    new = F.natural(form, F.fit_form(form, data, 4)["theta"], data)
    for key in ("E", "A", "B", "alpha", "beta"):
        assert new[key] == pytest.approx(old[key], rel=1e-6), key
    n, d = np.geomspace(1e7, 1e11, 5), np.geomspace(1e9, 1e13, 5)
    assert form.loss(new, n, d) == pytest.approx(
        fit.predict_loss(n, d, *(old[k] for k in fit.PARAM_NAMES[:5])), rel=1e-6
    )


@pytest.mark.parametrize("truth", ["kaplan", "chinchilla"])
def test_auto_picks_the_form_the_data_come_from(truth):
    n, d = _grid()
    law = KAPLAN if truth == "kaplan" else synthetic.CHINCHILLA
    frame = _frame(n, d, _noisy(FORMS[truth].loss(law, n, d), 0.002, 1))
    result = fit.fit_frame(frame, bootstrap=0, workers=1)
    assert result["chosen_form"] == truth, result["chosen_form_why"]
    assert result["forms"]["data_constrained"]["fitted"] is False


def test_bootstrap_spread_matches_the_spread_over_independent_noise_draws():
    """Each resample is refitted from several starts, so the bootstrap explores: its spread of
    alpha and E matches the spread of the estimates over 12 independent noise draws (within 2x)."""
    n, d = _grid(5, 5)
    form = FORMS["chinchilla"]
    clean = form.loss(synthetic.CHINCHILLA, n, d)
    estimates = []
    for seed in range(12):
        data = F.form_data(n, d, _noisy(clean, 0.01, seed))
        estimates.append(F.natural(form, F.fit_form(form, data, 4)["theta"], data))
    data = F.form_data(n, d, _noisy(clean, 0.01, 99))
    best = F.fit_form(form, data, 4)
    runs = F.bootstrap_form(form, data, best["theta"], 60, 0, 4)
    boot = [F.natural(form, theta, data) for theta in runs[:, 1:] if np.all(np.isfinite(theta))]
    for key in ("alpha", "E"):
        spread_draws = np.std([e[key] for e in estimates])
        spread_boot = np.std([b[key] for b in boot])
        assert 0.5 < spread_boot / spread_draws < 2.0, (key, spread_boot, spread_draws)


@pytest.fixture(scope="module")
def fitted_folder(tmp_path_factory):
    n, d = _grid(5, 5)
    frame = _frame(n, d, _noisy(FORMS["kaplan"].loss(KAPLAN, n, d), 0.01, 4))
    out = tmp_path_factory.mktemp("fit")
    frame.to_csv(out / "metrics.csv", index=False)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "scalelab",
            "fit",
            str(out / "metrics.csv"),
            "--out",
            str(out / "fit"),
            "--bootstrap",
            "40",
            "--workers",
            "1",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out


def test_fit_json_has_forms_choice_inputs_and_holdout_intervals(fitted_folder):
    result = json.loads((fitted_folder / "fit" / "fit.json").read_text())
    assert result["schema_version"] == 2 and result["flops_convention"] == "6*N*D"
    assert set(result["forms"]) == set(FORMS) and result["chosen_form"] in FORMS and result["chosen_form_why"]
    frame = fit.prepare(pd.read_csv(fitted_folder / "metrics.csv"))[0]
    assert result["inputs"]["rows_sha256"] == rows_sha256(frame)
    assert rows_sha256(frame.sample(frac=1, random_state=0)) != rows_sha256(frame)  # order is part of the rows
    names = {c["name"] for c in result["validation"]["checks"]}
    assert {c["axis"] for c in result["validation"]["checks"]} == {"params", "tokens", "flops"}
    assert "spread" in result["validation"]["rule"]
    for section in result["forms"].values():
        if section["fitted"]:
            assert set(section["validation"]) <= names and section["validation"]
            assert 1 <= section["starts_at_optimum"] <= section["refined"]
    hold = result["holdout"]
    assert hold["form"] == result["chosen_form"]
    largest = frame["params"].max()
    assert sorted(hold["held_out"]) == sorted(frame["run"][frame["params"] >= largest / 1.01])  # the whole size
    assert all(lo <= p <= hi for lo, p, hi in zip(hold["low"], hold["predicted"], hold["high"]))
    assert hold["inside"] == [lo <= a <= hi for lo, a, hi in zip(hold["low"], hold["actual"], hold["high"])]
    boot = pd.read_csv(fitted_folder / "fit" / "forms_bootstrap.csv")
    assert set(boot["form"]) == {"chinchilla", "kaplan"} and (boot["form"] == "kaplan").sum() == 40


def test_load_fit_predicts_with_intervals_and_allocates(fitted_folder):
    law = scalelab.load_fit(fitted_folder / "fit")
    assert law.law["form"] == law.form.name and set(law.bootstrap.columns) == set(law.form.param_names)
    table = law.predict([1e8, 1e10], [1e10, 1e12])
    assert list(table.columns) == [
        "params",
        "tokens",
        "mean",
        "mean_ci_lower",
        "mean_ci_upper",
        "obs_ci_lower",
        "obs_ci_upper",
        "extrapolation",
    ]
    assert np.all(table["obs_ci_lower"] < table["mean"]) and np.all(table["mean"] < table["obs_ci_upper"])
    # Further out, the interval is wider.
    ratio = table["obs_ci_upper"] / table["obs_ci_lower"]
    assert ratio.iloc[1] > ratio.iloc[0]
    assert law.residual_sigma > 0
    alloc = law.allocate([1e21, 1e22])
    assert np.all(np.isfinite(alloc[["params", "tokens", "loss", "low", "high"]].to_numpy()))
    assert alloc["params"].iloc[1] > alloc["params"].iloc[0]
    assert 6 * alloc["params"].iloc[0] * alloc["tokens"].iloc[0] == pytest.approx(1e21)


def test_load_fit_answers_as_statsmodels_does(fitted_folder):
    """Issue 31 item 9: params, conf_int(alpha), summary(), and predict's mean_ci (the law's own
    uncertainty) inside obs_ci (a new run's), with alpha= and level= naming the same interval."""
    law = scalelab.load_fit(fitted_folder / "fit")
    assert list(law.params.index) == list(law.form.param_names)
    boot = law.bootstrap.apply(pd.to_numeric, errors="coerce")
    ci = law.conf_int(alpha=0.1)
    assert list(ci.columns) == ["lower", "upper"] and list(ci.index) == list(law.form.param_names)
    for name in law.form.param_names:
        np.testing.assert_allclose(ci.loc[name], np.percentile(boot[name].dropna(), [5, 95]), rtol=1e-12)
    assert (law.conf_int().loc[:, "upper"] - law.conf_int().loc[:, "lower"] >= ci["upper"] - ci["lower"]).all()
    cov = law.cov_params()
    assert list(cov.index) == list(cov.columns) == list(law.form.param_names)
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), boot[list(cov.index)].dropna().std(ddof=1), rtol=1e-9)
    text = law.summary()
    assert law.form.name in text and "coef" in text and "std err" in text and "[0.025" in text
    assert all(f"{value:.4g}" in text for value in law.params)
    table = law.predict([1e8, 1e10], [1e10, 1e12], alpha=0.1)
    assert (table["obs_ci_lower"] <= table["mean_ci_lower"]).all()
    assert (table["mean_ci_lower"] <= table["mean"]).all() and (table["mean"] <= table["mean_ci_upper"]).all()
    assert (table["mean_ci_upper"] <= table["obs_ci_upper"]).all()
    assert (table["mean_ci_upper"] < table["obs_ci_upper"]).any()  # a new run's scatter is more than the law's
    pd.testing.assert_frame_equal(table, law.predict([1e8, 1e10], [1e10, 1e12], level=0.9))
    with pytest.raises(ScalelabError, match="alpha must be between 0 and 1"):
        law.predict(1e8, 1e10, alpha=2)


def test_a_prediction_outside_the_fitted_runs_says_how_far(fitted_folder):
    law = scalelab.load_fit(fitted_folder / "fit")
    ranges = json.loads((fitted_folder / "fit" / "fit.json").read_text())["inputs"]["range"]
    (n_low, n_high), (d_low, d_high) = ranges["params"], ranges["tokens"]
    inside, bigger, starved = law.extrapolation([n_low, 4 * n_high, n_high], [d_high, 4 * d_high, d_low / 8])
    assert inside == ""
    assert bigger.startswith("N 4x above") and "D 4x above" in bigger and "tokens/param" not in bigger
    assert "tokens/param" in starved and "below the fitted runs" in starved and not starved.startswith("N")
    assert law.predict(4 * n_high, 4 * d_high)["extrapolation"].iloc[0] == bigger
    assert all(law.allocate([1e24])["extrapolation"].str.contains("above"))


def test_fit_txt_is_deterministic_and_never_prints_none(fitted_folder, tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "scalelab",
            "fit",
            str(fitted_folder / "metrics.csv"),
            "--out",
            str(tmp_path),
            "--bootstrap",
            "40",
            "--workers",
            "2",
        ],
        check=True,
        capture_output=True,
    )
    first, second = (fitted_folder / "fit" / "fit.txt").read_text(), (tmp_path / "fit.txt").read_text()
    assert first.replace(str(fitted_folder / "metrics.csv"), "") == second.replace(
        str(fitted_folder / "metrics.csv"), ""
    )
    assert "None" not in first and "Date:" not in first and "Time:" not in first
    assert "refined starts reached it" in first and "relative residuals" in first


def test_prediction_interval_mixes_disagreeing_forms():
    from scalelab.laws.fitted import predictive_interval

    one = predictive_interval([(1.0, np.log([[2.0]]), 0.01)])
    both = predictive_interval([(0.5, np.log([[2.0]]), 0.01), (0.5, np.log([[2.2]]), 0.01)])
    assert np.exp(one[1][0]) < 2.1 and np.exp(both[1][0]) > 2.15 and np.exp(both[0][0]) < 1.98


# ----------------------------------------------------------------------------- bad input


def _run_fit(csv, out, *flags):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "scalelab",
            "fit",
            str(csv),
            "--out",
            str(out),
            "--bootstrap",
            "0",
            "--workers",
            "1",
            *flags,
        ],
        capture_output=True,
        text=True,
    )


def _one_line_error(proc, *words):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture()
def small_csv(tmp_path):
    n, d = _grid(4, 4)
    path = tmp_path / "m.csv"
    _frame(n, d, FORMS["chinchilla"].loss(synthetic.CHINCHILLA, n, d)).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--forms", "chinchilla", "hoffmann"], ["unknown law form", "hoffmann"]),
        (["--form", "nope"], ["unknown law form", "nope"]),
        (["--forms", "chinchilla", "--form", "kaplan"], ["form", "kaplan", "not among"]),
        (["--forms", "data_constrained"], ["fit.forms", "unique_tokens"]),
        (["--form", "data_constrained"], ["fit.form", "unique_tokens"]),
    ],
)
def test_bad_form_settings_are_one_line(small_csv, tmp_path, flags, words):
    _one_line_error(_run_fit(small_csv, tmp_path / "out", *flags), *words)
    assert not (tmp_path / "out").exists()


def test_data_constrained_without_repetition_is_one_line(small_csv, tmp_path):
    frame = pd.read_csv(small_csv)
    frame["unique_tokens"] = frame["tokens"] * 2  # every run sees fresh data
    frame.to_csv(small_csv, index=False)
    _one_line_error(
        _run_fit(small_csv, tmp_path / "out", "--forms", "chinchilla", "data_constrained"), "fit.forms", "repeat"
    )


def test_implausible_losses_are_refused_unless_allowed(small_csv, tmp_path):
    frame = pd.read_csv(small_csv)
    frame["loss"] *= 1e300
    frame.to_csv(small_csv, index=False)
    _one_line_error(_run_fit(small_csv, tmp_path / "out"), "plausible loss range", "--allow-any-loss")
    assert (
        _run_fit(
            small_csv, tmp_path / "out", "--allow-any-loss", "--holdout", "none", "--forms", "chinchilla"
        ).returncode
        == 0
    )


def test_duplicate_columns_are_refused(small_csv, tmp_path):
    text = small_csv.read_text().splitlines()
    rows = [line + "," + line.split(",")[4] for line in text[1:]]
    small_csv.write_text("\n".join([text[0] + ",loss", *rows]) + "\n")
    _one_line_error(_run_fit(small_csv, tmp_path / "out"), "loss", "twice")


def test_the_config_refuses_bad_forms_when_the_dag_is_built():
    from scalelab.config.stage_settings import FitSettings

    with pytest.raises(ScalelabError, match="unknown law form"):
        FitSettings.from_dict({"forms": ["chinchilla", "power"]}, where="config fit")
    with pytest.raises(ScalelabError, match="not among the forms"):
        FitSettings.from_dict({"forms": ["chinchilla"], "form": "kaplan"}, where="config fit")


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda d: (d / "fit.json").write_text("{not json"), ["fit.json"]),
        (lambda d: (d / "forms_bootstrap.csv").unlink(), ["forms_bootstrap.csv", "not found"]),
        (
            lambda d: _edit(
                d,
                lambda j: j["forms"][j["chosen_form"]]["params"].update(
                    {"alpha_N" if j["chosen_form"] == "kaplan" else "alpha": -5}
                ),
            ),
            ["alpha", "minimum of 0"],
        ),
        (lambda d: _edit(d, lambda j: j["holdout"].update(low=[9.0] * len(j["holdout"]["low"]))), ["low end"]),
        (lambda d: _edit(d, lambda j: j.update(chosen_form="kaplan_2")), ["kaplan_2", "not among"]),
    ],
)
def test_load_fit_on_a_damaged_folder_is_one_line(fitted_folder, tmp_path, damage, words):
    import shutil

    folder = tmp_path / "fit"
    shutil.copytree(fitted_folder / "fit", folder)
    damage(folder)
    code = f"import scalelab; scalelab.load_fit({str(folder)!r}).predict(1e6, 1e8)"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from scalelab.errors import ScalelabError\ntry:\n    {code}\n"
            "except ScalelabError as e:\n    raise SystemExit(str(e))",
        ],
        capture_output=True,
        text=True,
    )
    _one_line_error(proc, *words)


def _edit(folder, change):
    data = json.loads((folder / "fit.json").read_text())
    change(data)
    (folder / "fit.json").write_text(json.dumps(data))


def test_load_fit_on_a_foreign_folder_is_one_line(tmp_path):
    with pytest.raises(ScalelabError, match="fit.json"):
        scalelab.load_fit(tmp_path)
    with pytest.raises(ScalelabError, match="no such fit folder"):
        scalelab.load_fit(tmp_path / "nowhere")


def test_a_large_csv_is_screened_on_a_subsample_and_reports_progress(tmp_path, monkeypatch):
    """A CSV of more than SCREEN_ROWS rows: the starts are scored and refined on a fixed subsample and
    only the best is minimised on every row. The limit is lowered here (a tenth of the rows, as 20,000
    of 200,000) so that the test costs seconds, not minutes."""
    from scalelab.fit import forms as fit_forms

    n = 40_000
    monkeypatch.setattr(fit_forms, "SCREEN_ROWS", n // 10)
    rows_seen = []  # rows of each minimisation
    minimise = fit_forms.minimise

    def counting(form, theta0, data, *args, **kwargs):
        rows_seen.append(len(data.x))
        return minimise(form, theta0, data, *args, **kwargs)

    monkeypatch.setattr(fit_forms, "minimise", counting)
    rng = np.random.default_rng(0)
    params, tokens = np.exp(rng.uniform(np.log(1e7), np.log(3e9), n)), np.exp(rng.uniform(np.log(1e9), np.log(1e11), n))
    frame = _frame(params, tokens, _noisy(FORMS["chinchilla"].loss(synthetic.CHINCHILLA, params, tokens), 0.01, 0))
    messages = []
    result = fit.fit_frame(
        frame, bootstrap=0, forms=("chinchilla",), holdout="none", workers=1, progress=messages.append
    )
    assert result["forms"]["chinchilla"]["params"]["alpha"] == pytest.approx(0.34, rel=0.02)
    assert any("chinchilla" in m for m in messages)
    assert rows_seen.count(n // 10) >= 2 and rows_seen.count(n) >= 1  # refined on the subsample, then on every row


def test_load_study_refuses_an_impossible_older_fit_json(tmp_path):
    """An older fit.json (no forms) with alpha = -5 would predict 4e32: one line instead."""
    root = tmp_path / "results"
    (root / "fit").mkdir(parents=True)
    pd.DataFrame({"run": ["a"], "params": [1e6], "tokens": [1e8], "val_loss": [3.0], "status": ["missing"]}).to_csv(
        root / "metrics.csv", index=False
    )
    (root / "fit" / "fit.json").write_text(json.dumps({"approach3": {**synthetic.CHINCHILLA, "alpha": -5}}))
    pd.DataFrame(columns=list(synthetic.CHINCHILLA)).to_csv(root / "fit" / "bootstrap.csv", index=False)
    with pytest.raises(ScalelabError, match=r"approach3.alpha = -5 is outside"):
        scalelab.load_study(tmp_path)


def test_prediction_intervals_cover_new_runs_of_simulated_ladders(tmp_path):
    """12 ladders (5 x 5, 1 % noise) from Kaplan's form; 46 fresh noisy runs each, inside the grid
    and up to 3x beyond it in N and D: the 95 % intervals must cover about 95 % of them. (A
    smaller version of bench/fit_coverage.py, whose larger runs are in docs/benchmarks.md.) 12, not
    4: the runs of one ladder share its fit, so 4 ladders left the coverage to the luck of 4 fits."""
    sizes, tokens = np.geomspace(1e7, 1e9, 5), np.geomspace(1e9, 1e11, 5)
    n, d = (a.ravel() for a in np.meshgrid(sizes, tokens))
    new_n = np.concatenate([n, np.repeat(np.geomspace(1.5e9, 3e9, 3), 5), np.repeat([2e9, 3e9], 3)])
    new_d = np.concatenate([d, np.tile(tokens, 3), np.tile([1.5e11, 2e11, 3e11], 2)])
    inside = []
    for seed in range(12):
        rng = np.random.default_rng(1000 + seed)
        loss = FORMS["kaplan"].loss(KAPLAN, n, d) * np.exp(rng.normal(0, 0.01, n.size))
        out = tmp_path / f"fit{seed}"
        fit.write_outputs(fit.fit_all(_frame(n, d, loss), bootstrap=30, seed=seed, workers=1), out)
        pred = scalelab.load_fit(out).predict(new_n, new_d)
        actual = FORMS["kaplan"].loss(KAPLAN, new_n, new_d) * np.exp(rng.normal(0, 0.01, new_n.size))
        inside += ((actual >= pred["obs_ci_lower"]) & (actual <= pred["obs_ci_upper"])).tolist()
    assert 0.88 <= np.mean(inside) <= 0.99, np.mean(inside)


def test_log_distance_is_zero_inside_the_fitted_runs_and_counts_e_folds_outside():
    from scalelab.laws.fitted import log_distance

    ranges = {"params": [1e7, 1e9], "tokens": [1e9, 1e11], "tokens_per_param": [1.0, 1000.0]}
    inside = log_distance([1e8], [1e10], ranges)
    above = log_distance([np.e * 1e9], [1e11], ranges)  # N one e-fold above; tokens/param 37 inside
    both = log_distance([np.e * 1e9], [1e9], ranges)  # N one e-fold above, tokens/param 1/e: one below
    assert inside[0] == 0
    assert above[0] == pytest.approx(1.0)
    assert both[0] == pytest.approx(np.sqrt(2))


def test_extrapolation_sigma_is_an_upper_bound_that_does_not_collapse_and_tracks_a_known_scatter():
    """Each check is one observation (its runs share one refit): the one-sided upper bound stays
    above 0 when the checks miss no more than their scatter, stays small there, and lies above
    a real scatter per e-fold when there is one."""
    from scalelab.fit.evidence import extrapolation_sigma

    rng = np.random.default_rng(0)
    distance = [rng.uniform(0.2, 2, 10) for _ in range(12)]
    plain = [(rng.normal(0, 0.01, 10), d, 0.01) for d in distance]
    bound = extrapolation_sigma(plain)
    assert 0 < bound < 0.02
    growing = [(rng.normal(0, np.sqrt(0.01**2 + (0.05 * d) ** 2)), d, 0.01) for d in distance]
    assert 0.05 < extrapolation_sigma(growing) < 0.15
    assert extrapolation_sigma([(z, np.zeros(10), s) for z, _, s in plain]) is None  # nothing was outside its refit


def test_a_law_that_extrapolated_badly_in_its_checks_gets_wider_intervals_outside_the_runs(tmp_path):
    """Runs whose loss bends away from Chinchilla's form toward the largest models (x 1.1 at the
    largest): the form fitted to them misses its own out-of-sample checks by more than its
    scatter, learns an extrapolation scatter (several times that of the same runs without the
    bend), and its intervals widen with the distance outside the runs, not inside them."""
    from scalelab.laws.fitted import log_distance

    n, d = _grid(6, 6)
    where = np.log(n / n.min()) / np.log(n.max() / n.min())
    learnt = {}
    for bend in (0.0, 0.1):
        loss = _noisy(FORMS["chinchilla"].loss(synthetic.CHINCHILLA, n, d) * np.exp(bend * where**3), 0.003, 1)
        out = tmp_path / f"bend{bend}"
        fit.write_outputs(
            fit.fit_all(_frame(n, d, loss), bootstrap=20, forms=("chinchilla",), form="chinchilla", workers=1), out
        )
        learnt[bend] = scalelab.load_fit(out)
    per_efold = learnt[0.1].fitted["chinchilla"]["extrapolation_sigma"]
    assert per_efold > 3 * learnt[0.0].fitted["chinchilla"]["extrapolation_sigma"], per_efold
    assert "extrapolation scatter" in (tmp_path / "bend0.1" / "fit.txt").read_text()
    pred = learnt[0.1].predict([1e8, 9e9, 3e10], [1e10, 1e11, 1e11])
    width = (np.log(pred["obs_ci_upper"]) - np.log(pred["obs_ci_lower"])).to_numpy()
    assert pred["extrapolation"].iloc[0] == "" and pred["extrapolation"].iloc[1] != ""
    assert width[0] < width[1] < width[2]
    outside = log_distance(pred["params"], pred["tokens"], learnt[0.1].fit["inputs"]["range"])
    assert width[2] / 2 >= 1.96 * per_efold * outside[2]  # at least the learnt scatter, at 95 %


def test_the_data_meta_gives_every_run_its_unique_tokens_so_repeated_runs_fit_the_data_constrained_form(tmp_path):
    """The workflow's fit passes results/data/meta.json: runs longer than the train split repeat it
    (U = min(D, train tokens)), and the data-constrained form is fitted and recovers R*; with a
    train split longer than every run it says no run repeats its data."""
    n, d = _grid(5, 6)
    train_tokens = 1e9
    loss = FORMS["data_constrained"].loss(DC, n, d, np.minimum(d, train_tokens))
    csv = tmp_path / "m.csv"
    _frame(n, d, loss).to_csv(csv, index=False)
    for tokens, fitted in ((train_tokens, True), (1e12, False)):
        meta = tmp_path / f"meta{tokens:g}.json"
        meta.write_text(json.dumps({"splits": {"train": {"tokens": tokens}}}))
        out = tmp_path / f"out{tokens:g}"
        proc = _run_fit(csv, out, "--data-meta", str(meta), "--holdout", "none")
        assert proc.returncode == 0, proc.stderr
        section = json.loads((out / "fit.json").read_text())["forms"]["data_constrained"]
        assert section["fitted"] is fitted, section
        if fitted:
            assert section["params"]["R_star"] == pytest.approx(DC["R_star"], rel=0.05)
        else:
            assert "repeats its data" in section["why"]


def test_a_data_meta_without_the_train_split_is_one_line(small_csv, tmp_path):
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"splits": {}}))
    _one_line_error(
        _run_fit(small_csv, tmp_path / "out", "--data-meta", str(meta)), "--data-meta", "splits.train.tokens"
    )
    assert not (tmp_path / "out").exists()
