"""Tiny studies through a real Slurm with the shipped profile (`--profile profiles/slurm`).

Needs a reachable Slurm with accounting (`.ci/slurm-up.sh` starts a one-node cluster on this
machine); skipped, with the reason, where `sinfo` fails (under CI, SCALELAB_REQUIRE_SLURM=1 makes
that a failure). A cosine study with job groups turned off (one submission per job): one pass
during which the largest run's train job is `scancel`led after its first checkpoint; a second
pass that resumes it; a third that must submit nothing. The same config also runs locally, in
parallel, and the two must agree. Then the tiny WSD study with the profile's job groups: one
submission per family, the same losses as the shared local run, a change to one model
resubmitting only its family, and the warm worker turned on for its first pass.

Both studies' passes start with the test session, in threads (in_background, started by
tests/conftest.py's `slurm_studies`), and the other tests run while they wait on Slurm; this
file's fixtures wait for their results. The only setting added to the profile is
--slurm-init-seconds-before-status-checks 1 (the executor otherwise waits 40 s before its first
poll); the passes take 4-8 minutes, longer the more the machine is loaded. Where the time
goes: plugin 2.8 polls 1 s after a job of the study finished, then waits 10 s longer before each
next poll while none finishes (11, 21, 31 ... s; hard-coded, only the first interval is a
setting), so a job is seen 1, 12, 33, 64, 105 ... s after the previous one, and a job takes
6-15 s of Python and Snakemake start-up for well under a second of training (the start-up is
twice Snakemake's: the job's own and the one `srun` starts; docs/benchmarks.md, "Test suite
time").
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO, make_corpus
from test_warm import processes
from scalelab.plan import grouping

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
SLURM_THREADS = {"train": 2}  # profiles/slurm's set-threads, which the derived CPUs follow

CONFIG = {
    "data": {
        "source": {"files": ["corpus/*.txt"]},
        "split": {"val": 0.1, "test": 0.1},
        "tokenizer": {"vocab_size": 300},
    },
    # three sizes, so the fit in N is a real one; c is big enough to be caught mid-run
    "models": {
        "a": {"n_layer": 1, "d_model": 16, "n_head": 2},
        "b": {"n_layer": 1, "d_model": 32, "n_head": 2},
        "c": {"n_layer": 2, "d_model": 64, "n_head": 4},
    },
    "grid": {"models": ["a", "b", "c"], "tokens": ["16K"], "seeds": [0]},
    "train": {"context": 32, "batch_size": 8, "val_tokens": 512, "val_evals": 2},
    "eval": {"test_tokens": 512, "prompts": 4, "prompt_tokens": 8, "max_new_tokens": 8, "batch_size": 4},
    "fit": {"bootstrap": 20},
}
KILLED = "c-16K-s0"
SUBMITTED = re.compile(
    r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: .*/slurm_logs/rule_(\w+)/(?:([^/]+)/)?\d+\.log\)"
)
# a job group's submission: its log folder names the group and its rules
SUBMITTED_ANY = re.compile(
    r"Job \S+ has been submitted with SLURM jobid (\d+) \(log: .*/slurm_logs/((?:rule|group)_\w+)/"
)


def _slurm_missing() -> str | None:
    if shutil.which("sinfo") is None:
        return "no Slurm here: sinfo not found (.ci/slurm-up.sh starts one)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "no Slurm reachable: sinfo did not answer within 60 s"
    if proc.returncode != 0:
        return f"no Slurm reachable: sinfo failed: {(proc.stderr or proc.stdout).strip()[:200]}"
    if "idle" not in proc.stdout and "mix" not in proc.stdout:
        return f"no idle Slurm node (sinfo: {proc.stdout.split()})"
    if subprocess.run(["sacct", "-n", "-X", "-S", "now-1minutes"], capture_output=True, timeout=30).returncode:
        return "Slurm has no accounting (sacct fails); this test uses profiles/slurm as shipped"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed"
    return None


MISSING = _slurm_missing()
# CI (.ci/run under CI=true) sets SCALELAB_REQUIRE_SLURM: there a missing Slurm is a failure, not a
# skip, so that CI cannot go green with every Slurm test skipped. A developer's machine skips.
REQUIRED = os.environ.get("SCALELAB_REQUIRE_SLURM") == "1"
if MISSING and not REQUIRED:
    print(f"\ntests/test_slurm.py skipped: {MISSING}", file=sys.stderr)
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(MISSING is not None and not REQUIRED, reason=MISSING or "")]


@pytest.fixture(scope="module", autouse=True)
def _slurm_is_there():  # module scope: before the module fixture `studies`
    if MISSING:  # only reached when required
        pytest.fail(f"SCALELAB_REQUIRE_SLURM=1 but {MISSING}", pytrace=False)


def command(study: Path, *args: str) -> list[str]:
    return [
        SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(study),
        "--configfile",
        str(study / "config.yaml"),
        *args,
    ]


def slurm_args(study: Path, grouped: bool = True) -> list[str]:
    """profiles/slurm as shipped (job groups: one submission per WSD family, or per run), or with
    grouping turned off as the README says (one submission per job)."""
    # --groups takes every word after it: it goes before the profile, never before a target
    off = [] if grouped else grouping.TURN_OFF.split()
    return command(
        study, *off, "--profile", str(REPO / "profiles/slurm"), "--slurm-init-seconds-before-status-checks", "1"
    )


def env() -> dict:
    return {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


# The passes' environment, taken when they start (in_background), and their Snakemake processes.
ENV: dict = {}
RUNNING: list[subprocess.Popen] = []
STOPPING = threading.Event()


def start(args: list[str], log: Path, environ: dict | None = None) -> subprocess.Popen:
    if STOPPING.is_set():
        raise RuntimeError("the test session is ending: no new Snakemake pass")
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=environ or ENV or env(), cwd=REPO)
    RUNNING.append(proc)
    return proc


def run(args: list[str], log: Path, timeout: int = 600, environ: dict | None = None) -> tuple[int, str]:
    proc = start(args, log, environ)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # Snakemake cancels its Slurm jobs
        proc.wait(timeout=120)
        raise
    return code, log.read_text()


def warm_processes(folder: Path) -> dict[int, tuple[int, str]]:
    """tests/test_warm.py's `processes` (the warm workers of `folder` and the jobs they forked: pid ->
    parent pid), each with the SLURM_JOB_ID it was started in ("" outside Slurm); one that ended
    before its environment was read is left out."""
    found = {}
    for pid, parent in processes(folder).items():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        job = next((v[len(b"SLURM_JOB_ID=") :].decode() for v in environ if v.startswith(b"SLURM_JOB_ID=")), "")
        found[pid] = (parent, job)
    return found


def watch_workers(folder: Path, seen: dict, watching: threading.Event) -> None:
    while watching.is_set():
        seen.update(warm_processes(folder))
        time.sleep(0.2)


def wait_for_no_workers(folder: Path, timeout: float) -> list[int]:
    """Waits until no worker of `folder` runs (they exit after SCALELAB_WARM_IDLE); those left."""
    deadline = time.time() + timeout
    while (left := list(warm_processes(folder))) and time.time() < deadline:
        time.sleep(0.5)
    return left


def submissions(text: str) -> list[tuple[str, str, str | None]]:
    """(Slurm job id, rule, wildcards) of every job this Snakemake log says it submitted."""
    return [m.groups() for m in SUBMITTED.finditer(text)]


def sacct(job_ids) -> dict[str, dict]:
    out = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-j", ",".join(job_ids), "-o", "JobID,State,ReqTRES,Timelimit,AllocCPUS"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = {}
    for line in out.splitlines():
        job, state, tres, limit, cpus = line.split("|")
        rows[job] = {
            "state": state.split()[0],
            "tres": dict(kv.split("=") for kv in tres.split(",") if kv),
            "timelimit": limit,
            "cpus": int(cpus),
        }
    return rows


def left_behind(study_jobs: set[str], wait_s: float = 60) -> list[str]:
    """The study's jobs that Slurm held, pending or running, when Snakemake exited and that did not end
    CANCELLED (other studies run too). A job completing at that moment (CG) is ending anyway; a cancelled
    one may still be completing for a moment, so each is followed until it leaves the queue."""
    rows = subprocess.run(["squeue", "-h", "-o", "%i %t"], capture_output=True, text=True).stdout.split("\n")
    held = {job for job, state in (row.split() for row in rows if row.strip()) if job in study_jobs and state != "CG"}
    deadline = time.time() + wait_s
    while held and time.time() < deadline:
        queued = set(subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split())
        ended = {job: row["state"] for job, row in sacct(sorted(held)).items()} if not held & queued else {}
        if set(ended) >= held and all(state not in ("PENDING", "RUNNING", "COMPLETING") for state in ended.values()):
            return sorted(job for job in held if ended.get(job) != "CANCELLED")
        time.sleep(0.5)
    return sorted(held)


def minutes(limit: str) -> int:
    days, _, clock = limit.rpartition("-")
    h, m, s = (int(x) for x in clock.split(":"))
    return (int(days or 0) * 24 + h) * 60 + m + (s > 0)


def new_study(root: Path) -> Path:
    root.mkdir(parents=True)
    make_corpus(root / "corpus", documents=150)
    (root / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    return root


def cosine_passes(base: Path) -> dict:
    """Runs everything once: the local study (in the background), then the Slurm study with a
    scancel, its resuming rerun and a no-op rerun. Returns what the tests look at."""
    local, cluster = new_study(base / "local"), new_study(base / "cluster")
    started = time.time()
    local_proc = start(command(local, "--cores", "2"), base / "local.log")

    # Pass 1: cancel the largest run's train job once it has checkpointed. Plugin 2.8 never
    # notices a job cancelled from outside (sacct says "CANCELLED by <uid>", which it does not
    # match), so, as the README says, stop Snakemake with SIGINT, which cancels the rest.
    first_log = base / "first.log"
    proc = start(slurm_args(cluster, grouped=False), first_log)
    ckpt = cluster / "results/runs" / KILLED / "ckpt/last.ckpt"
    cancelled, cancelled_at = None, None
    deadline = time.time() + 900  # the session's other tests load the machine meanwhile
    while time.time() < deadline and proc.poll() is None and cancelled is None and not STOPPING.is_set():
        step = 0
        try:
            step = torch.load(ckpt, weights_only=False, map_location="cpu")["global_step"] if ckpt.exists() else 0
        except Exception:  # caught mid-rename
            pass
        if step:
            job = [j for j, rule, wc in submissions(first_log.read_text()) if rule == "train" and wc == KILLED]
            subprocess.run(["scancel", job[0]], check=True)
            cancelled, cancelled_at = job[0], step
        time.sleep(0.1)
    while cancelled and time.time() < deadline and sacct([cancelled])[cancelled]["state"] != "CANCELLED":
        time.sleep(0.5)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    first_code = proc.wait(timeout=300)
    left_running = left_behind({job for job, _, _ in submissions(first_log.read_text())})
    first_s = time.time() - started
    # Pass 2: the cancelled run again, resumed; then everything downstream.
    second_code, second = run(slurm_args(cluster, grouped=False), base / "second.log", timeout=1200)
    slurm_s = time.time() - started
    # Pass 3: nothing changed, nothing submitted.
    third_code, third = run(slurm_args(cluster, grouped=False), base / "third.log")
    local_code = local_proc.wait(timeout=900)
    return {
        "local": local,
        "cluster": cluster,
        "first": first_log.read_text(),
        "first_code": first_code,
        "left_running": left_running,
        "second": second,
        "second_code": second_code,
        "third": third,
        "third_code": third_code,
        "local_code": local_code,
        "local_log": (base / "local.log").read_text(),
        "cancelled": cancelled,
        "cancelled_at": cancelled_at,
        "timing": f"slurm study: pass 1 {first_s:.0f} s, passes 1+2 {slurm_s:.0f} s; local (in parallel) done by "
        f"{time.time() - started:.0f} s",
    }


@pytest.fixture(scope="module")
def studies(slurm_studies):
    """The cosine study's passes (cosine_passes), started with the session (tests/conftest.py)."""
    result = slurm_studies["studies"].result()
    print(f"\n{result['timing']}", file=sys.stderr)
    return result


