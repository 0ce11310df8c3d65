"""A run's plan (scalelab.train.plan), resolved once from its spec, says what the code that
trains and accounts for the run computes itself: the module's steps and warmup, the WSD branch
point and family, the FLOPs that metrics.json reports."""

from __future__ import annotations

import copy

import pytest

from scalelab.config import load as study_config
from scalelab.plan import grid, wsd
from scalelab.plan.shapes import GPTConfig, flops_per_token
from scalelab.train import build_module, build_wsd_module, plan_run, plan_trunk, total_steps

BASE = {
    "models": {"a": {"n_layer": 1, "d_model": 16, "n_head": 2}},
    "grid": {"models": ["a"], "tokens": ["4K", "10K"], "seeds": [0]},
    "train": {"context": 32, "batch_size": 8, "lr": 3.0e-3, "val_tokens": 512, "warmup_tokens": 0.1},
    "eval": {"prompt_tokens": 8, "max_new_tokens": 8},
}


def runs(schedule: str):
    config = copy.deepcopy(BASE)
    config["train"]["schedule"] = schedule
    if schedule == "wsd":
        config["train"]["warmup_tokens"] = 512
    return grid.expand_grid(study_config.validate(config))


@pytest.mark.parametrize("schedule", ["cosine", "linear", "wsd"])
def test_the_plan_is_what_the_module_and_the_metrics_compute(schedule):
    for run in runs(schedule):
        spec = run.spec
        shape = GPTConfig(
            vocab_size=300,
            context=spec["context"],
            n_layer=spec["n_layer"],
            d_model=spec["d_model"],
            n_head=spec["n_head"],
        )
        plan = plan_run(spec, shape)
        assert plan.steps == total_steps(spec["tokens"], spec["batch_size"], spec["context"])
        assert plan.tokens_per_step == spec["batch_size"] * spec["context"] and plan.tokens >= spec["tokens"]
        assert plan.flops == plan.tokens * flops_per_token(shape)[0]
        if schedule == "wsd":
            lit = build_wsd_module(shape, spec, plan.steps, plan.branch_step)
            assert (plan.family, plan.branch_step) == (wsd.family_id(spec), wsd.branch_step(spec))
            assert 0 < plan.warmup_steps < plan.branch_step < plan.steps
        else:
            lit = build_module(shape, spec, plan.steps)
            assert plan.family is None and plan.branch_step is None
        assert (lit.steps, lit.warmup_steps) == (plan.steps, plan.warmup_steps)


def test_a_trunk_segment_branches_at_its_own_end():
    spec = runs("wsd")[0].spec
    family = wsd.family_spec(spec)
    shape = GPTConfig(vocab_size=300, context=32, n_layer=1, d_model=16, n_head=2)
    plan = plan_trunk(family, 40, shape)
    assert (plan.steps, plan.branch_step, plan.family) == (40, 40, wsd.family_id(spec))
    assert (
        plan.warmup_steps
        == build_wsd_module(
            shape, {**family, "run": "t", "tokens": 40 * 256, "isoflop_budget": None}, 40, 40
        ).warmup_steps
    )
