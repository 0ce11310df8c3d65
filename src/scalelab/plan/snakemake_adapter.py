"""The one place that touches Snakemake's internals: `workflow.dag`, its jobs and `_onstart`.

The Snakefile hands its `workflow` object here; a Snakemake release that renames one of these
attributes breaks this module alone (tests/test_workflow.py runs it on real studies).
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import ScalelabError
from . import cluster, grouping
from .workflow import StudyPlan, rule_role


def force(workflow, path: str) -> None:
    """Force the job writing `path`. Called from input functions, when the DAG exists (--forcerun is
    read before the Snakefile is parsed, so it cannot be set there), and before Snakemake decides
    which jobs must run (only after every job is created)."""
    workflow.dag.forcefiles.add(path)


def jobs_to_run(workflow) -> list[tuple[str | None, object]]:
    """(role, wildcards) of every job this invocation will run."""
    from snakemake.io import strip_wildcard_constraints

    return [
        (rule_role([strip_wildcard_constraints(str(f)) for f in job.rule.output]), job.wildcards)
        for job in workflow.dag.needrun_jobs()
    ]


def check_jobs_can_start(workflow, plan: StudyPlan) -> None:
    """Jobs executed on this machine must fit it (StudyPlan.check_jobs_fit). Checked once the executor
    is known (a cluster's login node may have neither a GPU nor the memory) and before any job."""
    if not workflow.local_exec:
        return
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    plan.check_jobs_fit(jobs_to_run(workflow), memory_mb, cluster.gpu_here())


def check_submissions(workflow, plan: StudyPlan) -> None:
    """profiles/slurm's job groups and the executor's array jobs (scalelab.plan.grouping): refuse those
    that would put jobs needing different resources in one submission. Run at start (Snakemake
    sets these options only then), before any job, so nothing is lost; local runs ignore groups."""
    if workflow.local_exec or not workflow.is_main_process:
        return
    grouping.check_groups(
        workflow.group_settings.overwrite_groups, {run.id: run.spec["devices"] for run in plan.runs.values()}
    )
    arrays = getattr(workflow.executor_settings, "array_jobs", None)
    if grouping.array_rules(arrays):
        grouping.check_array_jobs(arrays, plan.submission_resources())


def under_slurm(workflow) -> bool:
    """Whether a job's ranks are started by srun: submitted by the Slurm executor, or this is the
    job's own Snakemake inside a Slurm job."""
    submitting = getattr(workflow.executor_plugin, "name", "") == "slurm"
    in_slurm_job = workflow.remote_exec and "SLURM_JOB_ID" in os.environ
    return bool(submitting or in_slurm_job)


def chain_onstart(workflow, checks) -> None:
    """Snakemake registers only the main Snakefile's onstart: as a module (`use rule * from scalelab
    as scalelab_*`), run `checks()` before whatever onstart the other workflow has set by now."""
    if workflow.modifier.is_main_snakefile():
        return
    outer = workflow._onstart

    def onstart(log):
        checks()
        outer(log)

    workflow._onstart = onstart


def exit_on_error(check, *args, suffix: str = ""):
    """Run a check (or build something); its ScalelabError ends Snakemake with one line."""
    try:
        return check(*args)
    except ScalelabError as error:
        raise SystemExit(f"scalelab: error: {error}{suffix}") from None


def cores(workflow):
    """`--cores`, or None where it is unset: a cluster executor without --cores, where Snakemake
    raises on the attribute itself (a rule's threads then come from its own limit)."""
    try:
        return workflow.cores
    except Exception:
        return None


# What snakemake-executor-plugin-slurm logs for each job (or job group) it submits.
SLURM_SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+)")


def cancel_left_slurm_jobs(log) -> list[str]:
    """Cancel the Slurm jobs this invocation submitted (read from its log: a path, or Snakemake's list of
    them) that Slurm still holds; returns their ids. For onerror, after Snakemake stopped: on SIGINT the
    Slurm plugin (2.8) cancels only the jobs its status thread holds at that moment, so a job submitted
    while a status check ran was left to run on (CI: two evaluate jobs submitted seconds before SIGINT ran
    to completion). After a job fails, Snakemake has waited for the others: nothing is left to cancel."""
    paths = [log] if isinstance(log, (str, os.PathLike)) else list(log or [])
    submitted = set()
    for path in paths:
        try:
            submitted |= set(SLURM_SUBMITTED.findall(Path(path).read_text(errors="replace")))
        except OSError:  # no log file (a log-less invocation)
            continue
    if not submitted or shutil.which("squeue") is None or shutil.which("scancel") is None:
        return []
    try:
        queued = subprocess.run(
            ["squeue", "-h", "-o", "%i", "-u", getpass.getuser()], capture_output=True, text=True, timeout=60
        ).stdout.split()
        left = sorted(set(queued) & submitted, key=int)
        if left:
            subprocess.run(["scancel", *left], capture_output=True, timeout=60)
            print(
                f"scalelab: cancelled the Slurm jobs this run submitted and left queued: {' '.join(left)}",
                file=sys.stderr,
            )
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"scalelab: could not check for Slurm jobs this run left queued ({exc})", file=sys.stderr)
        return []
    return left
