"""Where a train process runs: Lightning's cluster environment, chosen explicitly.

Snakemake owns every job's life cycle: it submits, cancels and reruns jobs, and a rerun resumes
from the run's checkpoint. So Lightning's own Slurm handling (auto-requeue on SIGUSR1, ignoring
SIGTERM) must stay off, and a machine where Slurm is merely installed must not be taken for a
Slurm job. Two launch modes exist:

- Lightning starts the ranks itself (`LightningEnvironment`): a local run, one device or DDP
  with `devices: N` (it re-executes the command once per extra rank, with LOCAL_RANK set);
- Slurm starts them (`SLURMEnvironment`): inside a job step (`srun`) with exactly `devices`
  tasks; the train rule prefixes `srun` when its job was given more than one task.

Kept out of the train package so that the train code fingerprint, and so every run's identity,
does not depend on how a run was launched. Also here: the environment every job's shell reads
(`job_environment`, set by the Snakefile with `export_job_environment`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..data.corpus import data_requirements
from ..loggers import logger_names


def slurm_ranks(devices: int) -> bool:
    """True when Slurm launched this process as one of exactly `devices` ranks of its job.

    A job step (`srun`) starts one process per task. The batch step of a job with several
    tasks (SLURM_PROCID set, no SLURM_STEP_ID) is a single process and does not count; with
    one task it is rank 0 of 1. An interactive allocation (job name bash/interactive) never does.
    """
    env = os.environ
    if "SLURM_JOB_ID" not in env or "SLURM_NTASKS" not in env or "SLURM_PROCID" not in env:
        return False
    if env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return False
    return int(env["SLURM_NTASKS"]) == devices and ("SLURM_STEP_ID" in env or devices == 1)


def cluster_environment(devices: int):
    """The Lightning plugin for this process: SLURMEnvironment without auto-requeue inside a
    Slurm step that holds all the ranks, LightningEnvironment everywhere else."""
    from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

    if slurm_ranks(devices):
        return SLURMEnvironment(auto_requeue=False)
    return LightningEnvironment()


def is_launcher() -> bool:
    """Whether this process is rank 0 of its run, before Lightning has set anything up: the
    one process that may prepare (and delete) the run's checkpoint folder."""
    env = os.environ
    if "SLURM_STEP_ID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return env.get("SLURM_PROCID", "0") == "0"
    return env.get("LOCAL_RANK", "0") == "0" and env.get("NODE_RANK", "0") == "0"


# Lightning warns about `srun` on any machine that has it, even when it is deliberately not used.
SRUN_WARNING = ".*The `srun` command is available on your system but is not used.*"


def gpu_here() -> bool:
    """Whether this machine has an NVIDIA GPU, without importing torch (DAG-build time is dry-run time)."""
    return os.path.exists("/dev/nvidiactl") or any(Path("/dev").glob("nvidia[0-9]*"))


def export_job_environment(values: dict[str, str]) -> None:
    """Set what every job's shell reads: `values` (SCALELAB_* settings that are checks, not a run's
    identity, so not params) and PATH with this Python's scripts first, so jobs call the `scalelab`
    beside the Python that runs Snakemake, activated venv or not. A cluster job re-reads the
    Snakefile, so it sets them again itself."""
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    os.environ.update(values)


def job_environment(config: dict, runs) -> dict[str, str]:
    """What the workflow's shell commands read from the environment rather than from params: checks
    and logging, which decide nothing about a run, so changing them reruns nothing. (Shell commands
    cannot read a Snakefile's globals when the workflow is used as a module, snakemake#2499.)"""
    return {
        "SCALELAB_REQUIRE": json.dumps(data_requirements(runs, config["data"]["allow_repeat"])),
        "SCALELAB_ALLOW_REPEAT": "--allow-repeat" if config["data"]["allow_repeat"] else "",
        "SCALELAB_LOGGERS": ",".join(logger_names(config)),
        "SCALELAB_STUDY": config["report"]["title"],  # the MLflow experiment, a tag of every run
    }
