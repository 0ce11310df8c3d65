"""Tests of the fit stage: synthetic ladders from a known law, bad input, the CLI."""

from scalelab import fit  # first: it pins OpenBLAS to one thread before numpy and scipy load

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize, minimize_scalar
from scipy.special import huber

from scalelab.errors import ScalelabError

from scalelab.laws import synthetic

TRUTH = synthetic.CHINCHILLA  # Hoffmann et al. (2022)
LAW = ("E", "A", "B", "alpha", "beta")


def ladder(n_sizes=6, n_tokens=6, noise=0.0, seed=0, truth=TRUTH):
    """Every model size (10M..3B params) trained at every token count (100M..100B)."""
    df = pd.DataFrame(synthetic.ladder(n_sizes, n_tokens, noise=noise, seed=seed, law=truth)).drop(columns="flops")
    return df.assign(run=df["run"].astype(str), status="ok")


def log_data(df):
    return np.log(df["params"].to_numpy()), np.log(df["tokens"].to_numpy()), np.log(df["loss"].to_numpy())


def quick(df, **kwargs):
    """fit_frame with a small start grid and bootstrap, for tests not about those."""
    return fit.fit_frame(df, **{"bootstrap": 0, "grid_points": 2, "workers": 1, **kwargs})


@pytest.fixture(scope="module")
def noisy():
    return ladder(noise=0.01, seed=1)


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "scalelab", "fit", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def assert_one_line_error(proc, *words):
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for word in words:
        assert word in proc.stderr


# ---------------------------------------------------------------------------------------------
# The objective


def test_gradient_matches_central_differences(noisy):
    data = log_data(noisy)
    truth_theta = [math.log(TRUTH["A"]), math.log(TRUTH["B"]), math.log(TRUTH["E"]), TRUTH["alpha"], TRUTH["beta"]]
    # At the truth most residuals are beyond delta (1 % noise), at the starts nearly all are;
    # the last point puts residuals on both sides of delta.
    thetas = [truth_theta, *fit.start_grid(2)[[3, 17, 30]], np.add(truth_theta, [0.01, -0.01, 0.001, 0.002, 0])]
    for theta in thetas:
        value, grad = fit.huber_objective(np.asarray(theta, float), *data)
        step = 1e-6
        numeric = [
            (fit.huber_objective(theta + step * e, *data)[0] - fit.huber_objective(theta - step * e, *data)[0])
            / (2 * step)
            for e in np.eye(5)
        ]
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7 * max(1.0, np.abs(grad).max()))


def test_objective_is_the_summed_huber_loss_of_log_residuals(noisy):
    data = log_data(noisy)
    theta = np.array([6.0, 6.0, 0.5, 0.3, 0.3])
    predicted = fit.predict_loss(
        noisy["params"], noisy["tokens"], E=math.exp(0.5), A=math.exp(6.0), B=math.exp(6.0), alpha=0.3, beta=0.3
    )
    residual = np.log(predicted) - np.log(noisy["loss"])
    assert fit.huber_objective(theta, *data)[0] == pytest.approx(huber(1e-3, residual).sum(), rel=1e-12)
    # Summed, not averaged: duplicating every row doubles the objective and keeps the optimum.
    single = fit.fit_approach3(noisy["params"], noisy["tokens"], noisy["loss"], fit.start_grid(2))
    double = pd.concat([noisy, noisy])
    twice = fit.fit_approach3(double["params"], double["tokens"], double["loss"], fit.start_grid(2))
    assert twice["objective"] == pytest.approx(2 * single["objective"], rel=1e-6)
    for name in LAW:
        assert twice[name] == pytest.approx(single[name], rel=1e-4)


def test_averaged_huber_stops_early_which_the_summed_fit_does_not(noisy):
    data = log_data(noisy)
    starts = fit.start_grid(2)

    def averaged(theta, *args):
        value, grad = fit.huber_objective(theta, *args)
        return value / len(args[0]), grad / len(args[0])

    averaged_ends = np.array(
        [fit.huber_objective(minimize(averaged, s, args=data, jac=True, method="L-BFGS-B").x, *data)[0] for s in starts]
    )
    summed_ends = np.array([fit.minimise(s, *data)[0] for s in starts])
    optimum = fit.fit_approach3(noisy["params"], noisy["tokens"], noisy["loss"], starts)["objective"]
    # With scipy's default tolerances the averaged loss (~5e-6) stops L-BFGS-B early from every
    # start; the summed loss with our tolerances reaches the optimum from several.
    assert averaged_ends.min() > 1.01 * optimum
    assert np.sum(summed_ends <= optimum * (1 + 1e-6)) >= 2


# ---------------------------------------------------------------------------------------------
# Approach 3


def test_default_grid_has_over_500_starts_spanning_the_ranges():
    starts = fit.start_grid()
    assert len(starts) >= 500 and len(np.unique(starts, axis=0)) == len(starts)
    for column, (low, high) in enumerate([(0, 25), (0, 25), (-1, 1.5), (0, 2), (0, 2)]):
        assert starts[:, column].min() == low and starts[:, column].max() == high


