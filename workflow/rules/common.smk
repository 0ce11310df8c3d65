# Config loading and validation, the grid, and the helpers every rule uses.
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # the workflow's own scalelab, installed or not
# Jobs call the `scalelab` console script that sits beside this Python, activated venv or not.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

from scalelab import config as study
from scalelab import integrity
from scalelab.data import OUTPUTS as DATA_OUTPUTS
from scalelab.errors import ScalelabError
from scalelab.fingerprint import code_fingerprint
from scalelab.shapes import GPTConfig, flops_per_token, param_counts

STARTED = time.time()  # onsuccess prints only what this invocation produced
DEFAULT_CONFIG = Path(workflow.basedir) / "config" / "config.yaml"

# --configfile replaces the default study instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: str(DEFAULT_CONFIG)


def _gpu_here():
    """Whether this machine has an NVIDIA GPU, without importing torch (parse time is dry-run time)."""
    return os.path.exists("/dev/nvidiactl") or any(Path("/dev").glob("nvidia[0-9]*"))


try:
    # Snakemake has read the YAML already, leniently: read it again to refuse duplicate keys and
    # non-UTF-8 text, which it lets through.
    for path in workflow.overwrite_configfiles or [DEFAULT_CONFIG]:
        study.read_yaml(path)
    study.validate(config)
    RUNS = {run.id: run for run in study.expand_grid(config)}
    study.source_files(config)  # a file glob that matches nothing fails now, before any job
    study.check_corpus_budget(config, RUNS.values(), study.read_meta("results/data/meta.json"))
    REBUILD, DAMAGED = integrity.scan(Path("results"), RUNS) if workflow.is_main_process else ([], [])
    if DAMAGED:
        raise ScalelabError(integrity.damage_message(DAMAGED))
except ScalelabError as error:
    raise SystemExit(f"scalelab: error: {error}")

for path in sorted({str(Path(p).parent) for p in REBUILD}):
    print(f"scalelab: {path}: outputs missing since the last run; rebuilding them", file=sys.stderr)

RUN_IDS = list(RUNS)
SWEEP_KEYS = study.sweep_keys(RUNS.values())  # [] for a study without sweeps
DATA = "results/data"
DATA_FILES = [f"{DATA}/{name}" for name in DATA_OUTPUTS]
STORE = "results/store"  # finished runs by spec + code (scalelab.store): a rerun restores, never retrains
# Checks, not identity: neither is a param, so changing them reruns nothing by itself.
REQUIRE = json.dumps(study.data_requirements(RUNS.values(), config["data"]["allow_repeat"]))
ALLOW_REPEAT = "--allow-repeat" if config["data"]["allow_repeat"] else ""


def log_path(name):
    return f"logs/{name}.log"


def run_spec(wildcards):
    """The values that decide one run, as canonical JSON (a plain str, so params compare exactly)."""
    return RUNS[wildcards.run].spec_json


def _run_cost(run):
    spec = run.spec
    shape = GPTConfig(vocab_size=config["data"]["tokenizer"]["vocab_size"], context=spec["context"],
                      n_layer=spec["n_layer"], d_model=spec["d_model"], n_head=spec["n_head"])
    _, params_total = param_counts(shape)
    _, flops_per_tok = flops_per_token(shape)
    return params_total, flops_per_tok * run.tokens


def train_gpus(wildcards):
    """GPUs to request: only for `accelerator: gpu` (`auto` uses a GPU when the node has one)."""
    spec = RUNS[wildcards.run].spec
    return spec["devices"] if spec["accelerator"] == "gpu" else 0


def train_runtime_min(wildcards):
    """A generous wall-time limit for a cluster: FLOPs at a pessimistic rate, plus start-up."""
    _, flops = _run_cost(RUNS[wildcards.run])
    rate = 2e13 * train_gpus(wildcards) if train_gpus(wildcards) else 5e9  # FLOP/s
    return int(10 + 3 * flops / rate / 60)


def train_mem_mb(wildcards):
    """Weights, grads and Adam moments (16 bytes a parameter) plus activations, with headroom."""
    params_total, _ = _run_cost(RUNS[wildcards.run])
    spec = RUNS[wildcards.run].spec
    activations = 40 * spec["batch_size"] * spec["context"] * spec["d_model"] * spec["n_layer"] * 4
    logits = 3 * spec["batch_size"] * spec["context"] * config["data"]["tokenizer"]["vocab_size"] * 4
    return int(2048 + (16 * params_total + activations + logits) * 2 / 2**20)


def check_jobs_can_start():
    """Jobs executed on this machine must fit it: `accelerator: gpu` needs a GPU here, and a
    train job's memory estimate must not exceed the machine's memory. Checked once the executor
    is known (a cluster's login node may have neither) and before any job, so no output is lost."""
    if not workflow.local_exec:
        return
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    for job in workflow.dag.needrun_jobs():
        if job.rule.name != "train":
            continue
        run = job.wildcards.run
        if RUNS[run].spec["accelerator"] == "gpu" and not _gpu_here():
            sys.exit(f"scalelab: error: train.accelerator: {run} asks for a GPU but this machine has none; "
                     f"use accelerator: auto, or a cluster profile (nothing was run)")
        if train_mem_mb(job.wildcards) > memory_mb:
            sys.exit(f"scalelab: error: models.{RUNS[run].model}: {run} needs about {train_mem_mb(job.wildcards):,} MB "
                     f"to train, more than this machine's {memory_mb:,.0f} MB (nothing was run)")
