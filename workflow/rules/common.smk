# Config loading and validation, the grid, and the helpers every rule uses.
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

# The repository root, found from this file so that it is right when another workflow uses this
# one as a module (workflow.basedir is the *main* Snakefile's folder). For a remote module
# (github(...)) there is no local src/: the installed scalelab package is used.
ROOT = Path(workflow.current_basedir.get_path_or_uri(secret_free=False)).parents[1]
if (ROOT / "src" / "scalelab").is_dir():
    sys.path.insert(0, str(ROOT / "src"))  # the workflow's own scalelab, installed or not

from scalelab import loggers
from scalelab.data import corpus, corpus_check, stages
from scalelab.plan import cluster, grid, wsd
from scalelab.plan import integrity
from scalelab.config import load as config_file  # `config` is Snakemake's dict of settings
from scalelab.data.tokenize import OUTPUTS as DATA_OUTPUTS
from scalelab.plan import resources as job_resources
from scalelab.config.stage_settings import FitSettings
from scalelab.errors import ScalelabError
from scalelab.store.fingerprint import code_fingerprint
from scalelab.plan import grouping

STARTED = time.time()  # onsuccess prints only what this invocation produced
DEFAULT_CONFIG = ROOT / "config" / "config.yaml"

# --configfile replaces the default study instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: str(DEFAULT_CONFIG)


def check_submissions():
    """profiles/slurm's job groups and the executor's array jobs (scalelab.plan.grouping): refuse those
    that would put jobs needing different resources in one submission. Run at start (Snakemake
    sets these options only then), before any job, so nothing is lost; local runs ignore groups."""
    if workflow.local_exec or not workflow.is_main_process:
        return
    try:
        _check_submissions()
    except ScalelabError as error:
        sys.exit(f"scalelab: error: {error} (nothing was run)")


def _check_submissions():
    grouping.check_groups(workflow.group_settings.overwrite_groups,
                          {run.id: run.spec["devices"] for run in RUNS.values()})
    arrays = getattr(workflow.executor_settings, "array_jobs", None)
    if not grouping.array_rules(arrays):
        return
    vocab = config["data"]["tokenizer"]["vocab_size"]

    def kind(r):
        return (r.mem_mb, r.runtime, r.gpus, r.cpus)

    families = wsd.plan(RUNS.values(), config)
    resources = {
        "train": [kind(job_resources.train_resources(run.spec, vocab)) for run in RUNS.values()],
        "evaluate": [kind(job_resources.evaluate_resources(run.spec, vocab, config["eval"]["batch_size"]))
                     for run in RUNS.values()],
        "trunk": [kind(job_resources.train_resources(RUNS[run].spec, vocab))
                  for family in families.values() for run in family.branches.values()],
    }
    grouping.check_array_jobs(arrays, resources)


try:
    # Snakemake has read the YAML already, leniently: read it again to refuse duplicate keys and
    # non-UTF-8 text, which it lets through.
    for path in workflow.overwrite_configfiles or [DEFAULT_CONFIG]:
        config_file.read_yaml(path)
    config_file.validate(config)
    RUNS = {run.id: run for run in grid.expand_grid(config)}
    CORPUS_FILES = config_file.source_files(config)  # a file glob that matches nothing fails now, before any job
    if workflow.is_main_process:  # and a bad corpus file, before Snakemake deletes results/data for it
        corpus_check.check_files(config["data"], CORPUS_FILES)
    # "tokenize", "tokenize_chunked" (a text file over data.source.max_document_bytes) or "tokenize_stream"
    # (a large corpus; one tokenized in memory before keeps its stage): scalelab.data.stages
    TOKENIZE_STAGE = stages.tokenize_stage(config["data"], CORPUS_FILES, corpus.read_meta("results/data/meta.json"))
    TOKENIZE_CODE = code_fingerprint(TOKENIZE_STAGE)
    TOKENIZE_MEM_MB = job_resources.tokenize_mem_mb(stages.held_bytes(CORPUS_FILES, TOKENIZE_STAGE))
    corpus.check_corpus_budget(config, RUNS.values(), corpus.read_meta("results/data/meta.json"))
    loggers.check_available(loggers.logger_names(config))  # a missing tracker package: one line, now
    REBUILD, DAMAGED = integrity.scan(Path("results"), RUNS) if workflow.is_main_process else ([], [])
    if DAMAGED:
        raise ScalelabError(integrity.damage_message(DAMAGED))
