"""Fewer cluster submissions, checked at start (once Snakemake has its options), before any job.

profiles/slurm puts the trunk, train and evaluate rules in one Snakemake job group (`groups:`),
so a WSD family (its trunk segments, cooldowns and evaluations) is one `sbatch`, and a run of
another schedule (its train and evaluate jobs) is one. A group asks Slurm for the largest CPU
count of its jobs, the summed memory of the jobs that may run at once (in a family at most a
trunk segment, a cooldown and an evaluation), the GPUs of its jobs (a family shares one shape)
and the sum of the time limits: more than one job needs, never less. Grouping changes how jobs
are submitted, not which jobs run: staleness is decided per job, as before.

Two options would put jobs that need different resources in one submission, and are refused
here with one line instead (the workflow's onstart handler, so nothing is submitted or lost):
- a multi-rank run (`train.devices` > 1) in a group: its ranks start with `srun` from the job's
  own script (the `mpi` resource), which a group's single Snakemake process cannot do;
- `--slurm-array-jobs` for a rule whose jobs differ in resources: the executor submits the whole
  array with its first job's memory, time and GPUs (snakemake-executor-plugin-slurm 2.8).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from scalelab.errors import ScalelabError

TRAINING_ROLES = ("train", "trunk")
TURN_OFF = "--groups none=none"  # any --groups replaces the profile's list; `none` is no rule


def role(rule: str, roles: Iterable[str]) -> str | None:
    """The workflow rule a (possibly module-prefixed, `scalelab_train`) rule name stands for."""
    return next((r for r in roles if rule == r or rule.endswith("_" + r)), None)


def check_groups(groups: Mapping[str, str], devices_by_run: Mapping[str, int]) -> None:
    """Refuse a job group that would hold a multi-rank run."""
    if not any(role(rule, TRAINING_ROLES) for rule in groups):
        return
    multi = {run: devices for run, devices in devices_by_run.items() if devices > 1}
    if multi:
        run = sorted(multi)[0]
        raise ScalelabError(
            f"--groups: {run} trains on {multi[run]} ranks (train.devices), which start with srun and cannot share "
            f"a job group's submission; run this study with `{TURN_OFF}` (one submission per job)"
        )


def array_rules(setting: str | None) -> set[str]:
    """The rule names `--slurm-array-jobs` selects ('all' for every rule)."""
    if not setting:
        return set()
    return {name.strip() for name in setting.replace(";", ",").split(",") if name.strip()}


def check_array_jobs(setting: str | None, resources_by_rule: Mapping[str, Iterable[tuple]]) -> None:
    """Refuse array jobs for a rule whose jobs ask for different resources."""
    selected = {role(name, resources_by_rule) or name for name in array_rules(setting)}  # module-prefixed names too
    for rule, resources in resources_by_rule.items():
        if not ("all" in selected or rule in selected):
            continue
        kinds = sorted(set(resources))
        if len(kinds) > 1:
            raise ScalelabError(
                f"--slurm-array-jobs: the {rule} jobs ask for {len(kinds)} different sets of resources "
                f"(mem_mb, runtime, GPUs, CPUs: {kinds[0]} ... {kinds[-1]}), but an array is submitted with its first "
                f"job's; leave {rule} out of --slurm-array-jobs (profiles/slurm groups jobs instead)"
            )
