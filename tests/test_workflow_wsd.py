"""End to end under `train.schedule: wsd`: a tiny study of 2 models x 3 token counts, run once for
real (the session fixture `wsd_study` in tests/conftest.py, shared with other files), then every
staleness question asked as a dry run (job counts per rule)."""

from __future__ import annotations

import copy
import html
import json
import re
import shutil

import pandas as pd
import pytest
import yaml

from test_workflow import planned_jobs, snakemake

pytestmark = pytest.mark.e2e

WSD_TINY = {
    "data": {
        "source": {"files": ["corpus/*.txt"]},
        "split": {"val": 0.1, "test": 0.1},
        "tokenizer": {"vocab_size": 300},
    },
    "models": {"a": {"n_layer": 1, "d_model": 16, "n_head": 2}, "b": {"n_layer": 1, "d_model": 32, "n_head": 2}},
    "grid": {"models": ["a", "b"], "tokens": ["4K", "8K", "16K"], "seeds": [0]},  # 16, 32, 63 steps
    "train": {
        "context": 32,
        "batch_size": 8,
        "val_tokens": 512,
        "val_evals": 2,
        "schedule": "wsd",
        "warmup_tokens": 512,
        "cooldown": 0.25,
    },  # branch at 12, 24, 47
    "eval": {"test_tokens": 512, "prompts": 4, "prompt_tokens": 8, "max_new_tokens": 8, "batch_size": 4},
    "fit": {"bootstrap": 10},
}
DOWNSTREAM = {"aggregate": 1, "fit": 1, "suggest": 1, "report": 1}


# wsd_study: the study above, run once per session (tests/conftest.py), shared with other files


def changed(study, tmp_path, edit) -> dict[str, int]:
    config = copy.deepcopy(WSD_TINY)
    edit(config)
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(config))
    return planned_jobs(study, config=path), path


def test_wsd_study_shares_trunks_and_accounts_for_them(wsd_study):
    table = pd.read_csv(wsd_study / "results/metrics.csv").set_index("run")
    assert (table["status"] == "ok").all() and (table["schedule"] == "wsd").all()
    assert table.loc["a-16K-s0", "branch_from_tokens"] == 47 * 256
    for model in "ab":
        rows = table[table["model"] == model]
        per_token = rows["flops"].iloc[0] / rows["tokens"].iloc[0]
        trunk_and_cooldowns = (47 + (16 - 12) + (32 - 24) + (63 - 47)) * 256 * per_token
        assert rows["flops_spent"].sum() == pytest.approx(trunk_and_cooldowns)
        assert rows["flops_spent"].sum() < rows["flops"].sum()
        folders = list((wsd_study / "results/trunks").glob(f"{model}-s0-*"))
        assert len(folders) == 1 and sorted(p.name for p in folders[0].glob("*.ckpt")) == [
            "step12.ckpt",
            "step24.ckpt",
            "step47.ckpt",
        ]
    curve = pd.read_csv(wsd_study / "results/runs/b-16K-s0/curve.csv")
    assert curve["step"].min() == 0 and curve["step"].max() == 63  # the trunk's rows, then its cooldown
    summary = (wsd_study / "results/report/summary.txt").read_text()
    spent, alone = table["flops_spent"].sum(), table["flops"].sum()
    assert f"(ratio {spent / alone:.3f})" in summary and "FLOPs spent vs" in summary
    assert "FLOPs spent vs" in (wsd_study / "results/report/index.html").read_text()
    # Wall time: each run's own cooldown job plus the trunk segment charged to it (the one ending at
    # its branch point), so the runs' total is every training job's, trunks included.
    segments = {p: json.loads(p.read_text())["wall_s"] for p in (wsd_study / "results/trunks").glob("*/step*.json")}
    assert len(segments) == 6  # one per run: each charged to the run that branches at its end
    page = html.unescape((wsd_study / "results/report/index.html").read_text())
    own, trunk = table["wall_s"].sum(), sum(segments.values())
    assert (
        f"every training job: {own + trunk:,.0f} s ({own:,.0f} s in the runs' own cooldown jobs + {trunk:,.0f} s"
        in page
    )
    for heading in ("own wall time (s)", "trunk share (s)", "FLOPs spent (own + trunk share)", "Study settings"):
        assert heading in page, heading
    assert "cooldown_shape" in page and "1-sqrt" in page  # the train settings, from the resolved config