except ScalelabError as error:
    raise SystemExit(f"scalelab: error: {error}")

for path in sorted({str(Path(p).parent) for p in REBUILD}):
    print(f"scalelab: {path}: outputs missing since the last run; rebuilding them", file=sys.stderr)

RUN_IDS = list(RUNS)
SWEEP_KEYS = grid.sweep_keys(RUNS.values())  # [] for a study without sweeps
DATA = "results/data"  # shell commands spell these paths out: see below
DATA_FILES = [f"{DATA}/{name}" for name in DATA_OUTPUTS]
# Shell commands use no globals of this file (Snakemake formats a module's shell commands with the
# *main* workflow's globals, snakemake/snakemake#2499): checks and logging, which are not a run's
# identity, reach them as SCALELAB_* environment variables, set here (not asked of the user, so no
# `envvars:`), and jobs find `scalelab` on PATH beside this Python.
cluster.export_job_environment(cluster.job_environment(config, RUNS.values()))


# WSD (train.schedule: wsd): each family's trunk and where its runs branch (scalelab.plan.wsd; checked
# by expand_grid already). A WSD run's code fingerprint adds the schedule's code; every other run
# keeps the plain train fingerprint.
FAMILIES = wsd.plan(RUNS.values(), config)
# WSD: run -> the info file of the trunk segment charged to it (the one ending at its branch point).
TRUNK_SEGMENTS = {run: f"results/trunks/{fid}/step{step}.json"
                  for fid, family in FAMILIES.items() for step, run in family.branches.items()}
TRAIN_CODE = code_fingerprint("train")
TRAIN_WSD_CODE = code_fingerprint("train_wsd")


from scalelab.store.runs import data_identity, spec_sha


def _data_identity():
    """The data identity of today's results/data, or None when it will be (re)tokenized."""

    meta = corpus.read_meta("results/data/meta.json")
    return data_identity(meta) if meta and meta.get("settings") == corpus.data_settings(config) else None


# Each finished run and trunk segment is checked against what the config asks for, from its own
# files (scalelab.plan.integrity): Snakemake's params and code triggers need .snakemake/, which a copied
# study or a removed .snakemake/ lacks and --touch masks. A disagreeing one is forced to rerun,
# and its job restores the matching run (or trunk state) from the store when it holds it.
STALE = {}  # output path -> why
if workflow.is_main_process:
    _data = _data_identity()
    STALE = dict(integrity.stale_runs(Path("results"), {
        run_id: {"spec_sha": spec_sha(run.spec), "code": TRAIN_WSD_CODE if wsd.is_wsd(run.spec) else TRAIN_CODE,
                 "data_fingerprint": _data} for run_id, run in RUNS.items()}))
    STALE.update(integrity.stale_trunks(Path("results"), FAMILIES, TRAIN_WSD_CODE, _data))
    _why = integrity.stale_data(corpus.read_meta("results/data/meta.json"), corpus.data_settings(config), CORPUS_FILES)
    if _why:
        STALE[f"{DATA}/meta.json"] = _why
    for path, why in STALE.items():
        print(f"scalelab: {path}: {why}; rerunning it (restored from the store when it holds this setting)",
              file=sys.stderr)


def tokenize_inputs(wildcards):
    """No input files (the corpus is the params' business): only forces the job when meta.json
    disagrees with the config or the corpus files (STALE)."""
    force_if_stale(f"{DATA}/meta.json")
    return []