def test_recovers_the_law_exactly_without_noise():
    df = ladder()
    law = fit.fit_approach3(df["params"], df["tokens"], df["loss"], fit.start_grid(3), workers=2)
    assert law["objective"] < 1e-12
    for name in LAW:
        assert law[name] == pytest.approx(TRUTH[name], rel=1e-5), name
    assert law["a"] == pytest.approx(TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"]), rel=1e-5)


def test_recovers_the_law_with_small_noise():
    df = ladder(8, 8, noise=0.001, seed=0)  # 0.1 % multiplicative noise
    law = fit.fit_approach3(df["params"], df["tokens"], df["loss"], fit.start_grid(3), workers=2)
    tolerance = {"E": 0.01, "A": 0.10, "B": 0.10, "alpha": 0.02, "beta": 0.02}  # ~3x the spread over seeds
    for name in LAW:
        assert law[name] == pytest.approx(TRUTH[name], rel=tolerance[name]), name


def test_bootstrap_intervals_cover_the_truth_in_most_trials():
    trials, covered, widths = 16, dict.fromkeys(LAW, 0), []
    starts = fit.start_grid(2)
    for trial in range(trials):
        df = ladder(noise=0.01, seed=100 + trial)
        law = fit.fit_approach3(df["params"], df["tokens"], df["loss"], starts)
        samples = fit.bootstrap_approach3(
            df["params"],
            df["tokens"],
            df["loss"],
            law["theta"],
            40,
            seed=trial,
            starts=starts,
            workers=2,
            grid_starts=1,
        )
        for name in LAW:
            low, high = np.percentile(samples[name].dropna(), [2.5, 97.5])
            covered[name] += low <= TRUTH[name] <= high
        widths.append(np.subtract(*np.percentile(samples["alpha"], [97.5, 2.5])))
    assert all(count >= 13 for count in covered.values()), covered  # P(<= 12 of 16 | 95 %) < 1 %
    assert np.median(widths) < 0.5 * TRUTH["alpha"]  # informative, not arbitrarily wide


def test_more_starts_never_give_a_worse_optimum(noisy):
    data = log_data(noisy)
    starts = fit.start_grid(2)
    ends = [fit.minimise(s, *data)[0] for s in starts]
    assert max(ends) > 1.5 * min(ends)  # several optima: where L-BFGS-B starts matters
    order = np.random.default_rng(0).permutation(len(starts))
    best = [
        fit.fit_approach3(noisy["params"], noisy["tokens"], noisy["loss"], starts[order[:k]])["objective"]
        for k in (1, 2, 4, 8, 16, 32)
    ]
    for fewer, more in zip(best, best[1:]):
        assert more <= fewer * (1 + 1e-6)
    assert best[-1] <= min(ends) * (1 + 1e-6)


def test_result_does_not_depend_on_row_order_or_worker_count(noisy):
    kwargs = {"bootstrap": 60, "grid_points": 2, "seed": 3}
    base = fit.fit_frame(noisy, workers=1, **kwargs)
    shuffled = noisy.sample(frac=1, random_state=0)
    assert json.dumps(fit.fit_frame(shuffled, workers=1, **kwargs), default=str) == json.dumps(base, default=str)
    assert json.dumps(fit.fit_frame(noisy, workers=2, **kwargs), default=str) == json.dumps(base, default=str)


# ---------------------------------------------------------------------------------------------
# Power laws, Approach 2, allocation, held-out check


def test_power_laws_at_the_largest_slices_recover_the_exponents():
    result = quick(ladder())
    n_law, d_law = result["power_law_N"], result["power_law_D"]
    assert n_law["slice_tokens"] == pytest.approx(1e11) and d_law["slice_params"] == pytest.approx(3e9)
    # At fixed D the law is (E + B/D^beta) + A/N^alpha: the same alpha and A, a larger E.
    assert n_law["alpha"] == pytest.approx(TRUTH["alpha"], rel=1e-4)
    assert n_law["A"] == pytest.approx(TRUTH["A"], rel=1e-3)
    assert n_law["E"] == pytest.approx(TRUTH["E"] + TRUTH["B"] / 1e11 ** TRUTH["beta"], rel=1e-4)
    assert d_law["beta"] == pytest.approx(TRUTH["beta"], rel=1e-4)
    for section, exponent in ((n_law, "alpha"), (d_law, "beta")):
        ols = section["loglog_ols"]
        assert 0 < ols[exponent] < section[exponent]  # a pure power law flattens the curve
        assert ols["ci95"][exponent][0] < ols[exponent] < ols["ci95"][exponent][1]
        assert 0.9 < ols["r2"] <= 1


def test_allocation_formulas_against_hand_computed_values():
    # alpha = beta and A = B: G = 1, a = b = 1/2, so N = D = sqrt(C/6).
    n, d = fit.compute_optimal(6e18, 100.0, 100.0, 0.5, 0.5)
    assert n == pytest.approx(1e9) and d == pytest.approx(1e9)
    # alpha = 1, beta = 1/2, A = 2, B = 1: G = (1*2/(0.5*1))^(1/1.5) = 4^(2/3), a = 1/3, b = 2/3.
    n, d = fit.compute_optimal(6e9, 2.0, 1.0, 1.0, 0.5)
    assert n == pytest.approx(4 ** (2 / 3) * 1e3) and d == pytest.approx(1e6 / 4 ** (2 / 3))
    # And it is the minimum of the law along 6·N·D = C.
    flops = 1e21
    along = minimize_scalar(
        lambda log_n: fit.predict_loss(math.exp(log_n), flops / (6 * math.exp(log_n)), **TRUTH),
        bounds=(math.log(1e6), math.log(1e12)),
        method="bounded",
        options={"xatol": 1e-10},
    )
    n, d = fit.compute_optimal(flops, TRUTH["A"], TRUTH["B"], TRUTH["alpha"], TRUTH["beta"])
    assert n == pytest.approx(math.exp(along.x), rel=1e-4) and n * d * 6 == pytest.approx(flops)


def test_allocation_and_holdout_sections(noisy):
    result = quick(noisy, bootstrap=30, predict_flops=[1e21, 1e22])
    law = result["approach3"]
    assert [row["flops"] for row in result["allocation"]] == [1e21, 1e22]
    for row in result["allocation"]:
        n, d = fit.compute_optimal(row["flops"], law["A"], law["B"], law["alpha"], law["beta"])
        assert row["n_opt"] == pytest.approx(n) and row["d_opt"] == pytest.approx(d)
        assert row["tokens_per_param"] == pytest.approx(d / n)
        assert row["loss_pred"] == pytest.approx(fit.predict_loss(n, d, *(law[k] for k in LAW)))
        assert row["loss_ci95"][0] <= row["loss_pred"] <= row["loss_ci95"][1]
    top = noisy["params"] >= noisy["params"].max() / 1.01  # the largest size's runs, every token count
    holdout = result["holdout"]
    assert holdout["held_out"] == noisy["run"][top].tolist() and top.sum() > 1
    assert holdout["actual"] == pytest.approx(noisy["loss"][top].tolist())
    assert holdout["max_abs_rel_error"] == pytest.approx(max(abs(e) for e in holdout["rel_error"]))
    # N_opt's interval carries the point law's bootstrap at least, and D_opt's is C / (6 N_opt)'s.
    for row in result["allocation"]:
        own = row["n_opt_ci95_point_law_bootstrap"]
        assert row["n_opt_ci95"][0] <= min(own[0], row["n_opt"]) and row["n_opt_ci95"][1] >= max(own[1], row["n_opt"])
        assert row["d_opt_ci95"][0] == pytest.approx(row["flops"] / (6 * row["n_opt_ci95"][1]))
    # Default budgets: 10x and 100x the largest run; without noise the held-out error vanishes.
    clean = quick(ladder())
    largest = 6 * 3e9 * 1e11
    assert [row["flops"] for row in clean["allocation"]] == pytest.approx([10 * largest, 100 * largest])
    assert clean["holdout"]["max_abs_rel_error"] < 1e-5


# ---------------------------------------------------------------------------------------------
# Degenerate and bad input


def test_one_model_size_gives_null_sections_with_reasons():
    result = quick(ladder(n_sizes=1, n_tokens=6))
    assert result["n_points"] == 6
    assert result["approach3"] is None and "model sizes" in result["approach3_why"]
    assert result["power_law_N"] is None and result["power_law_N_why"]
    assert result["power_law_D"]["beta"] == pytest.approx(TRUTH["beta"], rel=1e-4)  # one size is a D slice
    assert result["allocation"] is None and result["allocation_why"]
    assert result["holdout"] is None and result["holdout_why"]
    assert result["approach2"] is None and result["approach2_why"]


def test_two_points_and_no_rows_give_null_sections():
    for df in (ladder().iloc[:2], ladder().iloc[:0]):
        result = quick(df)
        assert result["n_points"] == len(df)
        for section in ("approach3", "power_law_N", "power_law_D", "approach2", "allocation", "holdout"):
            assert result[section] is None and isinstance(result[f"{section}_why"], str), section


def test_bad_rows_are_excluded_and_listed():
    df = ladder()
    df.loc[0, "loss"] = np.nan
    df.loc[1, "status"] = "diverged"
    df.loc[2, "params"] = -5
    df.loc[3, "tokens"] = np.inf
    df["loss"] = df["loss"].astype(object)
    df.loc[4, "loss"] = "n/a"
    result = quick(df, holdout="none")
    assert result["n_points"] == len(df) - 5
    reasons = {row["run"]: row["reason"] for row in result["excluded"]}
    assert reasons == {
        "r0": "loss is missing or not a finite number",
        "r1": "diverged",
        "r2": "params is not positive",
        "r3": "tokens is missing or not a finite number",
        "r4": "loss is missing or not a finite number",
    }
    assert result["holdout"] is None and "disabled" in result["holdout_why"]
    assert result["approach3"]["alpha"] == pytest.approx(TRUTH["alpha"], rel=1e-3)
    # Without a run column the row number names the run.
    assert [row["run"] for row in quick(df.drop(columns="run"))["excluded"]] == [0, 1, 2, 3, 4]


def test_missing_columns_are_named():
    with pytest.raises(ScalelabError, match="no column 'tokens'"):
        quick(ladder().drop(columns="tokens"))
    with pytest.raises(ScalelabError, match="'loss' or 'val_loss'"):
        quick(ladder().drop(columns="loss"))
    result = quick(ladder().rename(columns={"loss": "val_loss"}), holdout="none")
    assert result["target"] == "val_loss"


# ---------------------------------------------------------------------------------------------
# The CLI


def test_cli_on_a_csv_with_other_column_names(tmp_path):
    df = ladder(noise=0.002, seed=5).rename(columns={"params": "N", "tokens": "D", "loss": "xent"})
    df["C"] = 6 * df["N"] * df["D"]
    df.loc[0, "status"] = "diverged"
    df.to_csv(tmp_path / "runs.csv", index=False)
    out = tmp_path / "out"
    proc = run_cli(
        tmp_path / "runs.csv",
        "--out",
        out,
        "--loss-col",
        "xent",
        "--params-col",
        "N",
        "--tokens-col",
        "D",
        "--flops-col",
        "C",
        "--bootstrap",
        "20",
        "--grid-points",
        "2",
        "--workers",
        "1",
        "--predict-flops",
        "1e21",
        "3e22",
        "--seed",
        "7",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "fit.json").read_text())
    for key in (
        "target",
        "n_points",
        "excluded",
        "approach3",
        "power_law_N",
        "power_law_D",
        "approach2",
        "allocation",
        "holdout",
    ):
        assert key in result
    assert result["target"] == "xent" and result["n_points"] == 35
    assert result["excluded"] == [{"run": "r0", "reason": "diverged"}]
    a3 = result["approach3"]
    assert set(a3["ci95"]) == {"E", "A", "B", "alpha", "beta", "a", "b"} and a3["bootstrap"] == 20
    assert a3["huber_delta"] == 1e-3 and a3["n_starts"] == 32
    assert [row["flops"] for row in result["allocation"]] == [1e21, 3e22]
    assert result["approach2"] is None and result["approach2_why"]
    for name in ("approach3", "power_laws", "isoflop", "allocation", "holdout", "excluded", "bootstrap"):
        assert (out / f"{name}.csv").exists(), name
    assert len(pd.read_csv(out / "bootstrap.csv")) == 20
    assert set(pd.read_csv(out / "approach3.csv")["parameter"]) == {"E", "A", "B", "alpha", "beta", "a", "b"}
    assert "OLS Regression Results" in (out / "fit.txt").read_text()


