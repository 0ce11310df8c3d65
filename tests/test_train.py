import json
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from scalelab import train
from scalelab.errors import ScalelabError

from conftest import tiny_spec


def test_exact_step_count_and_schedule():
    assert train.total_steps(8192, 8, 32) == 32
    assert train.total_steps(8193, 8, 32) == 33
    factors = [train.lr_factor(s, 100, 10, "cosine", 0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert train.lr_factor(50, 100, 0, "linear", 0.0) == pytest.approx(0.5)
    assert train.lr_factor(99, 100, 0, "constant", 0.1) == 1.0
    assert train.warmup_steps_for(tiny_spec(warmup_tokens=0.25), 32) == 8
    assert train.warmup_steps_for(tiny_spec(warmup_tokens=512), 32) == 2


def test_step_batches_are_seeded_windows(tiny_data):
    meta = json.loads((tiny_data / "meta.json").read_text())
    tokens = np.memmap(tiny_data / "train.bin", dtype=meta["dtype"], mode="r")
    full = train.StepBatches(tiny_data / "train.bin", meta["dtype"], 32, 8, seed=0, first_step=0, last_step=10)
    later = train.StepBatches(tiny_data / "train.bin", meta["dtype"], 32, 8, seed=0, first_step=4, last_step=10)
    other = train.StepBatches(tiny_data / "train.bin", meta["dtype"], 32, 8, seed=1, first_step=0, last_step=10)
    x, y = full[5]
    assert x.shape == y.shape == (8, 32) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    assert torch.equal(later[1][0], x)  # a batch depends on its step only: resumable
    assert not torch.equal(other[5][0], x)
    row = x[0].numpy()  # every row is a real window of the memmap
    starts = np.flatnonzero(np.asarray(tokens[:-32]) == row[0])
    assert any((np.asarray(tokens[s : s + 32]) == row).all() for s in starts)
    half = train.StepBatches(tiny_data / "train.bin", meta["dtype"], 32, 8, 0, 0, 10, rank=1, world=2)
    assert torch.equal(half[5][0], x[1::2])


def test_train_run_writes_outputs(tiny_data, tmp_path, capsys):
    spec = tiny_spec()
    metrics = train.train_run(spec, tiny_data, tmp_path / "run", threads=1)
    assert metrics["status"] == "ok" and metrics["steps"] == 32
    # progress in the job's log: every 5 % of the run (or 30 s), with tokens/s and the time left
    progress = [line for line in capsys.readouterr().out.splitlines() if " ETA " in line]
    assert 2 <= len(progress) <= 21 and progress[-1].startswith(f"{spec['run']}: step 32/32 (100 %), 8,192 tokens")
    assert all(" tokens/s, ETA " in line and ", loss " in line for line in progress)
    assert metrics["tokens"] == 32 * 8 * 32 and metrics["tokens_requested"] == 8192
    assert math.isfinite(metrics["val_loss"]) and metrics["val_loss"] < math.log(300)
    on_disk = json.loads((tmp_path / "run/metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    for key in (
        "run",
        "model",
        "n_layer",
        "d_model",
        "n_head",
        "params",
        "params_total",
        "tokens",
        "flops",
        "seed",
        "train_loss",
        "val_loss",
        "wall_s",
        "tokens_per_s",
        "status",
        "resumed_from_step",
        "torch_version",
        "lightning_version",
    ):
        assert key in on_disk
    curve = pd.read_csv(tmp_path / "run/curve.csv")
    assert list(curve.columns) == ["step", "tokens", "flops", "lr", "train_loss", "val_loss"]
    assert curve["step"].is_monotonic_increasing and curve["val_loss"].notna().sum() >= 2
    assert curve["val_loss"].dropna().iloc[-1] == pytest.approx(metrics["val_loss"])
    assert curve["step"].max() == 32
    saved = torch.load(tmp_path / "run/model.pt", weights_only=True)
    assert saved["run"] == spec["run"] and saved["config"]["d_model"] == 16
    assert not (tmp_path / "run/ckpt/last.ckpt").exists()  # resume state removed once done


def test_divergence_is_recorded_not_raised(tiny_data, tmp_path):
    metrics = train.train_run(tiny_spec(lr=1e6, grad_clip=0.0, warmup_tokens=0.0), tiny_data, tmp_path / "run", 1)
    assert metrics["status"] == "diverged"
    assert metrics["val_loss"] is None and metrics["diverged_at_step"] < 32
    assert json.loads((tmp_path / "run/metrics.json").read_text())["status"] == "diverged"


def test_too_many_tokens_without_repeat(tiny_data, tmp_path):
    with pytest.raises(ScalelabError, match="allow_repeat"):
        train.train_run(tiny_spec(tokens=10**8), tiny_data, tmp_path / "run", 1)
    train_tokens = json.loads((tiny_data / "meta.json").read_text())["splits"]["train"]["tokens"]
    metrics = train.train_run(
        tiny_spec(tokens=2 * train_tokens, checkpoint_every=1.0), tiny_data, tmp_path / "repeat", 1, allow_repeat=True
    )
    assert metrics["status"] == "ok" and metrics["tokens"] >= 2 * train_tokens


@pytest.fixture(scope="module")
def long_reference(tiny_data, tmp_path_factory):
    spec = tiny_spec(tokens=8 * 32 * 200, checkpoint_every=0.1, val_evals=2)
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    return spec, train.train_run(spec, tiny_data, run_dir, threads=1), run_dir


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_to_the_same_loss_and_curve(tiny_data, tmp_path, long_reference, sig):
    """A kill (or Ctrl-C) and a resume give the uninterrupted run's loss and its whole curve."""
    spec, reference, reference_dir = long_reference

    run_dir = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "scalelab",
        "train",
        "--spec",
        json.dumps(spec),
        "--data",
        str(tiny_data),
        "--out",
        str(run_dir),
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run_dir / "ckpt" / train.CKPT_NAME
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=False)["global_step"] >= 60:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert not (run_dir / "metrics.json").exists()

    resumed = train.train_run(spec, tiny_data, run_dir, threads=1)
    assert resumed["resumed_from_step"] is not None and resumed["resumed_from_step"] >= 60
    assert resumed["resumed_from_step"] % 20 == 0  # an end-of-interval checkpoint: at most one interval lost
    assert resumed["steps"] == reference["steps"] == 200
    assert resumed["val_loss"] == pytest.approx(reference["val_loss"], abs=1e-5)
    assert resumed["train_loss"] == pytest.approx(reference["train_loss"], abs=1e-5)
    curve, expected = pd.read_csv(run_dir / "curve.csv"), pd.read_csv(reference_dir / "curve.csv")
    assert len(curve) == len(expected) and list(curve["step"]) == list(expected["step"])
    for column in ("lr", "train_loss", "val_loss"):
        assert np.allclose(curve[column], expected[column], atol=1e-5, equal_nan=True), column
    assert curve.dropna(subset=["train_loss"])["lr"].notna().all()  # lr is filled on every train row


def test_planted_checkpoint_pickle_never_runs(tiny_data, tmp_path):
    """A last.ckpt whose pickle would run a command is refused (weights_only), and the run starts over."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    run_dir = tmp_path / "run"
    (run_dir / "ckpt").mkdir(parents=True)
    spec = tiny_spec()
    (run_dir / "ckpt" / "spec.json").write_text(json.dumps(spec, indent=1, sort_keys=True))
    torch.save({"global_step": 5, "payload": Exploit()}, run_dir / "ckpt" / train.CKPT_NAME)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scalelab",
            "train",
            "--spec",
            json.dumps(spec),
            "--data",
            str(tiny_data),
            "--out",
            str(run_dir),
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists()
    assert "not a usable checkpoint" in proc.stdout and proc.stdout.count("not a usable checkpoint") == 1
    assert json.loads((run_dir / "metrics.json").read_text())["resumed_from_step"] is None


def test_store_restores_a_finished_run_and_refuses_other_data(tiny_data, tmp_path):
    from scalelab.store import runs as store

    spec, store_dir = tiny_spec(), tmp_path / "store"
    first = train.train_run(spec, tiny_data, tmp_path / "a", threads=1, code="c1", store_dir=store_dir)
    model = (tmp_path / "a/model.pt").read_bytes()
    key = store.run_key(spec, "c1")
    assert (store_dir / key / "manifest.json").exists()
    restored = train.train_run(spec, tiny_data, tmp_path / "b", threads=1, code="c1", store_dir=store_dir)
    assert restored == first and (tmp_path / "b/model.pt").read_bytes() == model
    assert not (tmp_path / "b/ckpt").exists()  # restored, not trained
    # Other code, or a damaged entry: trained again, never a wrong restore.
    other = train.train_run(spec, tiny_data, tmp_path / "c", threads=1, code="c2", store_dir=store_dir)
    assert (tmp_path / "c/ckpt").exists() and other["code"] == "c2"
    (store_dir / key / "model.pt").unlink()
    (store_dir / key / "model.pt").write_bytes(model[:100])
    assert store.lookup(store_dir, key, first["data_fingerprint"]) is None
    assert store.lookup(store_dir, store.run_key(spec, "c2"), "other data") is None


def test_run_files_carry_their_identity(tiny_data, tmp_path):
    from scalelab.store import runs as store

    spec = tiny_spec()
    metrics = train.train_run(spec, tiny_data, tmp_path / "run", threads=1, code="abc")
    saved = torch.load(tmp_path / "run/model.pt", weights_only=True)
    assert saved["run"] == metrics["run"] == spec["run"]
    assert saved["spec_sha"] == metrics["spec_sha"] == store.spec_sha(spec)
    assert metrics["model_bytes"] == (tmp_path / "run/model.pt").stat().st_size
    assert metrics["model_sha256"] == store.file_sha256(tmp_path / "run/model.pt")
    assert metrics["code"] == "abc" and metrics["data_fingerprint"]


def test_gpu_accelerator_without_a_gpu_is_one_line(tiny_data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scalelab",
            "train",
            "--spec",
            json.dumps(tiny_spec(accelerator="gpu")),
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "accelerator" in proc.stderr


def test_stale_checkpoint_of_other_settings_is_not_resumed(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "ckpt").mkdir(parents=True)
    (run_dir / "ckpt" / "spec.json").write_text(json.dumps(tiny_spec(lr=1.0)))
    (run_dir / "ckpt" / train.CKPT_NAME).write_bytes(b"not a checkpoint")
    metrics = train.train_run(tiny_spec(), tiny_data, run_dir, threads=1)
    assert metrics["resumed_from_step"] is None and metrics["status"] == "ok"


def test_trackers_log_the_run_and_leave_the_curve_contract_alone(tiny_data, tmp_path):
    pytest.importorskip("tensorboard")
    run_dir = tmp_path / "results/runs/t-8K-s0"
    metrics = train.train_run(
        tiny_spec(), tiny_data, run_dir, threads=1, loggers=["csv", "tensorboard"], study="a study"
    )
    assert metrics["status"] == "ok"
    assert list(tmp_path.glob("results/tensorboard/t-8K-s0/events.out.tfevents.*"))
    assert (run_dir / "csv/metrics.csv").exists()
    curve = pd.read_csv(run_dir / "curve.csv")
    assert list(curve.columns) == ["step", "tokens", "flops", "lr", "train_loss", "val_loss"]
    plain = train.train_run(tiny_spec(), tiny_data, tmp_path / "plain", threads=1, loggers=[])
    assert plain["val_loss"] == metrics["val_loss"]  # logging decides nothing
    assert pd.read_csv(tmp_path / "plain/curve.csv").equals(curve)
