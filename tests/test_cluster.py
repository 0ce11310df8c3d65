"""scalelab.plan.cluster: which Lightning environment a train process gets, and who is rank 0."""

import pytest
from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

from scalelab.plan import cluster


@pytest.fixture(autouse=True)
def no_slurm(monkeypatch):
    import os

    for key in [k for k in os.environ if k.startswith("SLURM_")] + ["LOCAL_RANK", "NODE_RANK"]:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def slurm(monkeypatch, **env):
    base = {
        "SLURM_JOB_ID": "7",
        "SLURM_JOB_NAME": "0d6f-uuid",
        "SLURM_NTASKS": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "node1",
    }
    for key, value in {**base, **env}.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)


def test_outside_slurm_lightning_starts_the_ranks(no_slurm):
    for devices in (1, 2):
        assert isinstance(cluster.cluster_environment(devices), LightningEnvironment)
    assert cluster.is_launcher()
    no_slurm.setenv("LOCAL_RANK", "1")  # a rank Lightning started
    assert not cluster.is_launcher()


def test_inside_a_slurm_job_no_auto_requeue(no_slurm):
    slurm(no_slurm)  # one task, the batch step (a 1-device train job)
    env = cluster.cluster_environment(1)
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue is False
    assert cluster.is_launcher()


def test_srun_ranks(no_slurm):
    slurm(no_slurm, SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="2", SLURM_STEP_ID="0", SLURM_PROCID="1", SLURM_LOCALID="1")
    env = cluster.cluster_environment(2)
    assert isinstance(env, SLURMEnvironment) and not env.auto_requeue and env.global_rank() == 1
    assert not cluster.is_launcher()  # rank 1 of the step leaves the checkpoint folder alone
    no_slurm.setenv("SLURM_PROCID", "0")
    assert cluster.is_launcher()


def test_batch_step_of_a_multi_task_job_or_a_mismatch_is_not_slurm_ranks(no_slurm):
    slurm(no_slurm, SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="2")  # no SLURM_STEP_ID: not srun
    assert isinstance(cluster.cluster_environment(2), LightningEnvironment)
    slurm(no_slurm, SLURM_NTASKS="1", SLURM_STEP_ID="0")  # a 1-task step, but 2 devices asked
    assert isinstance(cluster.cluster_environment(2), LightningEnvironment)
    slurm(no_slurm, SLURM_JOB_NAME="interactive")
    assert isinstance(cluster.cluster_environment(1), LightningEnvironment)