def test_cli_bad_input_is_one_line_and_keeps_old_outputs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "fit.json").write_text("{}\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert_one_line_error(run_cli(empty, "--out", out), "empty")
    no_tokens = tmp_path / "no_tokens.csv"
    ladder().drop(columns="tokens").to_csv(no_tokens, index=False)
    assert_one_line_error(run_cli(no_tokens, "--out", out), "tokens", "--tokens-col")
    assert (out / "fit.json").read_text() == "{}\n"


def test_cli_in_process_reports_a_missing_file_and_bad_flags(tmp_path, capsys):
    from scalelab.cli import main

    assert main(["fit", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "out")]) == 1
    assert "absent.csv: file not found" in capsys.readouterr().err
    ladder().to_csv(tmp_path / "runs.csv", index=False)
    assert main(["fit", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "out"), "--bootstrap", "-1"]) == 1
    assert "--bootstrap" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Settings: one default per setting, --spec, and bad values named in one line


def parse_cli(*args):
    import argparse

    parser = argparse.ArgumentParser()
    fit.add_arguments(parser)
    return parser.parse_args([str(a) for a in args])


def test_settings_defaults_live_in_fitsettings_alone():
    defaults = fit.FitSettings()
    assert (defaults.target, defaults.params, defaults.bootstrap, defaults.seed, defaults.holdout) == (
        "val_loss",
        "non_embedding",
        1000,
        0,
        "top",
    )
    assert (defaults.select, defaults.sweep_keys, defaults.predict_flops, defaults.budgets) == ("best", (), None, None)
    assert defaults.grid_points == fit.GRID_POINTS and defaults.workers is None
    args = parse_cli("m.csv", "--out", "o")
    for flag, name in fit.SETTING_FLAGS:  # no second copy of a default in argparse
        assert getattr(args, flag[2:].replace("-", "_")) is None, flag
    assert fit.settings_from_args(args) == defaults