def force_if_stale(path):
    """Force the job writing `path` when its file disagrees with the config (STALE). Called from
    the train and trunk rules' input functions, so it holds for whatever target is asked for:
    the DAG exists by then (--forcerun is read before the Snakefile is parsed, so it cannot be
    set here), and Snakemake decides which jobs must run only after every job is created."""
    if path in STALE:
        workflow.dag.forcefiles.add(path)


def run_code(wildcards):
    return TRAIN_WSD_CODE if wsd.is_wsd(RUNS[wildcards.run].spec) else TRAIN_CODE


def trunk_path(family, step):
    return f"results/trunks/{family}/step{step}.ckpt"


def branch_inputs(wildcards):
    """A WSD run's trunk checkpoint at its branch point (and its .json); nothing for other runs.
    (Also forces the run when its metrics.json disagrees with the config: force_if_stale.)"""
    force_if_stale(f"results/runs/{wildcards.run}/metrics.json")
    spec = RUNS[wildcards.run].spec
    if not wsd.is_wsd(spec):
        return {}
    ckpt = trunk_path(wsd.family_id(spec), wsd.branch_step(spec))
    return {"trunk": ckpt, "trunk_info": ckpt.removesuffix(".ckpt") + ".json"}


def _family(wildcards):
    family = FAMILIES.get(wildcards.family)
    if family is None or int(wildcards.step) not in family.branches:
        raise ValueError(f"results/trunks/{wildcards.family}/step{wildcards.step}: not a branch point of this study")
    return family


def trunk_family(wildcards):
    """What decides a trunk (the family's spec, canonical JSON; a plain str param)."""
    return json.dumps(_family(wildcards).spec, sort_keys=True)


def trunk_start(wildcards):
    """The previous branch point's checkpoint ('' for the first segment)."""
    previous = _family(wildcards).previous(int(wildcards.step))
    return trunk_path(wildcards.family, previous) if previous else ""


def trunk_inputs(wildcards):
    force_if_stale(trunk_path(wildcards.family, wildcards.step))
    start = trunk_start(wildcards)
    return {"start": start} if start else {}


def _trunk_run(wildcards):
    """A run of the family, standing in for it in the resource estimates (same shape and settings)."""
    return SimpleNamespace(run=_family(wildcards).branches[int(wildcards.step)])


def trunk_gpus(wildcards):
    return train_gpus(_trunk_run(wildcards))


def trunk_runtime_min(wildcards):
    return train_runtime_min(_trunk_run(wildcards))


def trunk_mem_mb(wildcards):
    return train_mem_mb(_trunk_run(wildcards))


def log_path(name):
    return f"logs/{name}.log"


def run_spec(wildcards):
    """The values that decide one run, as canonical JSON (a plain str, so params compare exactly)."""
    return RUNS[wildcards.run].spec_json


# Cluster resources per job come from scalelab.plan.resources (tested there); each rule's threads
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


# The role of each of this workflow's rules, by the file it writes: a module renames them (`use rule *
# from scalelab as scalelab_*`, or any other pattern) but keeps their outputs.
RULE_ROLES = {"results/runs/{run}/model.pt": "train", "results/trunks/{family}/step{step}.ckpt": "trunk",
              "results/data/meta.json": "tokenize"}


def rule_role(rule):
    """"train", "trunk", "tokenize" or None for a rule of this workflow, whatever a module named it
    (its output patterns carry their wildcard constraints, `{run,[^/]+}`: compared without them)."""
    from snakemake.io import strip_wildcard_constraints

    for path in (Path(strip_wildcard_constraints(str(f))) for f in rule.output):
        for pattern, role in RULE_ROLES.items():
            parts = Path(pattern).parts
            if path.parts[-len(parts):] == parts:  # a module may prefix its paths
                return role
    return None


