"""One grid point across two processes (DDP over gloo on the CPU), against one process.

Both see the same global batch per step: StepBatches draws a step's windows from (seed, step)
and each rank keeps its slice, and DDP averages the two half-batch gradients, which is the
full-batch mean. So the runs compute the same thing; only the order of float additions differs
(the all-reduce sums two partial means), a relative 1e-7 per step in fp32. Measured: final val
losses within 5e-7 after 64 steps (tests/test_ddp.py runs 48 and 100). The tolerance, 1e-4,
leaves 200x headroom and is still 40x below what a wrong split gives (with Lightning's
DistributedSampler added on top, each rank skipped every other step: 4e-3 apart).

DDP runs go through `python -m scalelab train` in a subprocess: Lightning starts rank 1 by
re-running the command line, which must not be pytest's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from scalelab import train

from conftest import tiny_spec

pytestmark = pytest.mark.e2e
TOLERANCE = 1e-4


def command(spec: dict, data, out, threads: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "scalelab",
        "train",
        "--spec",
        json.dumps(spec),
        "--data",
        str(data),
        "--out",
        str(out),
        "--threads",
        str(threads),
    ]


def run_ddp(spec, data, out) -> dict:
    proc = subprocess.run(command(spec, data, out), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "srun" not in proc.stderr, "Lightning's srun warning leaked into a local run"
    assert "SLURM auto-requeueing" not in proc.stdout + proc.stderr
    return json.loads((out / "metrics.json").read_text())


def files(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_two_processes_match_one(tiny_data, tmp_path):
    spec = tiny_spec(tokens=8 * 32 * 48, checkpoint_every=0.25, val_evals=2)
    one = train.train_run(spec, tiny_data, tmp_path / "one", threads=2)
    two = run_ddp({**spec, "devices": 2}, tiny_data, tmp_path / "two")
    assert two["status"] == "ok" and two["devices"] == 2 and two["steps"] == one["steps"] == 48
    assert two["tokens"] == one["tokens"]
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=TOLERANCE)
    assert two["accelerator"] == "CPUAccelerator"
    # only rank 0 writes: the same files as a 1-process run, one metrics row per measurement
    assert files(tmp_path / "two") == files(tmp_path / "one")
    import pandas as pd

    curve = pd.read_csv(tmp_path / "two/curve.csv")
    assert curve["step"].is_unique and curve["step"].max() == 48


def test_killed_ddp_run_resumes(tiny_data, tmp_path):
    spec = tiny_spec(tokens=8 * 32 * 100, checkpoint_every=0.2, val_evals=2, devices=2)
    reference = train.train_run({**spec, "devices": 1}, tiny_data, tmp_path / "ref", threads=2)

    run_dir = tmp_path / "killed"
    # its own session, so the kill takes rank 0 and the rank it started
    proc = subprocess.Popen(
        command(spec, tiny_data, run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    ckpt = run_dir / "ckpt" / train.CKPT_NAME
    deadline = time.time() + 240
    step = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            step = torch.load(ckpt, weights_only=False)["global_step"] if ckpt.exists() else 0
        except Exception:  # caught mid-rename
            step = 0
        if step >= 20:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "metrics.json").exists()

    resumed = run_ddp(spec, tiny_data, run_dir)
    assert resumed["resumed_from_step"] is not None and resumed["resumed_from_step"] >= 20
    assert resumed["resumed_from_step"] % 20 == 0
    assert resumed["steps"] == reference["steps"] == 100 and resumed["status"] == "ok"
    assert resumed["val_loss"] == pytest.approx(reference["val_loss"], abs=TOLERANCE)
    assert not ckpt.exists()