def test_every_job_goes_through_sbatch_with_the_derived_resources(studies):
    from scalelab.config import load as study_config
    from scalelab.plan import grid
    from scalelab.plan.resources import train_resources

    assert studies["cancelled"], f"{KILLED} was never caught mid-run:\n{studies['first'][-3000:]}"
    assert studies["second_code"] == 0, studies["second"][-4000:]
    jobs = submissions(studies["first"]) + submissions(studies["second"])
    # every job but the local rules aggregate and report went to sbatch: tokenize, 3 train, 3 evaluate,
    # fit, suggest (pass 1 submitted some of them, pass 2 the rest and the cancelled run again)
    expected = {("tokenize", None), ("fit", None), ("suggest", None)} | {
        (rule, f"{m}-16K-s0") for rule in ("train", "evaluate") for m in "abc"
    }
    assert {(rule, run) for _, rule, run in jobs} == expected
    assert ("train", KILLED) in {(rule, run) for _, rule, run in submissions(studies["second"])}
    assert "localrule aggregate" in studies["second"] and "localrule report" in studies["second"]
    for text in (studies["first"], studies["second"]):  # nothing else ran on the submitting machine
        assert not re.search(r"^localrule (?!aggregate|report|all)", text, re.M)

    accounting = sacct([job for job, _, _ in jobs])
    runs = {r.id: r for r in grid.expand_grid(study_config.load(studies["cluster"] / "config.yaml"))}
    for job, rule, run in jobs:
        row = accounting[job]
        if job == studies["cancelled"]:
            assert row["state"] == "CANCELLED"
        elif job not in {j for j, _, _ in submissions(studies["first"])}:
            assert row["state"] == "COMPLETED", (job, rule, row)  # pass 1's may have been cancelled by SIGINT
        if rule == "train":
            want = train_resources(runs[run].spec, CONFIG["data"]["tokenizer"]["vocab_size"], SLURM_THREADS["train"])
            assert row["tres"]["mem"] == f"{want.mem_mb}M", (run, row)
            assert minutes(row["timelimit"]) == want.runtime, (run, row)
            assert row["cpus"] == int(row["tres"]["cpu"]) == want.cpus == 2, (run, row)


