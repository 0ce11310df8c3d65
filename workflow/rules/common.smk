# Config loading and validation, the grid, and the helpers every rule uses.
import json
import os
import sys
from pathlib import Path

# The repository root, found from this file so that it is right when another workflow uses this
# one as a module (workflow.basedir is the *main* Snakefile's folder). For a remote module
# (github(...)) there is no local src/: the installed scalelab package is used.
ROOT = Path(workflow.current_basedir.get_path_or_uri(secret_free=False)).parents[1]
if (ROOT / "src" / "scalelab").is_dir():
    sys.path.insert(0, str(ROOT / "src"))  # the workflow's own scalelab, installed or not
# Jobs call the `scalelab` console script that sits beside this Python, activated venv or not.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

from scalelab import config as study
from scalelab.errors import ScalelabError
from scalelab.fingerprint import code_fingerprint
from scalelab.shapes import GPTConfig, flops_per_token, param_counts


# --configfile replaces the default study instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: str(ROOT / "config" / "config.yaml")


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
DATA = "results/data"  # shell commands spell it out: see below
# Shell commands use no globals of this file: Snakemake formats a module's shell commands with the
# *main* workflow's globals (snakemake/snakemake#2499), so `use rule * from scalelab` would fail.
# These two checks reach the shell as environment variables, not params, so that changing them
# reruns nothing (a cluster job re-reads this file, so it sets them too).
os.environ["SCALELAB_REQUIRED_TOKENS"] = str(REQUIRED_TOKENS)
os.environ["SCALELAB_ALLOW_REPEAT"] = ALLOW_REPEAT
DATA_FILES = [f"{DATA}/{name}" for name in ("tokenizer.json", "train.bin", "val.bin", "test.bin", "meta.json")]


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
