"""The workflow's plan (scalelab.plan.workflow.StudyPlan) without Snakemake: each rule's params
and resources, WSD trunks, stale outputs and the start-up checks, in milliseconds."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml
from conftest import REPO

from scalelab.config import load as study_config
from scalelab.errors import ScalelabError
from scalelab.plan import wsd
from scalelab.plan.workflow import StudyPlan, capped_cores, rule_role
from scalelab.store.fingerprint import code_fingerprint

COSINE_GRID = REPO / "config" / "examples" / "cosine-4x3.yaml"


def plan_of(tmp_path, main_process=False, grid=None, **train) -> StudyPlan:
    """The cosine example (or its WSD twin) on three small text files, planned in `tmp_path`; `grid`
    updates its grid section."""
    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    for i in range(3):
        (corpus / f"doc{i}.txt").write_text(f"document {i}: the loss falls as the data grows.\n")
    raw = yaml.safe_load(COSINE_GRID.read_text())
    raw["data"]["source"] = {"files": [str(corpus / "*.txt")]}
    raw["train"].update(train)
    raw["grid"].update(grid or {})
    config = study_config.validate(raw)
    return StudyPlan.build(config, [], main_process=main_process, results=tmp_path / "results")


def test_each_run_param_is_its_canonical_spec_and_its_code(tmp_path):
    plan = plan_of(tmp_path)
    assert plan.run_ids and set(plan.run_ids) == set(plan.runs)
    for run_id, run in plan.runs.items():
        assert plan.run_spec(run_id) == json.dumps(run.spec, sort_keys=True)
        assert plan.run_code(run_id) == code_fingerprint("train")
        assert plan.branch_inputs(run_id) == {}
    assert plan.families == {} and plan.trunk_segments == {}
    assert plan.sweep_keys == [] and plan.tokenize_code == code_fingerprint("tokenize")


def test_a_study_without_sweeps_or_forms_keeps_its_fit_spec_short(tmp_path):
    spec = json.loads(plan_of(tmp_path).fit_spec())
    assert not {"select", "sweep_keys", "forms", "form", "allow_any_loss"} & set(spec)
    assert {"target", "params", "bootstrap", "seed", "holdout", "predict_flops", "budgets"} <= set(spec)
    suggest = json.loads(plan_of(tmp_path).suggest_spec())
    assert "cooldown" not in suggest and suggest["tokens_per_step"] == 16 * 64


def test_a_cpu_run_is_evaluated_on_the_cpu(tmp_path):
    plan = plan_of(tmp_path, accelerator="cpu")
    run = plan.run_ids[0]
    assert json.loads(plan.eval_spec(run))["device"] == "cpu"
    assert json.loads(plan_of(tmp_path, accelerator="auto").eval_spec(run))["device"] == "auto"


def test_wsd_runs_branch_from_their_family_trunk(tmp_path):
    plan = plan_of(tmp_path, schedule="wsd", warmup_tokens=1024, cooldown=0.25)
    assert plan.families
    for fid, family in plan.families.items():
        points = family.points
        assert plan.trunk_start(fid, points[0]) == ""
        for before, step in zip(points, points[1:]):
            assert plan.trunk_start(fid, step) == f"results/trunks/{fid}/step{before}.ckpt"
        for step, run in family.branches.items():
            assert plan.trunk_run(fid, str(step)) == run
            assert json.loads(plan.trunk_family(fid, step)) == family.spec
            assert plan.run_code(run) == code_fingerprint("train_wsd") != code_fingerprint("train")
            inputs = plan.branch_inputs(run)
            assert inputs["trunk"] == f"results/trunks/{fid}/step{step}.ckpt"
            assert plan.trunk_segments[run] == inputs["trunk_info"]
    with pytest.raises(ValueError, match="not a branch point"):
        plan.trunk_start(next(iter(plan.families)), 1)
    assert json.loads(plan.suggest_spec())["cooldown"] == 0.25


def test_jobs_that_cannot_fit_this_machine_are_refused_before_any_runs(tmp_path):
    plan = plan_of(tmp_path, accelerator="gpu")
    run = plan.run_ids[0]
    jobs = [("train", SimpleNamespace(run=run))]
    with pytest.raises(ScalelabError, match=f"train.accelerator: {run} asks for a GPU"):
        plan.check_jobs_fit(jobs, memory_mb=1e9, gpu_here=False)
    plan.check_jobs_fit(jobs, memory_mb=1e9, gpu_here=True)
    with pytest.raises(ScalelabError, match=f"models.{plan.runs[run].model}: {run} needs about"):
        plan.check_jobs_fit(jobs, memory_mb=1, gpu_here=True)
    with pytest.raises(ScalelabError, match="data.source: tokenizing this corpus"):
        plan.check_jobs_fit([("tokenize", SimpleNamespace())], memory_mb=1, gpu_here=True)
    plan.check_jobs_fit([(None, SimpleNamespace())], memory_mb=1, gpu_here=False)  # aggregate, fit, ...


def test_a_finished_run_that_disagrees_with_the_config_is_stale(tmp_path):
    plan = plan_of(tmp_path, main_process=True)
    assert plan.stale == {} and plan.rebuild == []
    run = plan.run_ids[0]
    folder = tmp_path / "results" / "runs" / run
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"run": run, "spec_sha": "other", "code": plan.run_code(run)}))
    plan = plan_of(tmp_path, main_process=True)
    assert [p.removeprefix(str(tmp_path) + "/") for p in plan.stale] == [f"results/runs/{run}/metrics.json"]
    assert "trained with other settings" in plan.stale[str(folder / "metrics.json")]
    assert any("rerunning it" in line for line in plan.notices())
    assert plan_of(tmp_path, main_process=False).stale == {}  # a job's own Snakemake checks nothing


def test_a_damaged_run_stops_the_plan_with_one_line(tmp_path):
    run = plan_of(tmp_path).run_ids[0]
    folder = tmp_path / "results" / "runs" / run
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"run": "another-run"}))
    with pytest.raises(ScalelabError, match="damaged or belongs to another run"):
        plan_of(tmp_path, main_process=True)


def test_a_bad_config_is_one_error_naming_the_key(tmp_path):
    with pytest.raises(ScalelabError, match="train.cooldown"):
        plan_of(tmp_path, schedule="wsd", warmup_tokens=1024, cooldown=1.5)


def test_rule_roles_hold_under_a_module_prefix_and_cores_are_capped():
    assert rule_role(["results/runs/{run}/model.pt", "results/runs/{run}/metrics.json"]) == "train"
    assert rule_role(["studies/a/results/trunks/{family}/step{step}.ckpt"]) == "trunk"
    assert rule_role(["results/data/meta.json"]) == "tokenize"
    assert rule_role(["results/metrics.csv"]) is None
    assert capped_cores(2, 8) == 2 and capped_cores(64, 8) == 8 and capped_cores(None, 8) == 8
    assert wsd.is_wsd({"schedule": "wsd"})