def test_sigint_cancels_the_studys_jobs(studies):
    assert studies["first_code"] != 0
    assert studies["left_running"] == [], "SIGINT left Slurm jobs behind"


def test_a_cancelled_train_job_resumes_from_its_checkpoint(studies):
    assert f"rule_train/{KILLED}" in studies["first"]
    metrics = json.loads((studies["cluster"] / "results/runs" / KILLED / "metrics.json").read_text())
    assert metrics["status"] == "ok"  # the rerun finished it from where it stopped
    assert metrics["resumed_from_step"] is not None and metrics["resumed_from_step"] >= studies["cancelled_at"]
    assert metrics["steps"] == 63  # ceil(16000 / (8 * 32))
    log = (studies["cluster"] / f"logs/train/{KILLED}.log").read_text()
    assert "resuming from step" in log
    for text in ("SLURM auto-requeueing", "Bypassing SIGTERM", "srun` command is available"):
        assert text not in log


def test_a_rerun_with_nothing_changed_submits_nothing(studies):
    assert studies["third_code"] == 0, studies["third"][-3000:]
    assert "Nothing to be done" in studies["third"]
    assert submissions(studies["third"]) == []


def test_results_equal_a_local_run(studies):
    assert studies["local_code"] == 0, studies["local_log"][-4000:]
    local = pd.read_csv(studies["local"] / "results/metrics.csv").set_index("run").sort_index()
    cluster = pd.read_csv(studies["cluster"] / "results/metrics.csv").set_index("run").sort_index()
    assert list(local.index) == list(cluster.index) == sorted(f"{m}-16K-s0" for m in "abc")
    assert (cluster["status"] == "ok").all()
    # the same runs on the same data; only the torch thread count differs (2 on Slurm, 1 here),
    # which reorders float sums: the losses agree far below any difference between runs
    assert (cluster["steps"] == local["steps"]).all()
    diff = (cluster["val_loss"] - local["val_loss"]).abs().max()
    print(f"\nval_loss, Slurm vs local: max |difference| {diff:.2e}", file=sys.stderr)
    assert diff < 1e-4
    assert (
        cluster["val_loss"].is_monotonic_decreasing
        or cluster.loc["c-16K-s0", "val_loss"] < cluster.loc["a-16K-s0", "val_loss"]
    )
    fit = json.loads((studies["cluster"] / "results/fit/fit.json").read_text())
    assert fit["power_law_N"] is not None and fit["n_points"] == 3


