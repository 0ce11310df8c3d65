"""Tests of Approach 2 (IsoFLOP profiles): the spline's minimum, the noise estimate, the redraws,
the weighted exponent and its interval, on IsoFLOP curves from known laws."""

from scalelab import fit  # first: it pins OpenBLAS to one thread before numpy and scipy load

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.interpolate import Akima1DInterpolator

from scalelab.laws import synthetic
from scalelab.fit.approach2 import _exponents_bootstrap

TRUTH = synthetic.CHINCHILLA  # Hoffmann et al. (2022)
TRUE_A = TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"])


def quick(df, **kwargs):
    """fit_frame with a small start grid and no bootstrap, for tests not about those."""
    return fit.fit_frame(df, **{"bootstrap": 0, "grid_points": 2, "workers": 1, **kwargs})


def isoflop_frame(budgets, sizes_per_budget, loss_of):
    rows = []
    for flops in budgets:
        for params in sizes_per_budget(flops):
            tokens = flops / (6 * params)
            rows.append(
                {
                    "run": f"iso-{flops:.0e}-{params:.3g}",
                    "params": params,
                    "tokens": tokens,
                    "loss": loss_of(params, tokens, flops),
                    "isoflop_budget": flops,
                    "status": "ok",
                }
            )
    return pd.DataFrame(rows)


def isoflops(budgets, span, n_sizes, noise, seed, law=TRUTH, jitter=0.7):
    """Each budget sampled at sizes geometric over `span`, centred on its optimum moved by a
    random factor up to e^jitter either way (as bench/approach2_accuracy.py draws them)."""
    rng = np.random.default_rng(seed)
    frames = [
        pd.DataFrame(
            synthetic.isoflop(
                [c],
                span=span,
                n_sizes=n_sizes,
                noise=noise,
                seed=seed * 100 + i,
                law=law,
                offset=math.exp(rng.uniform(-jitter, jitter)),
            )
        )
        for i, c in enumerate(budgets)
    ]
    return fit.prepare(pd.concat(frames, ignore_index=True).drop(columns="flops"))[0]


def budget_runs(points):
    """(size labels, log N, log loss) of every budget's runs, as loss_noise takes them."""
    return [
        (fit.cluster(g["params"], fit.SIZE_TOLERANCE), np.log(g["params"].to_numpy()), np.log(g["loss"].to_numpy()))
        for _, g in points.groupby("isoflop_budget")
    ]


# ---------------------------------------------------------------------------------------------
# The spline's minimum


def test_spline_minima_is_the_exact_minimum_of_each_columns_akima_spline():
    rng = np.random.default_rng(3)
    x = np.sort(rng.uniform(0, 5, 9))
    y = 0.3 * (x[:, None] - rng.uniform(-0.5, 5.5, 400)) ** 2 + rng.normal(0, 0.05, (9, 400))
    where, value, interior = fit.spline_minima(x, y)
    dense = np.linspace(x[0], x[-1], 200_001)
    curves = Akima1DInterpolator(x, y, axis=0)(dense)
    best = curves.argmin(axis=0)
    assert np.all(value <= curves.min(axis=0) + 1e-12)  # exact: never above a dense grid's minimum,
    assert value == pytest.approx(curves.min(axis=0), abs=1e-7)  # and at most the grid's miss below it
    assert np.abs(where - dense[best]).max() < 1e-3
    assert np.array_equal(interior, (best != 0) & (best != len(dense) - 1))
    assert 0 < interior.sum() < len(interior)  # both kinds occur
    for j in (0, 7, 123):  # one column alone gives the same
        alone = fit.spline_minima(x, y[:, j])
        assert (alone[0][0], alone[1][0], alone[2][0]) == pytest.approx((where[j], value[j], interior[j]))


# ---------------------------------------------------------------------------------------------
# Point estimates without redraws


