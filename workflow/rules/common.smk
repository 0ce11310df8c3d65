# Config loading and validation, the grid, and the helpers every rule uses.
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # the workflow's own scalelab, installed or not
# Jobs call the `scalelab` console script that sits beside this Python, activated venv or not.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

from scalelab import config as study
from scalelab import resources as job_resources
from scalelab.errors import ScalelabError
from scalelab.fingerprint import code_fingerprint
from scalelab.shapes import GPTConfig, flops_per_token, param_counts


# --configfile replaces the default study instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: str(Path(workflow.basedir) / "config" / "config.yaml")


try:
    study.validate(config)
    RUNS = {run.id: run for run in study.expand_grid(config)}
    study.source_files(config)  # a file glob that matches nothing fails now, before any job
    study.check_corpus_budget(config, RUNS.values(), "results/data/meta.json")
except ScalelabError as error:
    raise SystemExit(f"scalelab: error: {error}")

RUN_IDS = list(RUNS)
# Checks, not identity: neither is a param, so changing them reruns nothing by itself.
REQUIRED_TOKENS = 0 if config["data"]["allow_repeat"] else study.max_tokens(list(RUNS.values()))
ALLOW_REPEAT = "--allow-repeat" if config["data"]["allow_repeat"] else ""
DATA = "results/data"
DATA_FILES = [f"{DATA}/{name}" for name in ("tokenizer.json", "train.bin", "val.bin", "test.bin", "meta.json")]


def log_path(name):
    return f"logs/{name}.log"


def run_spec(wildcards):
    """The values that decide one run, as canonical JSON (a plain str, so params compare exactly)."""
    return RUNS[wildcards.run].spec_json


def _run_cost(run):
    return job_resources.run_cost(run.spec, config["data"]["tokenizer"]["vocab_size"])


# Cluster resources per job come from scalelab.resources (tested there); each rule's threads
# are its CPUs in all, and a train job's ranks (`devices`) share them equally.
def _train_resources(wildcards, threads=None):
    return job_resources.train_resources(RUNS[wildcards.run].spec, config["data"]["tokenizer"]["vocab_size"], threads)


def train_threads(wildcards):
    """One CPU thread per rank by default; a profile's set-threads raises it."""
    return _train_resources(wildcards).tasks


def train_gpus(wildcards):
    """GPUs to request: only for `accelerator: gpu` (`auto` uses a GPU when the node has one)."""
    return _train_resources(wildcards).gpus


def train_tasks(wildcards):
    """Ranks (processes), one per device: DDP when more than 1."""
    return _train_resources(wildcards).tasks


def train_cpus_per_task(wildcards, threads):
    return _train_resources(wildcards, threads).cpus_per_task


def train_launcher(wildcards, threads):
    """How a train job of several ranks starts them; "" for one rank, and on a workstation
    (Lightning then starts the ranks itself). Under Slurm it is also the executor's `mpi`
    resource: the job is submitted with --ntasks-per-node and its script runs the command
    without the executor's own `srun -n1`, so the command starts its ranks with this srun (the
    job step's environment carries no SLURM_NTASKS, hence the explicit counts)."""
    tasks = train_tasks(wildcards)
    submitting = getattr(workflow.executor_plugin, "name", "") == "slurm"
    in_slurm_job = workflow.remote_exec and "SLURM_JOB_ID" in os.environ  # the job's own Snakemake
    if tasks == 1 or not (submitting or in_slurm_job):
        return ""
    cpus = train_cpus_per_task(wildcards, threads)
    return f"srun --kill-on-bad-exit=1 --ntasks={tasks} --ntasks-per-node={tasks} --cpus-per-task={cpus}"


def train_runtime_min(wildcards, threads=None):
    """A generous wall-time limit for a cluster: FLOPs at a pessimistic rate, plus start-up."""
    return _train_resources(wildcards, threads).runtime


def train_mem_mb(wildcards):
    """Weights, grads and Adam moments (16 bytes a parameter) plus activations, with headroom."""
    return _train_resources(wildcards).mem_mb


def evaluate_gpus(wildcards):
    return job_resources.evaluate_resources(RUNS[wildcards.run].spec, config["data"]["tokenizer"]["vocab_size"]).gpus


def evaluate_mem_mb(wildcards):
    """Weights and one batch's activations and logits: no grads, no optimizer state."""
    return job_resources.evaluate_resources(RUNS[wildcards.run].spec, config["data"]["tokenizer"]["vocab_size"],
                                        config["eval"]["batch_size"]).mem_mb


def capped_cores(limit):
    """All local cores up to `limit`: never a submitting machine's core count on a cluster
    (where --cores may be unset, or larger than any node)."""
    try:
        return max(1, min(int(workflow.cores), limit))
    except Exception:  # a cluster executor without --cores
        return limit