def new_wsd_study(root: Path) -> Path:
    from test_workflow_wsd import WSD_TINY

    study = root / "study"
    study.mkdir(parents=True)
    make_corpus(study / "corpus", documents=150)
    (study / "config.yaml").write_text(yaml.safe_dump(WSD_TINY, sort_keys=False))
    return study


def grouped_wsd_passes(root: Path) -> dict:
    """The tiny WSD study (2 families x 3 token counts) with the profile as shipped: a first pass,
    a no-op pass, and a pass after one model's lr changed."""
    from test_workflow_wsd import WSD_TINY

    study = new_wsd_study(root)
    # The first pass's warm workers in a folder of their own, seen while it runs; with an idle time
    # longer than the test, only the end of their Slurm job can stop them.
    warm_dir = root / "warm"
    warm_dir.mkdir(mode=0o700)
    warm_env = {**ENV, "SCALELAB_WARM_DIR": str(warm_dir), "SCALELAB_WARM_IDLE": "900"}
    warm_env.pop("SCALELAB_WARM", None)
    seen: dict[int, tuple[int, str]] = {}
    watching = threading.Event()
    watcher = threading.Thread(target=watch_workers, args=(warm_dir, seen, watching), daemon=True)
    watching.set()
    watcher.start()
    # Up to metrics.csv: the groups are the families' jobs; fit and suggest go to sbatch as in the study
    # above, and submitting them here too cost a minute a pass in the executor's polling.
    until = ["--until", "aggregate"]
    try:
        first_code, first = run(slurm_args(study) + until, root / "first.log", timeout=1200, environ=warm_env)
    finally:
        watching.clear()
        watcher.join()
    table = (study / "results/metrics.csv").read_text()  # before the change below
    first_logs = [
        p.read_text() for rule in ("trunk", "train", "evaluate") for p in (study / "logs" / rule).rglob("*.log")
    ]
    noop_code, noop = run(slurm_args(study) + until, root / "noop.log")
    before = {p.name: (p / "metrics.json").read_bytes() for p in (study / "results/runs").iterdir()}
    changed = {**WSD_TINY, "overrides": {"b": {"lr": 1e-3}}}
    (study / "config.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    change_code, change = run(slurm_args(study) + until, root / "change.log", timeout=1200)
    after = {p.name: (p / "metrics.json").read_bytes() for p in (study / "results/runs").iterdir()}
    workers_left = wait_for_no_workers(warm_dir, timeout=30)
    return {
        "study": study,
        "warm_workers": seen,
        "warm_workers_left": workers_left,
        "first_logs": first_logs,
        "first_code": first_code,
        "first": first,
        "table": table,
        "noop_code": noop_code,
        "noop": noop,
        "change_code": change_code,
        "change": change,
        "before": before,
        "after": after,
    }


@pytest.fixture(scope="module")
def grouped_wsd(slurm_studies):
    """The grouped WSD study's passes (grouped_wsd_passes), started with the session (tests/conftest.py)."""
    return slurm_studies["grouped_wsd"].result()


@contextlib.contextmanager
def in_background(tmp_path_factory, wanted: set[str]):
    """The Slurm studies' passes in threads, from the start of the session: they spend minutes waiting on
    Slurm (job start-up, the executor's polling) for seconds of work, a wait the session's other
    tests now fill. On leaving, whatever still runs gets SIGINT (Snakemake then cancels its Slurm
    jobs) and no further pass starts, so a session that ends early leaves nothing behind."""
    ENV.update(env())  # the environment now: a test's monkeypatch must not reach these processes
    pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="slurm-study")
    try:
        passes = {"studies": cosine_passes, "grouped_wsd": grouped_wsd_passes, "two_rank": two_rank_passes}
        yield {name: pool.submit(passes[name], tmp_path_factory.mktemp(name)) for name in passes if name in wanted}
    finally:
        STOPPING.set()
        for proc in list(RUNNING):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in list(RUNNING):
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
        pool.shutdown(wait=True, cancel_futures=True)