def test_spec_sets_fields_and_flags_override_it():
    spec = json.dumps(
        {
            "target": "test_loss",
            "params": "total",
            "bootstrap": 50,
            "seed": 3,
            "holdout": "none",
            "predict_flops": [1e21, "30T"],
            "budgets": ["1e18"],
            "select": "all",
            "sweep_keys": ["lr"],
            "grid_points": 3,
            "workers": 2,
        }
    )
    settings = fit.settings_from_args(
        parse_cli("m.csv", "--out", "o", "--spec", spec, "--workers", "4", "--bootstrap", "7")
    )
    assert settings == fit.FitSettings(
        target="test_loss",
        params="total",
        bootstrap=7,
        seed=3,
        holdout="none",
        predict_flops=(1e21, 3e13),
        budgets=(1e18,),
        select="all",
        sweep_keys=("lr",),
        grid_points=3,
        workers=4,
    )
    assert fit.FitSettings.from_dict(settings.to_dict()) == settings  # to_dict round-trips


@pytest.mark.parametrize(
    "spec, words",
    [
        ('{"bootsrap": 10}', ["unknown key 'bootsrap'"]),
        ('{"seed": -1}', ["seed", "0 or more"]),
        ('{"bootstrap": 1e30}', ["bootstrap", "100000"]),
        ('{"bootstrap": true}', ["bootstrap", "integer"]),
        ('{"holdout": "bottom"}', ["holdout", "top, none"]),
        ('{"select": "worst"}', ["select"]),
        ('{"params": "embedding"}', ["params"]),
        ('{"predict_flops": [1e21, -1]}', ["predict_flops", "positive"]),
        ('{"budgets": []}', ["budgets"]),
        ('{"sweep_keys": ["lr", "lr"]}', ["sweep_keys", "twice"]),
        ('{"grid_points": 100}', ["grid_points", "8"]),
        ('{"workers": 0}', ["workers"]),
        ("[1, 2]", ["JSON object"]),
        ('{"seed": ', ["--spec", "not valid JSON"]),
    ],
)
def test_bad_spec_is_one_line_naming_the_key(tmp_path, capsys, spec, words):
    from scalelab.cli import main

    ladder().to_csv(tmp_path / "runs.csv", index=False)
    assert main(["fit", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "out"), "--spec", spec]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--spec" in err, err
    for word in words:
        assert word in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--seed", "-1"], ["--seed", "0 or more"]),
        (["--bootstrap", "99999999999999999999"], ["--bootstrap", "100000"]),
        (["--grid-points", "100"], ["--grid-points", "8**5"]),
        (["--workers", "0"], ["--workers"]),
    ],
)
def test_cli_flags_that_crashed_are_one_line_errors(tmp_path, capsys, flags, words):
    # Old code: --seed -1 and a huge --bootstrap raised from numpy (tracebacks); --grid-points 100
    # asked for 100**5 starts and never returned. Now each is refused before any work.
    from scalelab.cli import main

    ladder().to_csv(tmp_path / "runs.csv", index=False)
    base = [
        "fit",
        str(tmp_path / "runs.csv"),
        "--out",
        str(tmp_path / "out"),
        "--grid-points",
        "2",
        "--bootstrap",
        "2",
        "--workers",
        "1",
        "--holdout",
        "none",
    ]
    assert main(base + flags) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, err
    assert not (tmp_path / "out").exists()


