"""scalelab curves: the schedule-aware laws fitted to synthetic curves drawn from a known law."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalelab import cli, load_curves
from scalelab.config.load import load
from scalelab.curves.data import run_trajectories
from scalelab.curves.fitting import fit_law
from scalelab.curves.laws import LAWS
from scalelab.curves.schedules import lr_sequence
from scalelab.plan.grid import expand_grid

ROOT = Path(__file__).resolve().parents[1]
TRUE = np.array([2.0, 3.0, 0.4, 0.005, 0.98])  # L0, A, alpha, C, lam of the annealing law (lr normalised by 4e-3)


@pytest.fixture(scope="module")
def specs():
    config = load(ROOT / "config" / "config.yaml")
    return {run.id: run.spec for run in expand_grid(config) if run.model == "m"}


def synthetic_curve(spec: dict, noise: float, rng) -> pd.DataFrame:
    """curve.csv of a run whose val loss follows the annealing law (every 10 steps and the last)."""
    lrs = lr_sequence(spec)
    steps = np.unique(np.r_[np.arange(10, len(lrs), 10), len(lrs)])
    loss = LAWS["annealing"].predict(TRUE, lrs / 4e-3, steps) * np.exp(rng.normal(0, noise, len(steps)))
    return pd.DataFrame(
        {"step": steps, "tokens": steps * 2048, "flops": 0.0, "lr": np.nan, "train_loss": np.nan, "val_loss": loss}
    )


def test_laws_without_a_drop_are_the_power_law_in_the_lr_area():
    lrs = np.r_[np.linspace(0.1, 1, 10), np.ones(90)]
    steps = np.array([20, 50, 100])
    power = 2.0 + 3.0 * np.cumsum(lrs)[steps - 1] ** -0.4
    assert np.allclose(LAWS["annealing"].predict(TRUE, lrs, steps), power)
    assert np.allclose(LAWS["multi-power"].predict([2.0, 3.0, 0.4, 1.0, 1.0, 0.5, 0.5], lrs, steps), power)
    cooled = np.r_[lrs[:80], np.linspace(1, 0.1, 20)]
    assert LAWS["multi-power"].predict([2.0, 3.0, 0.4, 1.0, 1.0, 0.5, 0.5], cooled, steps)[-1] < power[-1]


def test_the_annealing_law_is_recovered_and_predicts_an_unseen_cooldown(specs):
    rng = np.random.default_rng(0)
    curves = {
        r: pd.DataFrame({"step": c["step"], "kind": "val", "loss": c["val_loss"]})
        for r in ("m-290K-s0", "m-1.6M-s0", "m-4.8M-s0")
        for c in [synthetic_curve(specs[r], 0.002, rng)]
    }
    trajectories = run_trajectories(specs, curves)
    held = [t for t in trajectories if t.name == "m-4.8M-s0"][0]
    fitted = [t for t in trajectories if t is not held]
    fit = fit_law(LAWS["annealing"], fitted, "val")
    truth = LAWS["annealing"].predict(TRUE, held.lrs / 4e-3, [held.final_step])[0]
    predicted = np.exp(fit.log_predict(held.lrs, held.final_step)[0])
    assert abs(predicted / truth - 1) < 0.01
    assert abs(fit.law_theta[2] - TRUE[2]) < 0.1  # alpha


def test_a_cosine_run_is_predicted_from_wsd_curves(specs):
    """The law fitted to WSD curves predicts another schedule through the project's own schedule code."""
    rng = np.random.default_rng(3)
    curves = {
        r: pd.DataFrame({"step": c["step"], "kind": "val", "loss": c["val_loss"]})
        for r in ("m-290K-s0", "m-1.6M-s0", "m-4.8M-s0")
        for c in [synthetic_curve(specs[r], 0.002, rng)]
    }
    fit = fit_law(LAWS["annealing"], run_trajectories(specs, curves), "val")
    base = specs["m-2.8M-s0"]
    cosine = {k: v for k, v in base.items() if k not in ("cooldown", "cooldown_shape")} | {"schedule": "cosine"}
    lrs = lr_sequence(cosine)
    assert lrs[len(lrs) // 2] < base["lr"] * 0.6 and lrs[-1] == pytest.approx(base["lr"] * base["min_lr_ratio"], 0.01)
    truth = LAWS["annealing"].predict(TRUE, lrs / 4e-3, [len(lrs)])[0]
    assert abs(np.exp(fit.log_predict(lrs, len(lrs))[0]) / truth - 1) < 0.01


def write_study(tmp_path: Path, specs: dict, rng) -> Path:
    study = tmp_path / "study"
    (study / "config").mkdir(parents=True)
    shutil.copy(ROOT / "config" / "config.yaml", study / "config" / "config.yaml")
    for run_id, spec in specs.items():
        folder = study / "results" / "runs" / run_id
        folder.mkdir(parents=True)
        synthetic_curve(spec, 0.002, rng).to_csv(folder / "curve.csv", index=False)
        (folder / "metrics.json").write_text('{"status": "ok"}')
    return study


def test_scalelab_curves_writes_its_outputs_and_load_curves_predicts(tmp_path, specs):
    study = write_study(tmp_path, specs, np.random.default_rng(1))
    out = tmp_path / "out"
    rc = cli.main(
        [
            "curves",
            str(study),
            "--out",
            str(out),
            "--use",
            "m-290K-s0",
            "m-900K-s0",
            "m-1.6M-s0",
            "--predict",
            "m-4.8M-s0",
            "m-520K-s0",
            "--no-trunk-checkpoints",
        ]
    )
    assert rc == 0
    table = pd.read_csv(out / "predictions.csv")
    assert list(table.columns[:4]) == ["run", "loss", "low", "high"]
    assert (table["low"] < table["loss"]).all() and (table["loss"] < table["high"]).all()
    curves = load_curves(out)
    assert curves.chosen in LAWS and (out / "curves.txt").read_text().startswith("curve laws fitted")
    spec = specs["m-4.8M-s0"]
    truth = LAWS["annealing"].predict(TRUE, lr_sequence(spec) / 4e-3, [len(lr_sequence(spec))])[0]
    assert abs(curves.predict(spec, "annealing")["loss"] / truth - 1) < 0.02
    longer = {**spec, "tokens": spec["tokens"] * 2, "cooldown": 0.4}
    assert "extrapolates" in curves.predict(longer)["note"]


def test_bad_input_gets_one_line(tmp_path, specs, capsys):
    study = write_study(tmp_path, {k: specs[k] for k in ("m-290K-s0", "m-1.6M-s0")}, np.random.default_rng(2))
    (study / "results" / "runs" / "m-290K-s0" / "curve.csv").write_text("step,tokens\n1,2\n")
    assert cli.main(["curves", str(study), "--out", str(tmp_path / "o"), "--no-trunk-checkpoints"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "curve.csv: missing column(s)" in err[0]
    assert cli.main(["curves", str(study), "--out", str(tmp_path / "o"), "--use", "m-9M-s0"]) == 1
    assert "--use: m-9M-s0" in capsys.readouterr().err
    assert not (tmp_path / "o" / "curves.json").exists()


@pytest.mark.e2e
def test_the_workflow_fits_curves_only_where_the_config_asks(wsd_study, tmp_path):
    import yaml
    from test_workflow import planned_jobs, snakemake
    from test_workflow_wsd import WSD_TINY

    assert planned_jobs(wsd_study) == {}  # a study without fit.curves: nothing new to run
    study = tmp_path / "study"
    shutil.copytree(wsd_study, study, symlinks=True)
    config = {**WSD_TINY, "fit": {**WSD_TINY["fit"], "curves": True}}
    (study / "config.yaml").write_text(yaml.safe_dump(config))
    assert planned_jobs(study) == {"curves": 1, "report": 1}
    snakemake(study)
    table = pd.read_csv(study / "results/curves/predictions.csv")
    assert len(table) == 6 and table["loss"].notna().all()
    assert (study / "results/report/figures/curve_forecast.png").exists()
    assert load_curves(study / "results/curves").chosen in LAWS