def test_approach2_recovers_a_known_exponent_from_exact_symmetric_curves():
    # log-symmetric sizes around each optimum: the spline is symmetric, so its minimum is exactly the
    # middle size; the last budget lies entirely below its optimum and is left out, saying why.
    a, G = 0.45, 0.09
    budgets = [1e17, 1e18, 1e19, 1e20]

    def n_opt(flops):
        return G * flops**a

    def sizes(flops):
        factors = [1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8] if flops < 1e20 else [1 / 16, 1 / 8, 1 / 4]
        return [n_opt(flops) * f for f in factors]

    df = isoflop_frame(budgets, sizes, lambda n, d, c: 3 - 0.1 * math.log10(c) + 0.05 * math.log(n / n_opt(c)) ** 2)
    section = quick(df)["approach2"]
    assert section["a"] == pytest.approx(a, rel=1e-9)
    assert section["b"] == pytest.approx(1 - a, rel=1e-9)
    assert section["G"] == pytest.approx(G, rel=1e-6)
    assert [row["flops"] for row in section["budgets"]] == budgets[:3]
    for row, flops in zip(section["budgets"], budgets):
        assert row["n_opt"] == pytest.approx(n_opt(flops), rel=1e-9)
        assert row["d_opt"] == pytest.approx(flops / (6 * n_opt(flops)), rel=1e-9)
        assert row["loss_opt"] == pytest.approx(3 - 0.1 * math.log10(flops), rel=1e-9)
        assert row["n_opt_ci95"] is None and not row["outside_sampled"]  # no redraws asked for
        assert len(row["curve"]["params"]) == len(row["curve"]["loss"]) and min(row["curve"]["loss"]) >= row["loss_opt"]
    assert section["skipped"] == [
        {"flops": 1e20, "reason": "the lowest loss is at the largest sampled size (no minimum inside the sizes)"}
    ]
    assert section["ci_method"] == "ols" and section["weights"] == "equal"


def test_approach2_on_the_chinchilla_law_finds_its_exponent_by_any_grouping():
    budgets = [1e18, 1e19, 1e20, 1e21]
    df = pd.DataFrame(synthetic.isoflop(budgets, span=16, n_sizes=9)).drop(columns="flops")  # N_opt/4 .. 4·N_opt
    by_column = quick(df)["approach2"]
    assert by_column["a"] == pytest.approx(TRUE_A, abs=1e-5)  # the optimum is a sampled size here
    # The same budgets from --budgets with FLOPs off by up to 5 %; from FLOPs alone, no groups
    # (runs whose FLOPs merely agree are not IsoFLOP profiles), and the fit says why.
    by_flops = quick(df.drop(columns="isoflop_budget"))
    assert by_flops["approach2"] is None and "isoflop_budget column or --budgets" in by_flops["approach2_why"]
    jittered = df.drop(columns="isoflop_budget").assign(tokens=df["tokens"] * np.resize([0.95, 1.0, 1.05], len(df)))
    by_budgets = quick(jittered, budgets=budgets)["approach2"]
    assert [row["n_points"] for row in by_budgets["budgets"]] == [9, 9, 9, 9]
    assert by_budgets["a"] == pytest.approx(by_column["a"], rel=1e-9)


def test_the_spline_has_no_wide_span_bias():
    # A lopsided law sampled over 1000x in N, the range placed differently around the optimum: a
    # parabola through every size lands up to 75 % off (log error 0.57); the spline's minimum stays
    # within 1 % (measured: at most 0.003 in log N).
    law = {"E": 1.8, "A": 2000.0, "B": 400.0, "alpha": 0.5, "beta": 0.25}
    budgets = [1e18, 1e20, 1e22]
    old_errors, new_errors = [], []
    for offset in (1 / 10, 1 / 3, 3, 10):
        df = pd.concat(
            [pd.DataFrame(synthetic.isoflop([c], span=1000, n_sizes=31, law=law, offset=offset)) for c in budgets],
            ignore_index=True,
        ).drop(columns="flops")
        section = fit.fit_approach2(fit.prepare(df)[0])[0]
        for row, c in zip(section["budgets"], budgets):
            truth = math.log(synthetic.optimal_params(c, law))
            rows = df[df["isoflop_budget"] == c]
            coef = np.polyfit(np.log(rows["params"]), rows["loss"], 2)  # a parabola through every size
            old_errors.append(abs(-coef[1] / (2 * coef[0]) - truth))
            new_errors.append(abs(math.log(row["n_opt"]) - truth))
        assert section["a"] == pytest.approx(law["beta"] / (law["alpha"] + law["beta"]), abs=2e-3)
    assert max(old_errors) > 0.5
    assert max(new_errors) < 0.01


# ---------------------------------------------------------------------------------------------
# The noise estimate and the redraws