def test_cli_out_naming_a_file_is_one_line_and_leaves_the_file(tmp_path, capsys):
    from scalelab.cli import main

    ladder().to_csv(tmp_path / "runs.csv", index=False)
    (tmp_path / "taken").write_text("keep me\n")
    for out in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        assert (
            main(
                [
                    "fit",
                    str(tmp_path / "runs.csv"),
                    "--out",
                    str(out),
                    "--bootstrap",
                    "0",
                    "--grid-points",
                    "2",
                    "--workers",
                    "1",
                ]
            )
            == 1
        )
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--out" in err and "not a folder" in err, err
    assert (tmp_path / "taken").read_text() == "keep me\n"


def test_target_defaults_to_val_loss_then_loss():
    both = ladder().assign(val_loss=lambda d: d["loss"] * 1.01)
    assert quick(both, holdout="none")["target"] == "val_loss"
    assert quick(ladder(), holdout="none")["target"] == "loss"
    assert quick(both, holdout="none", target="loss")["target"] == "loss"
    with pytest.raises(ScalelabError, match="no column 'test_loss'"):
        quick(ladder(), target="test_loss")


# ---------------------------------------------------------------------------------------------
# Sweeps: the best run of each grid point


def sweep_frame():
    """Four grid points (params, tokens, seed) of a peak_lr sweep; the expected best of each:
    g1 r2 (r3 is lower but diverged, r4 has no loss), g2 r5 (tie with r6: the name sorting first),
    g3 r8, g4 r9 (alone)."""
    rows = [
        ("r6", 1e7, 1e9, 1, 3e-3, 2.95, "ok"),
        ("r1", 1e7, 1e9, 0, 1e-3, 3.00, "ok"),
        ("r2", 1e7, 1e9, 0, 3e-3, 2.90, "ok"),
        ("r3", 1e7, 1e9, 0, 1e-2, 2.50, "diverged"),
        ("r4", 1e7, 1e9, 0, 3e-2, np.nan, "ok"),
        ("r5", 1e7, 1e9, 1, 1e-3, 2.95, "ok"),
        ("r7", 3e7, 1e9, 0, 1e-3, 2.80, "ok"),
        ("r8", 3e7, 1e9, 0, 3e-3, 2.70, "ok"),
        ("r9", 1e7, 3e9, 0, 1e-3, 2.60, "ok"),
    ]
    return pd.DataFrame(rows, columns=["run", "params", "tokens", "seed", "peak_lr", "loss", "status"])