def grouped_submissions(text: str) -> list[str]:
    """The Slurm log folder (rule_<rule> or group_<group>_<rules>) of every submission."""
    return [m.group(2) for m in SUBMITTED_ANY.finditer(text)]


def test_job_groups_submit_one_job_per_wsd_family(grouped_wsd, wsd_study, tmp_path):
    from test_workflow import planned_jobs

    assert grouped_wsd["first_code"] == 0, grouped_wsd["first"][-4000:]
    jobs = planned_jobs(new_wsd_study(tmp_path))  # what one submission per job would submit (aggregate runs here)
    assert jobs == {
        "tokenize": 1,
        "trunk": 6,
        "train": 6,
        "evaluate": 6,
        "aggregate": 1,
        "fit": 1,
        "suggest": 1,
        "report": 1,
    }
    ungrouped = sum(jobs.values()) - jobs["aggregate"] - jobs["report"]  # one sbatch per job, as the cosine study shows
    submitted = grouped_submissions(grouped_wsd["first"])
    print(f"\nWSD study on Slurm: {len(submitted)} submissions with job groups, {ungrouped} without", file=sys.stderr)
    assert sorted(submitted) == ["group_family_evaluate_train_trunk"] * 2 + ["rule_tokenize"]
    assert ungrouped == 21
    # the groups ran every job: the same runs and losses as the shared local study
    local = pd.read_csv(wsd_study / "results/metrics.csv").set_index("run").sort_index()
    cluster = pd.read_csv(io.StringIO(grouped_wsd["table"])).set_index("run").sort_index()
    assert list(local.index) == list(cluster.index) and (cluster["status"] == "ok").all()
    assert (cluster["steps"] == local["steps"]).all()
    assert (cluster["val_loss"] - local["val_loss"]).abs().max() < 1e-4  # 2 threads here, 1 there
    for run in cluster.index:
        assert (grouped_wsd["study"] / f"results/runs/{run}/eval.json").exists()


