"""WSD (train.schedule: wsd): the schedule, families and branch points, config errors, FLOPs
accounting, and the exactness of a cooldown branch against a from-scratch run."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml

from conftest import REPO, tiny_spec
from scalelab.config import load as study_config
from scalelab.plan import grid
from scalelab.plan import wsd
from scalelab.errors import ScalelabError

# The 4 x 3 cosine grid (the default study before it became WSD): these tests turn it into WSD.
COSINE_GRID = REPO / "config" / "examples" / "cosine-4x3.yaml"
WSD = {"schedule": "wsd", "warmup_tokens": 1024, "cooldown": 0.25, "cooldown_shape": "1-sqrt"}


def default_config(**train) -> dict:
    raw = yaml.safe_load(COSINE_GRID.read_text())
    raw["train"].update(train)
    return study_config.validate(raw)


def wsd_spec(**changes) -> dict:
    return tiny_spec(**{**WSD, **changes})


# ----------------------------------------------------------------------------- the schedule


@pytest.mark.parametrize("shape", ["1-sqrt", "linear"])
def test_trunk_and_branch_lr_agree_until_the_branch_then_decay(shape):
    steps, warmup, branch = 100, 10, 80
    trunk = [wsd.lr_factor(s, branch, warmup, branch, shape, 0.1) for s in range(branch + 1)]
    run = [wsd.lr_factor(s, steps, warmup, branch, shape, 0.1) for s in range(steps)]
    assert run[: branch + 1] == trunk  # equal at the branch point too (factor 1): resuming is seamless
    assert run[warmup : branch + 1] == [1.0] * (branch + 1 - warmup)
    decay = run[branch:]
    assert all(a > b for a, b in zip(decay, decay[1:])) and 0.1 < decay[-1] < 0.3
    middle = run[branch + 10]
    assert middle == pytest.approx(0.1 + 0.9 * (1 - (0.5 if shape == "linear" else 0.5**0.5)))


def test_branch_step_rounds_the_cooldown_half_up_to_whole_steps():
    # 8K tokens of 256 a step: 32 steps; cooldown 0.2 -> 6.4 -> 6 steps; 0.25 -> 8; 0.203125 -> 6.5 -> 7
    assert wsd.total_steps(wsd_spec(tokens=8192)) == 32
    assert wsd.branch_step(wsd_spec(tokens=8192, cooldown=0.2)) == 26
    assert wsd.branch_step(wsd_spec(tokens=8192, cooldown=0.25)) == 24
    assert wsd.branch_step(wsd_spec(tokens=8192, cooldown=0.203125)) == 25
    assert wsd.branch_step(wsd_spec(tokens=8192, cooldown=0.001)) == 31  # at least one cooldown step


# ----------------------------------------------------------------------------- identity


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_non_wsd_specs_carry_no_wsd_key(schedule):
    for run in grid.expand_grid(default_config(schedule=schedule)):
        assert not {"cooldown", "cooldown_shape"} & set(run.spec), run.id
        assert json.loads(run.spec_json)["schedule"] == schedule


def test_families_group_runs_by_everything_but_d():
    config = default_config(schedule="wsd", warmup_tokens=2048)
    config["grid"]["seeds"] = [0, 1]
    config["overrides"]["s"] = {"cooldown": 0.3}
    runs = grid.expand_grid(config)
    families = wsd.plan_families(runs)
    assert len(families) == 4 * 2
    for family in families.values():
        assert len(family.branches) == 3 and family.points == sorted(family.points)
    by_run = {r.id: wsd.family_id(r.spec) for r in runs}
    assert by_run["xs-100K-s0"] == by_run["xs-400K-s0"] != by_run["xs-100K-s1"] != by_run["s-100K-s1"]
    # cooldown decides the branch points, not the trunk: it is no part of the family
    assert "cooldown" not in families[by_run["s-100K-s0"]].spec
    assert {r.spec["cooldown"] for r in runs if r.model == "s"} == {0.3}


# ----------------------------------------------------------------------------- bad input: one line, naming the key


@pytest.mark.parametrize(
    "train, overrides, message",
    [
        ({"cooldown": 0}, {}, "train.cooldown: 0 is less than or equal to the minimum of 0"),
        ({"cooldown": 1.5}, {}, "train.cooldown: 1.5 is greater than or equal to the maximum of 1"),
        ({}, {"m": {"cooldown": 1}}, "overrides.m.cooldown: 1 is greater than or equal to the maximum of 1"),
        ({"warmup_tokens": 0.05}, {}, "train.warmup_tokens: 0.05 is a fraction of D; schedule wsd needs absolute"),
        ({}, {"xs": {"warmup_tokens": 1}}, "overrides.xs.warmup_tokens: 1 is a fraction of D"),
        (
            {"warmup_tokens": 90_000},
            {},
            "train.cooldown: run xs-100K-s0 would branch at step 78 of 98, not after its warmup (88 steps)",
        ),
        ({"cooldown_shape": "cosine"}, {}, "train.cooldown_shape: 'cosine' is not one of 1-sqrt, linear"),
    ],
)
def test_bad_wsd_settings_are_one_line_naming_the_key(train, overrides, message):
    raw = yaml.safe_load(COSINE_GRID.read_text())
    raw["train"].update({"schedule": "wsd", "warmup_tokens": 2048, **train})
    raw["overrides"].update(overrides)
    with pytest.raises(ScalelabError) as error:
        grid.expand_grid(study_config.validate(raw))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_two_runs_branching_at_one_step_is_a_config_error():
    raw = yaml.safe_load(COSINE_GRID.read_text())
    raw["train"].update(schedule="wsd", warmup_tokens=2048)
    raw["grid"]["tokens"] = [12 * 1024, 13 * 1024]  # 12 and 13 steps both branch at 10 (cooldown 0.2)
    with pytest.raises(ScalelabError, match=r"grid.tokens: runs xs-12.288K-s0 and xs-13.312K-s0 both branch"):
        grid.expand_grid(study_config.validate(raw))


# ----------------------------------------------------------------------------- FLOPs


def test_flops_spent_sums_to_trunk_plus_cooldowns():
    specs = [wsd_spec(run=f"t-{d}-s0", tokens=d * 256) for d in (16, 32, 64)]  # 16, 32, 64 steps
    family = wsd.plan_families(specs)[wsd.family_id(specs[0])]
    assert family.points == [12, 24, 48]
    spent = [wsd.run_flops(s, 10, family.previous(wsd.branch_step(s)))[0] for s in specs]
    assert spent == [16 * 256 * 10, (12 + 8) * 256 * 10, (24 + 16) * 256 * 10]
    trunk, cooldowns = 48, 4 + 8 + 16
    assert sum(spent) == (trunk + cooldowns) * 256 * 10
    total, independent = wsd.study_flops(specs, lambda spec: 10)
    assert (total, independent) == (sum(spent), (16 + 32 + 64) * 256 * 10)
    cosine = [tiny_spec(run=s["run"], tokens=s["tokens"]) for s in specs]
    assert wsd.study_flops(cosine, lambda spec: 10) == (independent, independent)


def test_check_prints_the_flops_saved(tmp_path, capsys):
    from scalelab.cli import main

    raw = yaml.safe_load(COSINE_GRID.read_text())
    raw["train"].update(schedule="wsd", warmup_tokens=2048)
    (tmp_path / "wsd.yaml").write_text(yaml.safe_dump(raw))
    assert main(["check", str(tmp_path / "wsd.yaml")]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "4 WSD trunk(s) shared" in line and "as independent runs (ratio 0.6" in line, line


# ----------------------------------------------------------------------------- exactness


def test_a_cooldown_branch_ends_where_a_from_scratch_run_ends(tiny_data, tmp_path):
    """Trunk in two segments (0-24, 24-48), then the 64-step run's cooldown from step 48, against the
    same WSD run trained from scratch; then the trunk cut differently is restored from the store."""
    from scalelab.train import train_run, train_trunk

    spec = wsd_spec(run="t-16K-s0", tokens=16384)  # 64 steps, branch at 48
    reference = train_run(spec, tiny_data, tmp_path / "scratch")
    family, fid, branch = wsd.family_spec(spec), wsd.family_id(spec), wsd.branch_step(spec)
    folder = tmp_path / "trunks" / fid
    first = train_trunk(family, 24, tiny_data, folder / "step24.ckpt", store_dir=tmp_path / "store")
    second = train_trunk(
        family,
        branch,
        tiny_data,
        folder / f"step{branch}.ckpt",
        start=folder / "step24.ckpt",
        store_dir=tmp_path / "store",
    )
    assert (first["from"], second["from"], second["restored_from"]) == (0, 24, None)
    metrics = train_run(spec, tiny_data, tmp_path / "branch", trunks_dir=tmp_path / "trunks")
    assert metrics["steps"] == reference["steps"] == 64
    assert metrics["val_loss"] == pytest.approx(reference["val_loss"], rel=1e-4)
    assert metrics["branch_from_tokens"] == 48 * 256 and metrics["schedule"] == "wsd"
    assert metrics["flops"] == reference["flops"] == reference["flops_spent"]
    assert metrics["flops_spent"] == pytest.approx(reference["flops"] * (24 + 16) / 64)  # segment 24-48 + cooldown
    scratch, branched = pd.read_csv(tmp_path / "scratch/curve.csv"), pd.read_csv(tmp_path / "branch/curve.csv")
    assert branched["step"].min() == 0 and (branched["step"] < 24).any()  # the trunk's rows come along
    last = branched.dropna(subset=["train_loss"]).iloc[-1]
    assert last["step"] == 63 and last["lr"] == pytest.approx(scratch.dropna(subset=["lr"]).iloc[-1]["lr"])
    # The state at step 48 is family + code + step: trained in one piece from scratch, it is a copy.
    again = train_trunk(
        family, branch, tiny_data, tmp_path / "other" / f"step{branch}.ckpt", store_dir=tmp_path / "store"
    )
    assert again["restored_from"] and again["from"] == 0
    assert (tmp_path / "other" / f"step{branch}.ckpt").read_bytes() == (folder / f"step{branch}.ckpt").read_bytes()


def test_a_killed_trunk_job_resumes_to_the_same_state(tiny_data, tmp_path, capsys):
    """`scalelab trunk` killed mid-segment resumes from its own checkpoints (.work-step<k>/) and
    writes the state an uninterrupted segment writes."""
    import signal
    import subprocess
    import sys
    import time

    import torch

    from scalelab.train import CKPT_NAME, train_trunk

    family = wsd.family_spec(wsd_spec(checkpoint_every=0.1))
    reference = tmp_path / "ref" / "step200.ckpt"
    train_trunk(family, 200, tiny_data, reference, threads=1)
    out = tmp_path / "killed" / "step200.ckpt"
    command = [
        sys.executable,
        "-m",
        "scalelab",
        "trunk",
        "--family",
        json.dumps(family),
        "--step",
        "200",
        "--start=",
        "--data",
        str(tiny_data),
        "--out",
        str(out),
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out.parent / ".work-step200" / CKPT_NAME
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=True, map_location="cpu")["global_step"] >= 60:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the segment finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not out.exists()
    capsys.readouterr()
    info = train_trunk(family, 200, tiny_data, out, threads=1)
    assert info["from"] == 0 and info["restored_from"] is None
    resumed_at = int(re.search(r"trunk steps (\d+) to 200", capsys.readouterr().out).group(1))
    assert resumed_at >= 60 and resumed_at % 20 == 0  # from its own end-of-interval checkpoint
    resumed, expected = (torch.load(p, weights_only=True, map_location="cpu") for p in (out, reference))
    assert resumed["global_step"] == expected["global_step"] == 200
    for name, tensor in expected["state_dict"].items():
        assert torch.allclose(resumed["state_dict"][name], tensor, atol=1e-6), name
    assert not ckpt.parent.exists()  # done: the work folder is gone