def test_select_best_by_keeps_the_lowest_usable_loss_per_grid_point():
    df = sweep_frame()
    result = quick(df, sweep_keys=["peak_lr"], holdout="none")
    selection = result["selection"]
    assert sorted(selection["runs_used"]) == ["r2", "r5", "r8", "r9"]
    assert selection["runs_dropped"] == 3  # r1, r6, r7; r3 and r4 are excluded, not dropped
    assert selection["select"] == "best" and selection["by"] == ["peak_lr"]
    assert selection["group_by"] == ["params", "tokens", "seed"]
    assert result["n_points"] == 4
    assert {row["run"] for row in result["excluded"]} == {"r3", "r4"}
    # Row order cannot change the pick, ties included.
    for state in range(3):
        again = quick(df.sample(frac=1, random_state=state), sweep_keys=["peak_lr"], holdout="none")
        assert sorted(again["selection"]["runs_used"]) == ["r2", "r5", "r8", "r9"]
    # Without a seed column, the seeds of g1 and g2 are one grid point: r2 (2.90) wins it.
    no_seed = quick(df.drop(columns="seed"), sweep_keys=["peak_lr"], holdout="none")["selection"]
    assert sorted(no_seed["runs_used"]) == ["r2", "r8", "r9"] and no_seed["group_by"] == ["params", "tokens"]
    # select all, or no sweep keys: every usable run.
    for kwargs in ({"sweep_keys": ["peak_lr"], "select": "all"}, {}):
        every = quick(df, holdout="none", **kwargs)["selection"]
        assert sorted(every["runs_used"]) == ["r1", "r2", "r5", "r6", "r7", "r8", "r9"] and every["runs_dropped"] == 0


def test_best_in_sweep_column_decides_under_select_best():
    df = sweep_frame().assign(
        sweep_group=["b", "a", "a", "a", "a", "b", "c", "c", "d"],
        best_in_sweep=["False", "True", "false", "0", "no", "1", "TRUE", "false", None],
    )
    result = quick(df, holdout="none")  # the column alone: no sweep keys needed
    # r1 marked best although r2 is lower: the column is the contract; r9 (empty) is in no sweep.
    assert sorted(result["selection"]["runs_used"]) == ["r1", "r5", "r7", "r9"]
    assert "best_in_sweep" in result["selection"]["method"]
    assert sorted(quick(df, holdout="none", select="all")["selection"]["runs_used"]) == [
        "r1",
        "r2",
        "r5",
        "r6",
        "r7",
        "r8",
        "r9",
    ]
    # With sweep_group but no best_in_sweep, the groups are the sweep_group values.
    grouped = quick(df.drop(columns="best_in_sweep"), sweep_keys=["peak_lr"], holdout="none")["selection"]
    assert sorted(grouped["runs_used"]) == ["r2", "r5", "r8", "r9"] and grouped["group_by"] == ["sweep_group"]
    with pytest.raises(ScalelabError, match="best_in_sweep.*maybe"):
        quick(df.assign(best_in_sweep="maybe"))
    with pytest.raises(ScalelabError, match="no column 'lr'"):
        quick(df, sweep_keys=["lr"])


def test_fits_use_only_the_best_runs_of_a_sweep():
    # A ladder whose every point has an lr sweep: the off-optimum runs are 5 % worse. Fitting the
    # best runs recovers the law; fitting all of them (select all) does not.
    base = ladder()
    runs = []
    for factor, penalty in ((0.5, 1.05), (1.0, 1.0), (2.0, 1.05)):
        runs.append(base.assign(run=base["run"] + f"-lr{factor}", lr=1e-3 * factor, loss=base["loss"] * penalty))
    df = pd.concat(runs, ignore_index=True)
    best = quick(df, sweep_keys=["lr"], holdout="none")
    assert best["n_points"] == len(base) and best["selection"]["runs_dropped"] == 2 * len(base)
    assert best["approach3"]["alpha"] == pytest.approx(TRUTH["alpha"], rel=1e-4)
    every = quick(df, sweep_keys=["lr"], holdout="none", select="all")
    assert every["n_points"] == 3 * len(base)
    assert abs(every["approach3"]["E"] - TRUTH["E"]) > 0.01