def test_job_groups_keep_staleness_per_job(grouped_wsd):
    noop = grouped_wsd["noop"]  # with --until, Snakemake says "total 0" where it would say "Nothing to be done"
    assert grouped_wsd["noop_code"] == 0 and ("Nothing to be done" in noop or re.search(r"^total\s+0\s*$", noop, re.M))
    assert grouped_wsd["noop"].count("has been submitted") == 0
    # b's lr changed: b's family is the one group submitted; a's runs are not touched
    assert grouped_wsd["change_code"] == 0, grouped_wsd["change"][-4000:]
    assert grouped_submissions(grouped_wsd["change"]) == ["group_family_evaluate_train_trunk"]
    before, after = grouped_wsd["before"], grouped_wsd["after"]
    assert {run for run in before if before[run] != after[run]} == {"b-4K-s0", "b-8K-s0", "b-16K-s0"}
    assert json.loads(after["b-16K-s0"])["lr"] == 1e-3


def test_the_warm_worker_serves_a_job_groups_jobs_and_ends_with_its_slurm_job(grouped_wsd):
    """The grouped study's first pass, warm worker on (the default). Snakemake's job-step executor
    runs the jobs of a group one after another in the Slurm job's batch step, so a worker started by
    the first serves the next ones with the same environment (Snakemake sets each job's thread
    variables: train's and evaluate's differ). Its Slurm job ending ends it, though its idle time
    here is longer than the test. The losses are the local run's (the test above)."""
    assert grouped_wsd["first_code"] == 0, grouped_wsd["first"][-4000:]
    seen = grouped_wsd["warm_workers"]  # polled: a job of a tiny study can end between two looks
    workers = {pid: job for pid, (parent, job) in seen.items() if parent not in seen}
    children = [parent for parent, _ in seen.values() if parent in workers]
    print(
        f"\nwarm workers in the grouped Slurm study: {len(workers)} for 18 jobs ({len(children)} seen)", file=sys.stderr
    )
    groups = {job for job, folder in SUBMITTED_ANY.findall(grouped_wsd["first"]) if folder.startswith("group_")}
    assert len(groups) == 2 and set(workers.values()) == groups, (workers, groups)  # started inside those jobs
    # 2 families x (3 trunk pieces, 3 cooldowns, 3 evaluations): fewer workers, one of them seen serving two
    assert 2 <= len(workers) < 18 and max(children.count(pid) for pid in workers) >= 2, seen
    # a job the worker could not take runs in its own process and says so in its log: every one was taken
    logs = grouped_wsd["first_logs"]
    assert len(logs) == 18 and not any("warm worker unavailable" in text for text in logs)
    assert grouped_wsd["warm_workers_left"] == []  # gone with their Slurm jobs