def test_wsd_no_op_does_nothing(wsd_study):
    assert planned_jobs(wsd_study) == {}


def test_a_larger_d_schedules_one_trunk_segment_and_one_cooldown_per_family(wsd_study, tmp_path):
    jobs, _ = changed(wsd_study, tmp_path, lambda c: c["grid"]["tokens"].append("32K"))
    assert jobs == {"trunk": 2, "train": 2, "evaluate": 2, **DOWNSTREAM}


def test_a_new_seed_schedules_one_new_family_per_model(wsd_study, tmp_path):
    jobs, _ = changed(wsd_study, tmp_path, lambda c: c["grid"]["seeds"].append(1))
    assert jobs == {"trunk": 2 * 3, "train": 2 * 3, "evaluate": 2 * 3, **DOWNSTREAM}


def test_one_models_lr_reruns_only_its_family(wsd_study, tmp_path):
    jobs, path = changed(wsd_study, tmp_path, lambda c: c.setdefault("overrides", {}).update(b={"lr": 1e-3}))
    assert jobs == {"trunk": 3, "train": 3, "evaluate": 3, **DOWNSTREAM}
    detail = snakemake(wsd_study, "--dry-run", config=path).stdout
    assert set(re.findall(r"output: results/runs/([^/]+)/model\.pt", detail)) == {"b-4K-s0", "b-8K-s0", "b-16K-s0"}
    trunks = re.findall(r"output: results/trunks/([^/]+)/step", detail)
    assert len(trunks) == 3 and all(name.startswith("b-s0-") for name in trunks)


def test_cooldown_reruns_cooldowns_and_the_segments_whose_ends_moved(wsd_study, tmp_path):
    # 0.3: branch points 11, 22, 44 (all moved): every segment and every cooldown of model b
    jobs, _ = changed(wsd_study, tmp_path, lambda c: c.setdefault("overrides", {}).update(b={"cooldown": 0.3}))
    assert jobs == {"trunk": 3, "train": 3, "evaluate": 3, **DOWNSTREAM}
    # 0.22: branch points 12 (kept), 25, 49: the segments after the first one and every cooldown
    jobs, _ = changed(wsd_study, tmp_path, lambda c: c["train"].update(cooldown=0.22))
    assert jobs == {"trunk": 2 * 2, "train": 2 * 3, "evaluate": 2 * 3, **DOWNSTREAM}


def test_inserting_a_d_trains_the_new_piece_and_restores_the_rest(wsd_study, tmp_path):
    """12K (47 steps, branch 35) between 8K and 16K: the segment 24-35 and its cooldown train; the
    segment ending at 47 and the 16K cooldown rerun as copies from the stores."""
    study = tmp_path / "copy"
    shutil.copytree(wsd_study, study, symlinks=True)
    jobs, path = changed(study, tmp_path, lambda c: c["grid"]["tokens"].insert(2, "12K"))
    assert jobs == {"trunk": 2 * 2, "train": 2 * 2, "evaluate": 2 * 2, **DOWNSTREAM}
    # only the trunks and branches (evaluate/aggregate/fit/report would add a minute, and nothing to check)
    snakemake(study, *[f"results/runs/{m}-{d}-s0/metrics.json" for m in "ab" for d in ("12K", "16K")], config=path)
    for model in "ab":
        folder = next((study / "results/trunks").glob(f"{model}-s0-*"))
        assert "restored from" in (study / f"logs/trunk/{folder.name}/step47.log").read_text()
        assert "restored from" not in (study / f"logs/trunk/{folder.name}/step35.log").read_text()
        assert "restored from" in (study / f"logs/train/{model}-16K-s0.log").read_text()
    metrics = {d: json.loads((study / f"results/runs/a-{d}-s0/metrics.json").read_text()) for d in ("12K", "16K")}
    per_token = metrics["16K"]["flops"] / metrics["16K"]["tokens"]
    # the restored 16K run's charge follows the new branch points: 35-47 and its cooldown
    assert metrics["16K"]["flops_spent"] == pytest.approx((47 - 35 + 63 - 47) * 256 * per_token)
    assert metrics["12K"]["flops_spent"] == pytest.approx((35 - 24 + 47 - 35) * 256 * per_token)
    assert planned_jobs(study, config=path) == {"evaluate": 4, **DOWNSTREAM}