# ---------------------------------------------------------------------------------------------
# Hyperparameter laws


LR_OPT = {"coefficient": 0.3, "exponent": -0.3}


def lr_sweep(values, noise=0.0, seed=0, tokens_per_param=None, token_counts=(1e9, 1e10), seeds=1):
    sizes = np.geomspace(1e7, 3e9, 6)
    if tokens_per_param:
        params, tokens = sizes, tokens_per_param * sizes
    else:
        params, tokens = (a.ravel() for a in np.meshgrid(sizes, token_counts))
    return pd.DataFrame(
        synthetic.hparam_sweep(params, tokens, values, curvature=0.05, noise=noise, seed=seed, seeds=seeds, **LR_OPT)
    )


def hparams(df, predict_at=1e22, keys=("lr",)):
    points = fit.prepare(df, sweep_keys=keys)[0]
    return fit.fit_hyperparameters(points, list(keys), predict_at)


def test_hyperparameter_law_is_exact_on_exact_u_curves():
    df = lr_sweep(np.geomspace(1e-5, 1e-1, 14), tokens_per_param=20)
    section, why, table, text = hparams(df)
    assert why is None
    lr = section["lr"]
    for group in lr["groups"]:
        assert group["edge"] is False
        assert group["optimum"] == pytest.approx(synthetic.hparam_optimum(group["params"], **LR_OPT), rel=1e-9)
    assert lr["law_N"]["exponent"] == pytest.approx(-0.3, abs=1e-9)
    assert lr["law_N"]["coefficient"] == pytest.approx(0.3, rel=1e-8)
    # D = 20 N, so C = 120 N^2 and lr_opt = 0.3 (C / 120)^-0.15.
    assert lr["law_C"]["exponent"] == pytest.approx(-0.15, abs=1e-9)
    assert lr["recommended"]["flops"] == 1e22
    assert lr["recommended"]["value"] == pytest.approx(0.3 * (1e22 / 120) ** -0.15, rel=1e-7)
    assert list(table.columns) == fit.HPARAM_COLUMNS and len(table) == 6
    assert any("recommended lr at C = 1e+22" in line for line in text)


def test_hyperparameter_exponent_is_recovered_within_its_interval_under_noise():
    values = np.geomspace(1e-5, 1e-1, 14)
    covered, estimates = 0, []
    for seed in range(10):
        lr = hparams(lr_sweep(values, noise=0.003, seed=seed, seeds=2))[0]["lr"]
        low, high = lr["law_N"]["ci95"]["exponent"]
        covered += low <= -0.3 <= high
        estimates.append(lr["law_N"]["exponent"])
        assert low < lr["law_N"]["exponent"] < high
        rec = lr["recommended"]
        assert rec["ci95"][0] < rec["value"] < rec["ci95"][1] and rec["pi95"][0] < rec["ci95"][0]
    assert covered >= 8, (covered, estimates)  # P(<= 7 of 10 | 95 %) ~ 0.1 %
    assert np.median(estimates) == pytest.approx(-0.3, abs=0.03)


def test_edge_optimum_is_flagged_and_left_out_of_the_law():
    values = np.geomspace(1e-3, 1e-1, 7)  # the larger models want less than 1e-3
    lr = hparams(lr_sweep(values))[0]["lr"]
    boundary = math.sqrt(values[0] * values[1])  # below it, the lowest value is the best one
    for group in lr["groups"]:
        truth = synthetic.hparam_optimum(group["params"], **LR_OPT)
        assert group["edge"] == bool(truth < boundary), group
        if group["edge"]:
            assert group["optimum"] == values[0] and group["method"].startswith("edge")
    inner = [g for g in lr["groups"] if not g["edge"]]
    assert lr["n_edge"] == len(lr["groups"]) - len(inner) > 0
    assert lr["law_N"]["n_groups"] == len(inner)
    assert lr["law_N"]["exponent"] == pytest.approx(-0.3, abs=1e-9)
    # Too few groups inside the sweep: the laws are null with a reason.
    narrow = hparams(lr_sweep(np.geomspace(1e-3, 1e-1, 7), token_counts=(1e9,)))[0]["lr"]
    assert narrow["law_N"] is None and "at an edge" in narrow["law_N_why"]
    assert narrow["recommended"] is None and narrow["recommended_why"]


def test_hyperparameters_null_when_the_data_cannot_support_them():
    assert quick(ladder(), holdout="none")["hyperparameters"] is None
    two_values = quick(lr_sweep([1e-3, 2e-3]), sweep_keys=["lr"], holdout="none")
    assert two_values["hyperparameters"] is None and "3 or more values" in two_values["hyperparameters_why"]
    # One key fitted, another not: the other is null with <key>_why inside the section.
    df = lr_sweep(np.geomspace(1e-5, 1e-1, 14)).assign(beta2=0.95)
    section = quick(df, sweep_keys=["lr", "beta2"], holdout="none")["hyperparameters"]
    assert section["lr"]["law_N"] is not None
    assert section["beta2"] is None and "3 or more values" in section["beta2_why"]