def two_rank_passes(root: Path) -> dict:
    """train.devices: 2 on the CPU, with the profile as shipped (refused: a multi-rank run cannot share
    a job group) and with job groups turned off."""
    config = {
        **CONFIG,
        "models": {"a": CONFIG["models"]["b"]},
        "grid": {"models": ["a"], "tokens": ["8K"], "seeds": [0]},
        "train": {**CONFIG["train"], "accelerator": "cpu", "devices": 2},
    }
    study = new_study(root / "ddp")
    (study / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    target = ["results/runs/a-8K-s0/metrics.json"]
    refused_code, refused = run(slurm_args(study) + target, root / "refused.log")
    code, text = run(slurm_args(study, grouped=False) + target, root / "ddp.log", timeout=1200)
    return {"study": study, "refused_code": refused_code, "refused": refused, "code": code, "text": text}


@pytest.fixture(scope="module")
def two_rank(slurm_studies):
    """The two-rank study's passes (two_rank_passes), started with the session (tests/conftest.py)."""
    return slurm_studies["two_rank"].result()


def test_a_two_rank_run_starts_its_ranks_with_srun(two_rank, tmp_path):
    """train.devices: 2 on the CPU: one job of 2 tasks, its ranks started by srun as one job
    step, the same loss as one process (see tests/test_ddp.py for the tolerance)."""
    from scalelab import train

    study, code, text = two_rank["study"], two_rank["refused_code"], two_rank["refused"]
    # the profile as shipped groups jobs, which a multi-rank run cannot share: one line, nothing submitted
    errors = [line for line in text.splitlines() if line.startswith("scalelab: error:")]
    assert code != 0 and len(errors) == 1 and "2 ranks" in errors[0] and grouping.TURN_OFF in errors[0], text[-3000:]
    assert "has been submitted" not in text and "Traceback" not in text
    code, text = two_rank["code"], two_rank["text"]
    assert code == 0, text[-4000:]
    job = [j for j, rule, _ in submissions(text) if rule == "train"][0]
    steps = subprocess.run(
        ["sacct", "-P", "-n", "-j", job, "-o", "JobID,NTasks,AllocCPUS,State"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert f"{job}.0|2|2|COMPLETED" in steps, steps  # one step, two tasks: srun started both ranks
    metrics = json.loads((study / "results/runs/a-8K-s0/metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["devices"] == 2
    log = (study / "logs/train/a-8K-s0.log").read_text()
    assert "MEMBER: 2/2" in log
    for warning in ("SLURM auto-requeueing", "srun` command is available"):
        assert warning not in log
    spec = {**json.loads((study / "results/runs/a-8K-s0/ckpt/spec.json").read_text()), "devices": 1}
    one = train.train_run(spec, study / "results/data", tmp_path / "one", threads=2)
    assert metrics["val_loss"] == pytest.approx(one["val_loss"], abs=1e-4)


def test_onerror_cancels_the_jobs_a_run_submitted_and_slurm_still_holds(tmp_path):
    """The Snakefile's onerror cancels what the Slurm plugin's SIGINT handling can miss: a job submitted
    while a status check ran (CI saw two evaluate jobs run to completion after SIGINT). It reads the
    run's own submissions from its log: a job the log does not name is not touched."""
    from scalelab.plan.snakemake_adapter import cancel_left_slurm_jobs

    def submit() -> str:
        out = subprocess.run(
            ["sbatch", "--parsable", "-c", "1", "--mem", "100", "-t", "5", "-o", "/dev/null", "--wrap", "sleep 300"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip().split(";")[0]

    ours, other = submit(), submit()
    try:
        log = tmp_path / "run.snakemake.log"
        log.write_text(
            f"Job 6 has been submitted with SLURM jobid {ours} (log: {tmp_path}/rule_evaluate/a/{ours}.log).\n"
        )
        assert cancel_left_slurm_jobs([str(log)]) == [ours]  # onerror's `log`: Snakemake's list of log files
        deadline = time.time() + 60  # the accounting database may lag a moment
        while time.time() < deadline and sacct([ours]).get(ours, {}).get("state") != "CANCELLED":
            time.sleep(0.5)
        assert sacct([ours])[ours]["state"] == "CANCELLED"
        queued = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
        assert other in queued  # not this run's: left alone
        assert cancel_left_slurm_jobs(log) == []  # nothing left: nothing to do
        assert cancel_left_slurm_jobs(tmp_path / "missing.log") == []
    finally:
        subprocess.run(["scancel", ours, other], capture_output=True)