def check_jobs_can_start():
    """Jobs executed on this machine must fit it: `accelerator: gpu` needs a GPU here, and a
    train (or tokenize) job's memory estimate must not exceed the machine's memory. Checked once the executor
    is known (a cluster's login node may have neither) and before any job, so no output is lost."""
    if not workflow.local_exec:
        return
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    for job in workflow.dag.needrun_jobs():
        role = rule_role(job.rule)
        if role == "tokenize" and TOKENIZE_MEM_MB > memory_mb:
            sys.exit(f"scalelab: error: data.source: tokenizing this corpus needs about {TOKENIZE_MEM_MB:,} MB, more "
                     f"than this machine's {memory_mb:,.0f} MB; tokenize on a larger machine or a cluster profile "
                     f"(nothing was run)")
        if role not in ("train", "trunk"):
            continue
        # a trunk job trains its family's shape with its settings: checked as one of its runs
        run = job.wildcards.run if role == "train" else _trunk_run(job.wildcards).run
        if RUNS[run].spec["accelerator"] == "gpu" and not cluster.gpu_here():
            sys.exit(f"scalelab: error: train.accelerator: {run} asks for a GPU but this machine has none; "
                     f"use accelerator: auto, or a cluster profile (nothing was run)")
        if train_mem_mb(SimpleNamespace(run=run)) > memory_mb:
            sys.exit(f"scalelab: error: models.{RUNS[run].model}: {run} needs about {train_mem_mb(SimpleNamespace(run=run)):,} MB "
                     f"to train, more than this machine's {memory_mb:,.0f} MB (nothing was run)")


def eval_spec(wildcards):
    """The eval settings as canonical JSON (a plain str param; parsed and checked once, in Python).
    A run trained on the CPU is evaluated on the CPU, whatever the machine has."""
    settings = dict(config["eval"])  # counts are ints already (config.validate parses them once)
    settings["device"] = "cpu" if RUNS[wildcards.run].spec["accelerator"] == "cpu" else "auto"
    return json.dumps(settings, sort_keys=True)


def fit_spec():
    """The fit settings as canonical JSON (counts are ints already; `scalelab fit` checks them again)."""
    f = config["fit"]
    spec = {"target": f["target"], "params": f["params"], "bootstrap": f["bootstrap"], "seed": f["seed"],
            "holdout": f["holdout"], "predict_flops": f["predict_flops"] or None,
            "budgets": config["grid"]["isoflop"]["budgets"] if config["grid"].get("isoflop") else None}
    # Sweeps: fit the best run of each (fit.select) and fit laws of the swept keys. Written only when
    # they say something, so that a study without sweeps keeps its fit params, and its fit, as they were.
    if SWEEP_KEYS or f["select"] != "best":
        spec.update(select=f["select"], sweep_keys=SWEEP_KEYS)
    # The law forms: likewise written only when they differ from the defaults (every form, auto).
    for key, default in (("forms", None), ("form", "auto"), ("allow_any_loss", False)):
        if f.get(key, default) != default:
            spec[key] = f[key]
    try:
        FitSettings.from_dict(spec, where="config fit")  # an unknown form, or form not in forms: one line now
    except ScalelabError as error:
        raise SystemExit(f"scalelab: error: {error}")
    return json.dumps(spec, sort_keys=True)


def suggest_spec():
    """`scalelab suggest --spec`: the config's fit.suggest keys, and what the workflow knows that a
    CSV does not (the shapes, the step, and under WSD the cooldown, which lets runs share trunks)."""
    train = config["train"]
    spec = {k: v for k, v in (config["fit"].get("suggest") or {}).items() if v not in (None, [])}
    spec.update(models=config["models"], tokens_per_step=train["batch_size"] * train["context"],
                allow_repeat=config["data"]["allow_repeat"])
    if train["schedule"] == "wsd":
        spec["cooldown"] = train["cooldown"]
    return json.dumps(spec, sort_keys=True)


def checked_onstart(outer_onstart):
    """The onstart of a workflow that uses this one as a module, with this workflow's job checks
    run first (Snakemake calls only the main Snakefile's onstart)."""

    def onstart(log):
        check_jobs_can_start()
        outer_onstart(log)

    return onstart
