"""scalelab.plan.resources: what a train or evaluate job asks a cluster for, from the run's cost."""

import pytest

from scalelab.plan import resources
from scalelab.plan.resources import evaluate_resources, run_cost, train_resources


def spec(**changes) -> dict:
    base = {
        "n_layer": 1,
        "d_model": 16,
        "n_head": 2,
        "context": 32,
        "batch_size": 8,
        "tokens": 8000,
        "accelerator": "cpu",
        "devices": 1,
    }
    base.update(changes)
    return base


# About 1.2B parameters in all: 24 layers of d_model 2048 (GPT-3 XL's shape), 50K vocabulary.
BILLION = spec(
    n_layer=24, d_model=2048, n_head=16, context=2048, batch_size=512, tokens=2 * 10**9, accelerator="gpu", devices=1
)


def test_a_tiny_cpu_run_asks_for_little():
    job = train_resources(spec(), vocab_size=300)
    assert job.gpus == 0 and job.tasks == 1 and job.cpus_per_task == 1
    assert 2048 <= job.mem_mb <= 2200  # the Python/torch base and a few MB of model
    assert resources.STARTUP_MIN <= job.runtime <= resources.STARTUP_MIN + 1


def test_a_billion_parameter_gpu_run_asks_for_sane_memory_and_time():
    params, flops = run_cost(BILLION, vocab_size=50257)
    assert 1.1e9 < params < 1.4e9
    job = train_resources(BILLION, vocab_size=50257, threads=8)
    assert job.gpus == 1 and job.tasks == 1 and job.cpus_per_task == 8
    # host RAM: a CUDA context plus a staged checkpoint, within any GPU node's memory
    assert 16_000 < job.mem_mb < 64_000
    # wall time: more than the run takes at an A100's full bf16 peak (21 h for 2B tokens), less
    # than a week (a common MaxTime), and under 10x what a V100 at 40 % of its peak would take
    ideal_min = flops / 312e12 / 60
    assert ideal_min < job.runtime < min(7 * 24 * 60, 10 * flops / (0.4 * 125e12) / 60)
    # DDP over 4 GPUs: four ranks, four GPUs, a quarter of the time, four times the host memory
    ddp = train_resources({**BILLION, "devices": 4}, vocab_size=50257, threads=16)
    assert (ddp.gpus, ddp.tasks, ddp.cpus_per_task, ddp.cpus) == (4, 4, 4, 16)
    assert ddp.runtime == pytest.approx(resources.STARTUP_MIN + (job.runtime - resources.STARTUP_MIN) / 4, abs=1)
    assert ddp.mem_mb == pytest.approx(4 * job.mem_mb, rel=0.01)


def test_cpu_ddp_shares_the_threads_and_the_batch():
    one = train_resources(spec(d_model=256, n_layer=4, batch_size=64, tokens=10**7), vocab_size=2048, threads=4)
    two = train_resources(
        spec(d_model=256, n_layer=4, batch_size=64, tokens=10**7, devices=2), vocab_size=2048, threads=4
    )
    assert (two.tasks, two.cpus_per_task, two.cpus, two.gpus) == (2, 2, 4, 0)
    assert two.runtime == one.runtime  # the same threads in all, the same FLOPs
    # each rank holds the whole model but only half the batch
    assert one.mem_mb < two.mem_mb < 2 * one.mem_mb
    assert train_resources(spec(devices=2), vocab_size=300).cpus_per_task == 1  # never 0 threads


def test_memory_and_time_grow_with_the_run():
    small = train_resources(spec(d_model=64, n_layer=2, tokens=10**6), vocab_size=2048)
    wide = train_resources(spec(d_model=512, n_layer=8, tokens=10**6), vocab_size=2048)
    long = train_resources(spec(d_model=64, n_layer=2, tokens=10**8), vocab_size=2048)
    assert wide.mem_mb > small.mem_mb and wide.runtime > small.runtime
    assert long.runtime > small.runtime and long.mem_mb == small.mem_mb


def test_evaluate_asks_for_less_than_training():
    for s, vocab in ((BILLION, 50257), (spec(d_model=512, n_layer=8, batch_size=64), 2048)):
        train, evaluate = train_resources(s, vocab), evaluate_resources(s, vocab, eval_batch=16)
        assert evaluate.mem_mb < train.mem_mb
        assert (evaluate.tasks, evaluate.gpus) == (1, 1 if s["accelerator"] == "gpu" else 0)
    # a 1B model's fp32 weights (about 5 GB) still fit, with the CUDA context
    assert 8_000 < evaluate_resources(BILLION, 50257).mem_mb < 24_000
    # a DDP run is evaluated by one process on one device
    assert evaluate_resources({**BILLION, "devices": 4}, 50257).gpus == 1
