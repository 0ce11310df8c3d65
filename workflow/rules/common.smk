# The study's plan (scalelab.plan.workflow.StudyPlan, built once per invocation) and the lookups
# the rules make into it. The logic lives in Python, with its unit tests; Snakemake's internals
# are touched only through scalelab.plan.snakemake_adapter.
import json
import os
import shlex
import sys
import time
from pathlib import Path

# The repository root, found from this file so that it is right when another workflow uses this
# one as a module (workflow.basedir is the *main* Snakefile's folder). For a remote module
# (github(...)) there is no local src/: the installed scalelab package is used.
ROOT = Path(workflow.current_basedir.get_path_or_uri(secret_free=False)).parents[1]
if (ROOT / "src" / "scalelab").is_dir():
    sys.path.insert(0, str(ROOT / "src"))  # the workflow's own scalelab, installed or not

from scalelab import loggers
from scalelab.data import corpus
from scalelab.data.tokenize import OUTPUTS as DATA_OUTPUTS
from scalelab.plan import cluster
from scalelab.plan import snakemake_adapter as adapter
from scalelab.plan.workflow import DATA, StudyPlan, capped_cores as _capped_cores, trunk_path
from scalelab.store.fingerprint import code_fingerprint
from scalelab.config.extra_metrics import extra_columns

STARTED = time.time()  # onsuccess prints only what this invocation produced


def print_quarantined(since):
    """Store entries this invocation's jobs quarantined: said at the end, not only in a job's log."""
    from scalelab.plan.integrity import quarantined_since

    for line in quarantined_since(Path("results"), since):
        print(line, file=sys.stderr)

DEFAULT_CONFIG = ROOT / "config" / "config.yaml"

# --configfile replaces the default study instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: str(DEFAULT_CONFIG)


PLAN = adapter.exit_on_error(StudyPlan.build, config, workflow.overwrite_configfiles or [DEFAULT_CONFIG],
                             workflow.is_main_process)
for line in PLAN.notices():
    print(line, file=sys.stderr)

RUNS = PLAN.runs
RUN_IDS = PLAN.run_ids  # the runs trained (grid.trained_cooldowns leaves some out)
PREDICTED = PLAN.predicted_ids  # the runs whose endpoint the curve law predicts ([] unless the config asks)
ENDPOINTS = "results/curves/endpoints.csv"  # metrics.csv and the predicted runs' rows (rules/curves.smk)
FIT_TABLE = ENDPOINTS if PREDICTED else "results/metrics.csv"  # what the fit and the report read
SWEEP_KEYS = PLAN.sweep_keys  # [] for a study without sweeps
REBUILD = PLAN.rebuild  # outputs of finished runs deleted since: exactly those runs are rebuilt
STALE = PLAN.stale  # output path -> why it disagrees with the config: its job is forced
FAMILIES = PLAN.families  # WSD (train.schedule: wsd): each family's trunk and where its runs branch
TRUNK_SEGMENTS = PLAN.trunk_segments
TOKENIZE_CODE = PLAN.tokenize_code
TOKENIZE_MEM_MB = PLAN.tokenize_mem_mb
TRAIN_WSD_CODE = PLAN.train_wsd_code
DATA_FILES = [f"{DATA}/{name}" for name in DATA_OUTPUTS]
# Shell commands use no globals of this file (Snakemake formats a module's shell commands with the
# *main* workflow's globals, snakemake/snakemake#2499): checks and logging, which are not a run's
# identity, reach them as SCALELAB_* environment variables, set here (not asked of the user, so no
# `envvars:`), and jobs find `scalelab` on PATH beside this Python.
cluster.export_job_environment(PLAN.job_environment())


def force_if_stale(path):
    """Force the job writing `path` when its file disagrees with the config (STALE). Called from
    the tokenize, train and trunk rules' input functions, so it holds for whatever target is asked for."""
    if path in STALE:
        adapter.force(workflow, path)


def forced_by(pattern):
    """An input function that adds no file and forces the job writing `pattern` (formatted with
    the job's wildcards) when that file disagrees with the config or code (STALE)."""
    return lambda wildcards: force_if_stale(pattern.format(**wildcards)) or []


def tokenize_inputs(wildcards):
    """No input files (the corpus is the params' business): only forces the job when stale."""
    force_if_stale(f"{DATA}/meta.json")
    return []


def branch_inputs(wildcards):
    """A WSD run's trunk checkpoint at its branch point (and its .json); nothing for other runs."""
    force_if_stale(f"results/runs/{wildcards.run}/metrics.json")
    return PLAN.branch_inputs(wildcards.run)


def trunk_inputs(wildcards):
    force_if_stale(trunk_path(wildcards.family, wildcards.step))
    start = PLAN.trunk_start(wildcards.family, wildcards.step)
    return {"start": start} if start else {}


def log_path(name):
    return f"logs/{name}.log"


def capped_cores(limit):
    return _capped_cores(adapter.cores(workflow), limit)


# Lookups: params are plain str, byte for byte as StudyPlan gives them; resources come from
# scalelab.plan.resources (tested there), a trunk's as one of its family's runs. Snakemake passes
# `threads` to those that name it; a train job's ranks (`devices`) share its threads equally.
run_spec = lambda wildcards: PLAN.run_spec(wildcards.run)
run_code = lambda wildcards: PLAN.run_code(wildcards.run)
eval_spec = lambda wildcards: PLAN.eval_spec(wildcards.run)
trunk_family = lambda wildcards: PLAN.trunk_family(wildcards.family, wildcards.step)
trunk_start = lambda wildcards: PLAN.trunk_start(wildcards.family, wildcards.step)
train_threads = lambda wildcards: PLAN.train_resources(wildcards.run).tasks  # a profile's set-threads raises it
train_gpus = lambda wildcards: PLAN.train_resources(wildcards.run).gpus
train_tasks = lambda wildcards: PLAN.train_resources(wildcards.run).tasks
train_cpus_per_task = lambda wildcards, threads: PLAN.train_resources(wildcards.run, threads).cpus_per_task
train_runtime_min = lambda wildcards, threads=None: PLAN.train_resources(wildcards.run, threads).runtime
train_mem_mb = lambda wildcards: PLAN.train_resources(wildcards.run).mem_mb
# "" for one rank or off Slurm; else the srun that starts the ranks (also the `mpi` resource)
train_launcher = lambda wildcards, threads: PLAN.train_launcher(wildcards.run, threads, adapter.under_slurm(workflow))
trunk_resources = lambda wildcards: PLAN.train_resources(PLAN.trunk_run(wildcards.family, wildcards.step))
trunk_gpus = lambda wildcards: trunk_resources(wildcards).gpus
trunk_runtime_min = lambda wildcards: trunk_resources(wildcards).runtime
trunk_mem_mb = lambda wildcards: trunk_resources(wildcards).mem_mb
evaluate_gpus = lambda wildcards: PLAN.evaluate_resources(wildcards.run, with_batch=False).gpus
evaluate_mem_mb = lambda wildcards: PLAN.evaluate_resources(wildcards.run).mem_mb


def fit_spec():
    return PLAN.fit_spec()


def suggest_spec():
    return PLAN.suggest_spec()


def check_jobs_can_start():
    adapter.exit_on_error(adapter.check_jobs_can_start, workflow, PLAN)


def check_submissions():
    adapter.exit_on_error(adapter.check_submissions, workflow, PLAN, suffix=" (nothing was run)")