def test_loss_noise_recovers_the_simulated_noise_and_its_repeats():
    # 7 budgets x 31 sizes over 100x at 0.5 % noise: over 40 draws (seeds 0-39) the estimate was
    # 0.0051 +- 0.0005 (0.0040 to 0.0062); each draw here must land within 30 %.
    estimates = []
    for seed in range(3):
        points = isoflops(np.geomspace(1e18, 1e21, 7), 100.0, 31, 0.005, seed)
        sd, dof = fit.loss_noise(budget_runs(points))
        estimates.append(sd)
        assert dof == 7 * (9 - 3)  # 9 sizes within 2x of each minimum
    assert np.all(np.abs(np.array(estimates) / 0.005 - 1) < 0.3), estimates
    # Two seeds of every size: the scatter between them counts as well.
    one = pd.DataFrame(synthetic.isoflop(np.geomspace(1e18, 1e21, 5), span=16, n_sizes=9, noise=0.005, seed=1))
    two = pd.DataFrame(synthetic.isoflop(np.geomspace(1e18, 1e21, 5), span=16, n_sizes=9, noise=0.005, seed=2))
    both = fit.prepare(pd.concat([one, two.assign(run=two["run"] + "-s1")], ignore_index=True).drop(columns="flops"))[0]
    sd, dof = fit.loss_noise(budget_runs(both))
    assert 0.0035 < sd < 0.0065 and dof == sum(2 * 5 - 3 for _ in range(5))  # 5 sizes within 2x, 2 runs each
    # exact curves: no noise; 3 runs a budget: no degrees of freedom, so no estimate
    exact = fit.prepare(pd.DataFrame(synthetic.isoflop([1e18, 1e19], span=16, n_sizes=9)).drop(columns="flops"))[0]
    assert fit.loss_noise(budget_runs(exact))[0] < 1e-4
    three = fit.prepare(pd.DataFrame(synthetic.isoflop([1e18, 1e19], span=4, n_sizes=3)).drop(columns="flops"))[0]
    assert fit.loss_noise(budget_runs(three)) == (None, 0)


def test_without_a_noise_estimate_the_curves_are_not_redrawn_and_it_says_so():
    three = fit.prepare(
        pd.DataFrame(synthetic.isoflop([1e18, 1e19, 1e20], span=4, n_sizes=3, noise=0.002)).drop(columns="flops")
    )[0]
    section, why, _ = fit.fit_approach2(three, bootstrap=200, seed=0)
    assert why is None and section["bootstrap"] == 0 and section["ci_method"] == "ols"
    assert "cannot be estimated" in section["bootstrap_why"]
    assert all(row["n_opt_ci95"] is None for row in section["budgets"])


def test_approach2_on_wide_noisy_isoflops_recovers_the_exponent_with_redrawn_intervals():
    # 13 budgets x 61 sizes over 300x at 1 % noise. Over 40 draws (bench/approach2_accuracy.py,
    # wide_61_sizes) a's error had a root mean square of about 0.015: 0.045 is 3 of them.
    points = isoflops(np.geomspace(1e17, 1e23, 13), 300.0, 61, 0.01, seed=0)
    section, why, summaries = fit.fit_approach2(points, bootstrap=200, seed=0)
    assert why is None and section["ci_method"] == "bootstrap" and section["bootstrap"] == 200
    assert section["a"] == pytest.approx(TRUE_A, abs=0.045)
    assert section["a_ci95"] == section["a_ci95_bootstrap"]
    assert section["a_ci95"][0] < TRUE_A < section["a_ci95"][1]
    assert section["b_ci95"] == pytest.approx([1 - section["a_ci95"][1], 1 - section["a_ci95"][0]])
    assert section["a_ci95_ols"][0] < section["a"] < section["a_ci95_ols"][1]
    assert section["noise"]["sd_log_loss"] == pytest.approx(0.01, rel=0.2) and section["weights"].startswith("1/sd")
    assert "WLS" in summaries[1]
    for row in section["budgets"]:
        assert row["n_points"] == row["n_fit_points"] == 61 and row["n_fit_sizes"] == 61
        assert row["n_opt_ci95"][0] < row["n_opt"] < row["n_opt_ci95"][1]
        assert row["interior_fraction"] >= fit.approach2.MIN_INTERIOR
        floor = fit.approach2.SD_FLOOR_SPACING * math.log(300) / 60
        assert row["log_n_opt_sd"] >= floor / row["interior_fraction"] - 1e-12
    # the same seed gives the same section; another seed other redraws, the same noise estimate
    assert fit.fit_approach2(points, bootstrap=200, seed=0)[0] == section
    other = fit.fit_approach2(points, bootstrap=200, seed=1)[0]
    assert other["a_ci95"] != section["a_ci95"] and other["noise"] == section["noise"]


def test_the_interval_is_the_weighted_regression_through_each_redraw():
    rng = np.random.default_rng(0)
    log_c = np.log(np.geomspace(1e18, 1e21, 5))
    weights = rng.uniform(20, 80, 5)
    minima = [0.5 * lc - 2 + rng.normal(0, 0.1, n) for lc, n in zip(log_c, (300, 280, 300, 250, 290))]
    section = {"bootstrap": 300}
    _exponents_bootstrap(section, minima, log_c, weights)
    slopes = [
        sm.WLS([m[i] for m in minima], sm.add_constant(log_c), weights=weights).fit().params[1] for i in range(250)
    ]  # redraw i takes every budget's i-th minimum; 250 is the fewest
    assert section["bootstrap_failed"] == 50
    assert section["a_ci95"] == pytest.approx(list(np.percentile(slopes, [2.5, 97.5])), rel=1e-12)
    assert section["ci_method"] == "bootstrap"


