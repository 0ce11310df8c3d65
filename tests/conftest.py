"""Shared fixtures: offline hub settings, a tiny corpus, and tiny tokenized data."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

# Nothing in the tests may reach a hub.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# A runner that starts the tests as a background job of a script (`... &`, nohup) leaves SIGINT
# ignored, and every child inherits that through exec: the Ctrl-C tests (train, Slurm) would send
# SIGINT to processes that cannot receive it and wait for them. Children of a process with a
# handler start with the default, so restoring Python's handler here gives them a user's Ctrl-C.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def warm_workers(tmp_path_factory):
    """The job commands the tests run (through Snakemake or `python -m scalelab`) go through warm
    workers (scalelab.warm) whose sockets live in this session's own directory; at its end the
    sockets are removed, so the workers exit, and no test leaves a process behind."""
    folder = tmp_path_factory.mktemp("warm")
    folder.chmod(0o700)
    os.environ["SCALELAB_WARM_DIR"] = str(folder)
    yield folder
    for sock in folder.glob("*.sock"):
        sock.unlink()
    deadline = time.time() + 30
    while time.time() < deadline and _serving(folder):
        time.sleep(0.2)


@pytest.fixture(scope="session", autouse=True)
def slurm_studies(request, tmp_path_factory, warm_workers):
    """tests/test_slurm.py's Slurm studies, started with the session when that file's tests are
    selected and Slurm is there: their passes wait minutes on Slurm for seconds of work, and the
    other tests run meanwhile. Futures of what that file's fixtures look at (empty otherwise)."""
    wanted = {name for item in request.session.items for name in item.fixturenames if item.path.name == "test_slurm.py"}
    if not wanted:
        yield {}
        return
    import test_slurm

    if test_slurm.MISSING:
        yield {}
        return
    with test_slurm.in_background(tmp_path_factory, wanted) as started:
        yield started


def _serving(folder: Path) -> bool:
    """Whether a warm worker (or a job it forked) of `folder` is still running."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(folder).encode() in (entry / "cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


_WORDS = (
    "the model learns a law of scale where loss falls as data and parameters grow while compute "
    "is spent on tokens and layers of attention over context windows"
).split()


def make_corpus(folder: Path, documents: int = 200, seed: int = 0, words: int = 120) -> list[Path]:
    """Small text files of simple, learnable sentences (one document per file)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(documents):
        sentences = []
        for _ in range(words // 8):
            start = rng.randrange(len(_WORDS) - 8)
            sentences.append(" ".join(_WORDS[start : start + 8]).capitalize() + ".")
        path = folder / f"doc{i:04d}.txt"
        path.write_text(f"Document {i}. " + " ".join(sentences) + "\n")
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A tokenized tiny corpus (results/data layout)."""
    from scalelab.data import tokenize as data

    root = tmp_path_factory.mktemp("tiny")
    make_corpus(root / "corpus")
    data_cfg = {
        "source": {"files": [str(root / "corpus" / "*.txt")], "text_field": "text", "sample_by": "document"},
        "pairs": None,
        "split": {"val": 0.1, "test": 0.1},
        "tokenizer": {"vocab_size": 300},
        "allow_repeat": True,
    }
    data.tokenize(data_cfg, root / "data")
    return root / "data"


def tiny_spec(**changes) -> dict:
    spec = {
        "run": "t-8K-s0",
        "model": "t",
        "n_layer": 1,
        "d_model": 16,
        "n_head": 2,
        "tokens": 8192,
        "seed": 0,
        "isoflop_budget": None,
        "data": "test",
        "context": 32,
        "batch_size": 8,
        "lr": 3e-3,
        "schedule": "cosine",
        "warmup_tokens": 0.05,
        "min_lr_ratio": 0.1,
        "weight_decay": 0.1,
        "beta2": 0.95,
        "grad_clip": 1.0,
        "precision": "32-true",
        "accelerator": "cpu",
        "devices": 1,
        "compile": False,
        "val_tokens": 1024,
        "val_evals": 2,
        "checkpoint_every": 0.25,
    }
    spec.update(changes)
    return spec


@pytest.fixture(scope="session")
def cosine_study(tmp_path_factory) -> Path:
    """The tiny cosine study (tests/test_workflow.py's TINY: 3 models x 2 token counts), run once
    locally and shared by every test file that only reads it (staleness dry runs, the results and
    metadata checks of tests/test_identity.py). A test that changes it works on a copy."""
    from test_workflow import TINY, snakemake, write_config

    study = tmp_path_factory.mktemp("cosine_study")
    make_corpus(study / "corpus", documents=150)
    write_config(study, TINY)
    snakemake(study)
    return study


@pytest.fixture(scope="session")
def wsd_study(tmp_path_factory) -> Path:
    """The tiny WSD study (tests/test_workflow_wsd.py's WSD_TINY: 2 families x 3 token counts),
    run once locally and shared by every test file that only reads it (staleness dry runs, the
    overhead benchmark, the Slurm comparison, the trunk store checks of tests/test_identity.py).
    A test that changes it works on a copy."""
    from test_workflow import snakemake, write_config
    from test_workflow_wsd import WSD_TINY

    study = tmp_path_factory.mktemp("wsd_study")
    make_corpus(study / "corpus", documents=150)
    write_config(study, WSD_TINY)
    snakemake(study)
    return study
