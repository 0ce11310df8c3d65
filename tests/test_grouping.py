"""scalelab.plan.grouping: job groups and array jobs that would mix resources are refused when the DAG
is built (unit tests here; the grouped submissions themselves run on Slurm in tests/test_slurm.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scalelab.plan import grouping
from scalelab.errors import ScalelabError

REPO = Path(__file__).resolve().parents[1]


def test_a_group_with_a_multi_rank_run_is_refused_naming_it():
    with pytest.raises(ScalelabError) as error:
        grouping.check_groups({"train": "family"}, {"a-8K-s0": 1, "b-8K-s0": 2})
    message = str(error.value)
    assert "b-8K-s0" in message and "2 ranks" in message and grouping.TURN_OFF in message and "\n" not in message


def test_groups_without_training_rules_or_multi_rank_runs_pass():
    grouping.check_groups({"train": "family", "trunk": "family"}, {"a": 1, "b": 1})
    grouping.check_groups({"none": "none"}, {"a": 4})  # the documented way to turn groups off
    grouping.check_groups({}, {"a": 4})


def test_rules_of_a_module_are_matched_by_role():
    assert grouping.role("scalelab_train", grouping.TRAINING_ROLES) == "train"
    assert grouping.role("trunk", grouping.TRAINING_ROLES) == "trunk"
    assert grouping.role("evaluate", grouping.TRAINING_ROLES) is None
    with pytest.raises(ScalelabError):
        grouping.check_groups({"scalelab_trunk": "family"}, {"a": 2})


def test_array_jobs_of_a_rule_with_different_resources_are_refused():
    resources = {"train": [(2048, 10, 0, 2), (4096, 20, 0, 2)], "evaluate": [(2048, 30, 0, 1)] * 2}
    grouping.check_array_jobs("evaluate", resources)  # one kind: an array is exact
    grouping.check_array_jobs(None, resources)
    for setting in ("train", "all", "evaluate;train", " train , evaluate", "scalelab_train"):
        with pytest.raises(ScalelabError, match=r"--slurm-array-jobs: the train jobs ask for 2 different"):
            grouping.check_array_jobs(setting, resources)


def test_the_slurm_profiles_group_the_three_rules_and_the_readme_says_how_to_turn_it_off():
    for name in ("slurm", "slurm-noacct"):
        profile = yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())
        assert profile["groups"] == ["trunk=family", "train=family", "evaluate=family"]
    readme = (REPO / "README.md").read_text()
    assert grouping.TURN_OFF in readme