def test_a_minimum_rarely_inside_the_sizes_leaves_the_budget_out():
    # Three exact sizes around the optimum (its minimum is the middle one), but the other budgets put
    # the loss noise far above the curve's depth: most redrawn curves have their minimum at an edge.
    df = pd.concat(
        [
            pd.DataFrame(synthetic.isoflop([c], span=16, n_sizes=9, noise=0.1, seed=i))
            for i, c in enumerate([1e18, 1e19])
        ]
        + [pd.DataFrame(synthetic.isoflop([1e20], span=4, n_sizes=3))],
        ignore_index=True,
    ).drop(columns="flops")
    section = fit.fit_approach2(fit.prepare(df)[0], bootstrap=300, seed=0)[0]
    assert [s["flops"] for s in section["skipped"]] == [1e20]
    assert section["skipped"][0]["reason"].endswith(
        "of the redrawn curves have their minimum inside the sampled sizes (the minimum is not bracketed)"
    )
    assert int(section["skipped"][0]["reason"].split()[1].rstrip("%")) < 100 * fit.approach2.MIN_INTERIOR
    assert quick(df)["approach2"]["budgets"][2]["flops"] == 1e20  # without redraws it stays


# ---------------------------------------------------------------------------------------------
# Bias on simulated IsoFLOP profiles (bench/approach2_accuracy.py measures it over 40 draws)


@pytest.mark.parametrize(
    "scenario, tolerance",
    [
        # Measured over 40 draws with 1000 redraws (bias +- its standard error, root mean square error):
        # noise-free, 15 sizes over 100x: 0.00002 +- 0.00003, rmse 0.0002 (the parabola before it:
        # -0.00017 +- 0.00013, rmse 0.0008). The mean of 8 draws must lie within 3e-4 of the truth.
        ((np.geomspace(1e18, 1e21, 7), 100.0, 15, 0.0), 3e-4),
        # 12 budgets, 12 sizes spaced 1.4x (Porian et al.'s ladder), 0.2 % noise: -0.0007 +- 0.0027,
        # rmse 0.017 (the parabola: 0.0001 +- 0.0002, rmse 0.0015). Within 3 standard errors of an
        # 8-draw mean, 3 x 0.017 / sqrt(8) = 0.018.
        ((np.geomspace(1.25e16, 2.56e19, 12), 1.4**11, 12, 0.002), 0.018),
    ],
)
def test_approach2_is_unbiased_on_the_chinchilla_law(scenario, tolerance):
    errors = [
        fit.fit_approach2(isoflops(*scenario, seed), bootstrap=200, seed=seed)[0]["a"] - TRUE_A for seed in range(8)
    ]
    assert abs(np.mean(errors)) < tolerance, errors


def test_cli_writes_the_method_the_noise_and_the_left_out_budgets(tmp_path):
    df = pd.concat(
        [
            pd.DataFrame(synthetic.isoflop([c], span=16, n_sizes=7, noise=0.003, seed=i, offset=offset))
            for i, (c, offset) in enumerate([(1e18, 1), (1e19, 1.3), (1e20, 1 / 20)])
        ],
        ignore_index=True,
    )
    df.to_csv(tmp_path / "iso.csv", index=False)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scalelab",
            "fit",
            str(tmp_path / "iso.csv"),
            "--out",
            str(tmp_path / "out"),
            "--bootstrap",
            "50",
            "--workers",
            "1",
            "--grid-points",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    section = json.loads((tmp_path / "out" / "fit.json").read_text())["approach2"]
    assert section["method"].startswith("akima") and section["noise"]["dof"] > 0 and section["bootstrap"] == 50
    assert [s["flops"] for s in section["skipped"]] == [1e20]  # sampled far below its optimum
    text = (tmp_path / "out" / "fit.txt").read_text()
    assert "Akima spline" in text and "note: budget 1e+20 left out: the lowest loss is at the largest" in text
    assert "IsoFLOP loss noise: sd of a run's log loss" in text and "WLS Regression Results" in text
    table = pd.read_csv(tmp_path / "out" / "isoflop.csv")
    assert list(table["flops"]) == [1e18, 1e19] and table["log_n_opt_sd"].gt(0).all()