def test_cli_sweep_end_to_end(tmp_path, capsys):
    from scalelab.cli import main

    df = (
        lr_sweep(np.geomspace(1e-5, 1e-1, 14))
        .drop(columns=["sweep_group", "best_in_sweep"])
        .rename(columns={"lr": "peak_lr"})
    )
    df.to_csv(tmp_path / "sweep.csv", index=False)
    out = tmp_path / "out"
    assert (
        main(
            [
                "fit",
                str(tmp_path / "sweep.csv"),
                "--out",
                str(out),
                "--select-best-by",
                "peak_lr",
                "--spec",
                '{"bootstrap": 0, "grid_points": 2, "holdout": "none", "predict_flops": [1e22]}',
                "--workers",
                "1",
            ]
        )
        == 0
    ), capsys.readouterr().err
    result = json.loads((out / "fit.json").read_text())
    assert result["selection"]["by"] == ["peak_lr"] and result["n_points"] == 12
    assert result["settings"]["sweep_keys"] == ["peak_lr"] and "workers" not in result["settings"]
    assert result["hyperparameters"]["peak_lr"]["law_N"]["exponent"] == pytest.approx(-0.3, abs=1e-6)
    table = pd.read_csv(out / "hyperparameters.csv")
    assert list(table.columns) == fit.HPARAM_COLUMNS and len(table) == 12
    assert "recommended peak_lr at C = 1e+22" in (out / "fit.txt").read_text()
    # No sweep: the table is still written, with its header only.
    ladder().to_csv(tmp_path / "ladder.csv", index=False)
    assert (
        main(
            [
                "fit",
                str(tmp_path / "ladder.csv"),
                "--out",
                str(out),
                "--bootstrap",
                "0",
                "--grid-points",
                "2",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert list(pd.read_csv(out / "hyperparameters.csv").columns) == fit.HPARAM_COLUMNS
    assert json.loads((out / "fit.json").read_text())["hyperparameters_why"]


def test_a_power_law_parameter_on_its_bound_has_no_interval():
    """Data from a pure power law (no loss floor): the nonlinear fit puts E on its lower bound, 0,
    where a covariance interval would cross it (it gave E [-2.69, 2.69]); E gets none and says why,
    and every interval that is given stays inside its bounds."""
    from scalelab.fit.power_laws import fit_power_law

    size = np.geomspace(1e4, 1e6, 6)
    loss = 50.0 * size**-0.2 * (1 + 0.002 * np.sin(np.arange(6)))
    section, _ = fit_power_law(size, loss)
    assert section["at_bound"] == ["E"] and section["ci95"]["E"] is None
    low, high = section["ci95"]["exponent"]
    assert 0 <= low <= section["exponent"] <= high
    # and a law with a real floor keeps all three intervals
    floored, _ = fit_power_law(size, 1.5 + 50.0 * size**-0.3 * (1 + 0.002 * np.sin(np.arange(6))))
    assert floored["at_bound"] == [] and all(floored["ci95"][k] is not None for k in ("E", "A", "exponent"))


def test_a_csv_over_the_row_limit_is_refused_in_one_line_before_any_fit(tmp_path):
    """A million rows (every logged step of every run, say): one line naming the limit and what to do,
    exit 1, no fit started, instead of a fit still running after ten minutes."""
    from scalelab.fit.inputs import MAX_FIT_ROWS

    n = 1_000_000
    rng = np.random.default_rng(0)
    params, tokens = 10 ** rng.uniform(7, 9.5, n), 10 ** rng.uniform(8, 11, n)
    loss = 1.69 + 406.4 / params**0.34 + 410.7 / tokens**0.28
    big = tmp_path / "steps.csv"
    np.savetxt(big, np.column_stack([params, tokens, loss]), delimiter=",", header="params,tokens,loss", comments="")
    proc = run_cli(big, "--out", tmp_path / "out")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"{n} usable rows" in line and str(MAX_FIT_ROWS) in line and "one row per" in line
    assert not (tmp_path / "out" / "fit.json").exists()


def test_duplicated_rows_are_fitted_as_they_are_with_one_warning():
    df = ladder(noise=0.01, seed=3)
    copies = pd.concat([df, df.iloc[[4, 9, 20]].assign(run=["c1", "c2", "c3"])], ignore_index=True)
    result = fit.fit_all(copies, bootstrap=0, grid_points=2, workers=1)
    lines = [w for w in result.result["warnings"] if "repeat another row" in w]
    assert len(lines) == 1 and lines[0].startswith("3 row(s) repeat") and "\n" not in lines[0]
    assert result.result["n_points"] == len(copies)  # used as they are
    assert lines[0] in result.text
    clean = fit.fit_all(df, bootstrap=0, grid_points=2, workers=1)
    assert not any("repeat another row" in w for w in clean.result.get("warnings", []))
