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

from scalelab import synthetic

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
    return subprocess.run([sys.executable, "-m", "scalelab", "fit", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


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
        numeric = [(fit.huber_objective(theta + step * e, *data)[0] - fit.huber_objective(theta - step * e, *data)[0])
                   / (2 * step) for e in np.eye(5)]
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7 * max(1.0, np.abs(grad).max()))


def test_objective_is_the_summed_huber_loss_of_log_residuals(noisy):
    data = log_data(noisy)
    theta = np.array([6.0, 6.0, 0.5, 0.3, 0.3])
    predicted = fit.predict_loss(noisy["params"], noisy["tokens"], E=math.exp(0.5), A=math.exp(6.0), B=math.exp(6.0),
                                 alpha=0.3, beta=0.3)
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

    averaged_ends = np.array([fit.huber_objective(minimize(averaged, s, args=data, jac=True, method="L-BFGS-B").x,
                                                  *data)[0] for s in starts])
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
        samples = fit.bootstrap_approach3(df["params"], df["tokens"], df["loss"], law["theta"], 40, seed=trial,
                                          starts=starts, workers=2, grid_starts=1)
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
    best = [fit.fit_approach3(noisy["params"], noisy["tokens"], noisy["loss"], starts[order[:k]])["objective"]
            for k in (1, 2, 4, 8, 16, 32)]
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


def isoflop_frame(budgets, sizes_per_budget, loss_of):
    rows = []
    for flops in budgets:
        for params in sizes_per_budget(flops):
            tokens = flops / (6 * params)
            rows.append({"run": f"iso-{flops:.0e}-{params:.3g}", "params": params, "tokens": tokens,
                         "loss": loss_of(params, tokens, flops), "isoflop_budget": flops, "status": "ok"})
    return pd.DataFrame(rows)


def test_approach2_recovers_a_known_exponent_from_exact_parabolas():
    a, G = 0.45, 0.09
    budgets = [1e17, 1e18, 1e19, 1e20]

    def n_opt(flops):
        return G * flops**a

    def sizes(flops):  # off-centre, and the last budget entirely below its optimum
        factors = [1 / 8, 1 / 4, 1 / 2, 1, 2] if flops < 1e20 else [1 / 16, 1 / 8, 1 / 4]
        return [n_opt(flops) * f for f in factors]

    df = isoflop_frame(budgets, sizes, lambda n, d, c: 3 - 0.1 * math.log10(c) + 0.05 * math.log(n / n_opt(c)) ** 2)
    section = quick(df)["approach2"]
    assert section["a"] == pytest.approx(a, rel=1e-9)
    assert section["b"] == pytest.approx(1 - a, rel=1e-9)
    assert section["G"] == pytest.approx(G, rel=1e-6)
    for row, flops in zip(section["budgets"], budgets):
        assert row["flops"] == flops and row["n_opt"] == pytest.approx(n_opt(flops), rel=1e-9)
        assert row["d_opt"] == pytest.approx(flops / (6 * n_opt(flops)), rel=1e-9)
    assert section["outside_sampled"] == [1e20]
    assert [row["outside_sampled"] for row in section["budgets"]] == [False, False, False, True]


def test_approach2_on_the_chinchilla_law_finds_its_exponent_by_any_grouping():
    truth_a = TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"])
    budgets = [1e18, 1e19, 1e20, 1e21]

    df = pd.DataFrame(synthetic.isoflop(budgets, span=16, n_sizes=9)).drop(columns="flops")  # N_opt/4 .. 4·N_opt
    by_column = quick(df)["approach2"]
    assert by_column["a"] == pytest.approx(truth_a, abs=0.01)  # a parabola only approximates the law
    assert by_column["a_ci95"][0] < by_column["a"] < by_column["a_ci95"][1]
    # The same budgets found from FLOPs alone, and from --budgets with FLOPs off by up to 5 %.
    by_flops = quick(df.drop(columns="isoflop_budget"))["approach2"]
    jittered = df.drop(columns="isoflop_budget").assign(
        tokens=df["tokens"] * np.resize([0.95, 1.0, 1.05], len(df)))
    by_budgets = quick(jittered, budgets=budgets)["approach2"]
    assert by_flops["a"] == pytest.approx(by_column["a"], rel=1e-9)
    assert [row["n_points"] for row in by_budgets["budgets"]] == [9, 9, 9, 9]
    assert by_budgets["a"] == pytest.approx(by_column["a"], rel=1e-9)


def test_allocation_formulas_against_hand_computed_values():
    # alpha = beta and A = B: G = 1, a = b = 1/2, so N = D = sqrt(C/6).
    n, d = fit.compute_optimal(6e18, 100.0, 100.0, 0.5, 0.5)
    assert n == pytest.approx(1e9) and d == pytest.approx(1e9)
    # alpha = 1, beta = 1/2, A = 2, B = 1: G = (1*2/(0.5*1))^(1/1.5) = 4^(2/3), a = 1/3, b = 2/3.
    n, d = fit.compute_optimal(6e9, 2.0, 1.0, 1.0, 0.5)
    assert n == pytest.approx(4 ** (2 / 3) * 1e3) and d == pytest.approx(1e6 / 4 ** (2 / 3))
    # And it is the minimum of the law along 6·N·D = C.
    flops = 1e21
    along = minimize_scalar(lambda log_n: fit.predict_loss(math.exp(log_n), flops / (6 * math.exp(log_n)), **TRUTH),
                            bounds=(math.log(1e6), math.log(1e12)), method="bounded", options={"xatol": 1e-10})
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
    top = noisy["params"] * noisy["tokens"] == (noisy["params"] * noisy["tokens"]).max()
    holdout = result["holdout"]
    assert holdout["held_out"] == noisy["run"][top].tolist()
    assert holdout["actual"] == pytest.approx(noisy["loss"][top].tolist())
    assert holdout["max_abs_rel_error"] == pytest.approx(max(abs(e) for e in holdout["rel_error"]))
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
    assert reasons == {"r0": "loss is missing or not a finite number", "r1": "diverged",
                       "r2": "params is not positive", "r3": "tokens is missing or not a finite number",
                       "r4": "loss is missing or not a finite number"}
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
    proc = run_cli(tmp_path / "runs.csv", "--out", out, "--loss-col", "xent", "--params-col", "N",
                   "--tokens-col", "D", "--flops-col", "C", "--bootstrap", "20", "--grid-points", "2",
                   "--workers", "1", "--predict-flops", "1e21", "3e22", "--seed", "7")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "fit.json").read_text())
    for key in ("target", "n_points", "excluded", "approach3", "power_law_N", "power_law_D", "approach2",
                "allocation", "holdout"):
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
