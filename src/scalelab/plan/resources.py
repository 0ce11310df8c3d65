"""Cluster resources from a run's cost: what one `train` or `evaluate` job asks the scheduler for.

Imported by the Snakefile (workflow/rules/common.smk) at DAG-build time, so no torch here.
Every estimate is deliberately generous: a job that outgrows its memory or wall time is killed
by the scheduler and rerun from its last checkpoint, which costs far more than a little slack.

Memory is Slurm's `--mem`: host RAM for the whole job on its node, all ranks together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .shapes import GPTConfig, flops_per_token, param_counts

MB = 2**20
# Sustained training rates, pessimistic on purpose (a cluster's slowest node, small models,
# no tuning): a GPU at ~20 % of an A100's bf16 peak (a V100 at ~50 %); one CPU thread on a
# tiny model (measured: 3-6 GFLOP/s per thread on this project's CPU benchmarks).
GPU_FLOPS = 6e13
CPU_FLOPS_PER_THREAD = 2.5e9
SAFETY = 2  # the wall-time limit is this many times the estimate...
STARTUP_MIN = 10  # ...plus start-up: imports, data loading, a CUDA context, the last checkpoint
BASE_MB = 2048  # Python, torch and Lightning in one process
GPU_BASE_MB = 4096  # a CUDA context and pinned buffers on the host side


@dataclass(frozen=True)
class JobResources:
    runtime: int  # minutes (Snakemake's `runtime`, Slurm's --time)
    mem_mb: int  # host memory for the whole job (--mem)
    cpus_per_task: int  # CPU threads per rank (--cpus-per-task)
    gpus: int  # GPUs for the whole job (0 on a CPU run)
    tasks: int  # ranks: one process per device (DDP); 1 for a single device

    @property
    def cpus(self) -> int:
        return self.cpus_per_task * self.tasks

    def to_dict(self) -> dict:
        return {**asdict(self), "cpus": self.cpus}


def _shape(spec: dict, vocab_size: int) -> GPTConfig:
    return GPTConfig(
        vocab_size=vocab_size,
        context=spec["context"],
        n_layer=spec["n_layer"],
        d_model=spec["d_model"],
        n_head=spec["n_head"],
    )


def run_cost(spec: dict, vocab_size: int) -> tuple[int, float]:
    """(total parameters, training FLOPs) of one run, counting embeddings and attention."""
    shape = _shape(spec, vocab_size)
    _, params_total = param_counts(shape)
    _, flops_per_tok = flops_per_token(shape)
    return params_total, float(flops_per_tok) * spec["tokens"]


def requests_gpu(spec: dict) -> bool:
    """GPUs are requested only for `accelerator: gpu` (`auto` uses one only where the node has it)."""
    return spec["accelerator"] == "gpu"


def train_resources(spec: dict, vocab_size: int, threads: int | None = None) -> JobResources:
    """What one train job needs. `threads` is the job's CPU threads in all (the rule's threads,
    which a profile's set-threads may raise); each of the `devices` ranks gets an equal share.

    Memory per rank: fp32 weights, grads and two Adam moments (16 bytes a parameter), the
    activations of its share of the batch (about 40 floats per token, layer and channel, the
    attention maps included for these short contexts) and the logits with their gradient, all
    doubled for the allocator's fragmentation and a checkpoint being written; plus the runtime.
    """
    tasks = max(1, int(spec["devices"]))
    gpus = tasks if requests_gpu(spec) else 0
    cpus_per_task = max(1, int(threads or tasks) // tasks)
    params_total, flops = run_cost(spec, vocab_size)

    local_batch = max(1, spec["batch_size"] // tasks)
    tokens = local_batch * spec["context"]
    activations = 40 * tokens * spec["d_model"] * spec["n_layer"] * 4
    logits = 3 * tokens * vocab_size * 4
    if gpus:  # weights, optimizer and activations live on the GPU; the host stages a checkpoint
        per_rank = GPU_BASE_MB * MB + 12 * params_total * 2
    else:
        per_rank = BASE_MB * MB + (16 * params_total + activations + logits) * 2
    mem_mb = int(per_rank * tasks / MB)

    rate = GPU_FLOPS * gpus if gpus else CPU_FLOPS_PER_THREAD * cpus_per_task * tasks
    runtime = int(STARTUP_MIN + SAFETY * flops / rate / 60)
    return JobResources(runtime=runtime, mem_mb=mem_mb, cpus_per_task=cpus_per_task, gpus=gpus, tasks=tasks)


def evaluate_resources(spec: dict, vocab_size: int, eval_batch: int = 16) -> JobResources:
    """One evaluate job: a single process, the weights in fp32 and no optimizer state; the
    largest tensors are one batch's logits (softmax over the vocabulary) during the test pass.
    Its runtime is a few forward passes over the test split, far below training's."""
    params_total, _ = run_cost(spec, vocab_size)
    tokens = max(1, eval_batch) * spec["context"]
    activations = 12 * tokens * spec["d_model"] * spec["n_layer"] * 4
    logits = 3 * tokens * vocab_size * 4
    gpus = 1 if requests_gpu(spec) else 0
    if gpus:  # activations and logits live on the GPU; the host loads the weights once
        mem_mb = int((GPU_BASE_MB * MB + 4 * params_total * 2) / MB)
    else:
        mem_mb = int((BASE_MB * MB + (4 * params_total + activations + logits) * 2) / MB)
    return JobResources(runtime=30, mem_mb=mem_mb, cpus_per_task=1, gpus=gpus, tasks=1)


# Tokenize holds the corpus's documents and token ids in memory; a large text file is split into
# documents (scalelab.data.chunking) and encoded in bounded batches, so its peak grows with the corpus
# size, not with one file's. Measured (bench/tokenize_memory.py, docs/benchmarks.md): ~300 MB of
# imports and buffers plus a few MB per corpus MB; this allows ample margin for both.
TOKENIZE_MIN_MB = 8000
TOKENIZE_BASE_MB = 2000
TOKENIZE_MB_PER_CORPUS_MB = 10


def tokenize_mem_mb(corpus_bytes: int | None) -> int:
    """Host memory for the tokenize job (Slurm's --mem; None: the size is not known, a hub dataset)."""
    if not corpus_bytes:
        return TOKENIZE_MIN_MB
    return max(TOKENIZE_MIN_MB, int(TOKENIZE_BASE_MB + TOKENIZE_MB_PER_CORPUS_MB * corpus_bytes / 1e6))
