"""The warm worker (scalelab.warm): a job run through it behaves as the job's own process would.

Each test drives the client in a fresh Python (as a job command is), with tests/warm_probe.py as
the entry point, in a private socket directory whose workers are stopped and checked gone at the
end of the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
# A job command: the probe through a worker, or, where none can take it, in this process.
CLIENT = (
    "import sys, warm_probe; from scalelab import warm; "
    "code = warm.run_in_worker(sys.argv, 'warm_probe:main', PRELOAD); "
    "code is None and print('in-process', file=sys.stderr); "
    "sys.exit(warm_probe.main(sys.argv[1:]) if code is None else code)"
)
COLD = "import sys, warm_probe; sys.exit(warm_probe.main(sys.argv[1:]))"


def processes(folder: Path) -> dict[int, int]:
    """Workers serving sockets in `folder` and their children (whose command line is the
    worker's, which names the socket): pid -> parent pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"worker_main" in command and str(folder).encode() in command:
                try:
                    found[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError):
                    continue
    return found


def workers(folder: Path) -> list[int]:
    """The workers themselves (not their jobs)."""
    found = processes(folder)
    return [pid for pid, parent in found.items() if parent not in found]


@pytest.fixture
def warm_env(tmp_path):
    folder = tmp_path / "sockets"
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}:{TESTS}",
        "SCALELAB_WARM_DIR": str(folder),
        "SCALELAB_WARM_IDLE": "120",
    }  # outlives a cold import on a loaded machine
    env.pop("SCALELAB_WARM", None)
    yield env
    for sock in folder.glob("*.sock"):  # a worker whose socket is gone exits
        sock.unlink()
    deadline = time.time() + 15
    while processes(folder) and time.time() < deadline:
        time.sleep(0.2)
    assert processes(folder) == {}, "a warm worker or job outlived its test"


def client(env, *args, preload=("warm_probe",), **kwargs) -> subprocess.CompletedProcess:
    code = CLIENT.replace("PRELOAD", repr(list(preload)))
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120, **kwargs
    )


def context(proc) -> dict:
    return json.loads(proc.stderr.strip().splitlines()[-1])


def test_exit_code_streams_env_cwd_and_umask_reach_the_child(warm_env, tmp_path):
    first = client({**warm_env, "PROBE": "one"}, "echo", "3", input="hello", cwd=tmp_path)
    assert first.returncode == 3 and first.stdout == "out:hello", first.stderr
    seen = context(first)
    assert "in-process" not in first.stderr
    assert seen["cwd"] == str(tmp_path) and seen["probe"] == "one" and seen["argv"][1:] == ["echo", "3"]
    assert seen["ppid"] in workers(Path(warm_env["SCALELAB_WARM_DIR"]))  # the child of a worker

    # the same worker takes the next job (a key left out: PWD), with that job's cwd and umask
    other = tmp_path / "other"
    other.mkdir()
    second = client(
        {**warm_env, "PROBE": "one", "PWD": str(other)},
        "echo",
        "0",
        input="again",
        cwd=other,
        preexec_fn=lambda: os.umask(0o027),
    )
    assert second.returncode == 0 and second.stdout == "out:again"
    assert context(second)["ppid"] == seen["ppid"] and context(second)["cwd"] == str(other)
    assert context(second)["umask"] == 0o027
    assert len(list(Path(warm_env["SCALELAB_WARM_DIR"]).glob("*.sock"))) == 1


def test_an_uncaught_exception_prints_its_traceback_and_exits_1(warm_env):
    proc = client(warm_env, "raise")
    assert proc.returncode == 1 and "RuntimeError: probe failure" in proc.stderr and "Traceback" in proc.stderr
    assert "in-process" not in proc.stderr


def start_sleeper(env, tmp_path):
    pid_file = tmp_path / "pid"
    code = CLIENT.replace("PRELOAD", "['warm_probe']")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "sleep", str(pid_file)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    return proc, int(pid_file.read_text())


def gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig, returncode", [(signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM)])
def test_a_signal_to_the_job_command_reaches_the_child(warm_env, tmp_path, sig, returncode):
    """Ctrl-C (SIGINT) and scancel or Snakemake (SIGTERM) stop the job as they stop a fresh process:
    SIGINT raises KeyboardInterrupt in it; SIGTERM kills it, and the command dies of it too."""
    proc, child = start_sleeper(warm_env, tmp_path)
    assert child != proc.pid  # it runs in a worker's child
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == returncode, err
    assert ("interrupted" in err) == (sig == signal.SIGINT)
    assert gone(child)


def test_a_killed_job_command_takes_its_child_with_it(warm_env, tmp_path):
    proc, child = start_sleeper(warm_env, tmp_path)
    proc.kill()
    proc.wait(timeout=60)
    assert gone(child)


def test_a_killed_worker_takes_its_children_and_the_next_job_starts_a_new_one(warm_env, tmp_path):
    proc, child = start_sleeper(warm_env, tmp_path)
    (worker,) = workers(Path(warm_env["SCALELAB_WARM_DIR"]))
    os.kill(worker, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "warm worker died" in err
    assert gone(child)
    again = client(warm_env, "echo", "0", input="")  # its socket is dead: a new worker
    assert again.returncode == 0 and "in-process" not in again.stderr
    assert context(again)["ppid"] != worker


def test_a_change_of_source_or_environment_gets_another_worker(warm_env, tmp_path):
    """Never stale: a worker serves only jobs with its key (package files, environment, ...)."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "src" / "scalelab", src / "scalelab", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**warm_env, "PYTHONPATH": f"{src}:{TESTS}"}
    first = context(client(env, "echo", "0", input=""))["ppid"]
    assert context(client(env, "echo", "0", input=""))["ppid"] == first
    with open(src / "scalelab" / "shapes.py", "a") as handle:
        handle.write("\n# an edit\n")
    edited = context(client(env, "echo", "0", input=""))["ppid"]
    assert edited != first
    threads = context(client({**env, "OMP_NUM_THREADS": "1"}, "echo", "0", input=""))["ppid"]
    assert threads not in (first, edited)
    assert len(list(Path(warm_env["SCALELAB_WARM_DIR"]).glob("*.sock"))) == 3


def test_threads_are_those_of_a_fresh_process(warm_env):
    """torch's intra- and inter-op threads through a worker that preloaded torch, against a fresh
    Python, with and without OMP_NUM_THREADS."""
    for omp in (None, "1", "2"):
        env = {k: v for k, v in warm_env.items() if k != "OMP_NUM_THREADS"} | ({"OMP_NUM_THREADS": omp} if omp else {})
        warm = client(env, "threads", preload=("warm_probe", "torch"))
        cold = subprocess.run(
            [sys.executable, "-c", COLD, "threads"], env=env, capture_output=True, text=True, timeout=120
        )
        assert "in-process" not in warm.stderr
        assert json.loads(warm.stdout) == json.loads(cold.stdout), omp


def test_no_worker_runs_the_job_in_process_with_one_line(warm_env, tmp_path):
    off = client({**warm_env, "SCALELAB_WARM": "0"}, "echo", "4", input="x")
    assert off.returncode == 4 and off.stdout == "out:x" and "in-process" in off.stderr
    assert "warm worker" not in off.stderr and processes(Path(warm_env["SCALELAB_WARM_DIR"])) == {}

    broken = client(warm_env, "echo", "5", input="y", preload=("no_such_module_here",))
    assert broken.returncode == 5 and broken.stdout == "out:y"
    lines = [line for line in broken.stderr.splitlines() if "warm worker" in line]
    assert len(lines) == 1 and "Traceback" not in broken.stderr, broken.stderr

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    public = client({**warm_env, "SCALELAB_WARM_DIR": str(shared)}, "echo", "0", input="")
    assert public.returncode == 0 and "not a private directory" in public.stderr and "in-process" in public.stderr


def test_a_rank_of_a_distributed_run_runs_in_its_own_process(warm_env):
    proc = client({**warm_env, "LOCAL_RANK": "1"}, "echo", "0", input="")
    assert proc.returncode == 0 and "in-process" in proc.stderr


def test_the_job_commands_go_through_one_worker(warm_env):
    """`scalelab train|trunk|evaluate` from the command line run in a worker's child, with the
    output and exit code of their own process; the stages share one worker."""
    folder = Path(warm_env["SCALELAB_WARM_DIR"])
    command = [sys.executable, "-m", "scalelab"]
    warm = subprocess.run([*command, "trunk", "--help"], env=warm_env, capture_output=True, text=True, timeout=300)
    assert len(workers(folder)) == 1
    cold = subprocess.run(
        [*command, "trunk", "--help"],
        env={**warm_env, "SCALELAB_WARM": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert warm.returncode == cold.returncode == 0 and warm.stdout == cold.stdout and warm.stderr == ""
    bad = subprocess.run(
        [*command, "evaluate", "--no-such-flag"], env=warm_env, capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2 and "error: the following arguments are required: --run, --data" in bad.stderr
    assert len(workers(folder)) == 1


def test_a_job_killed_by_sigkill_kills_its_command_the_same_way(warm_env, tmp_path):
    """The OOM killer's SIGKILL: the command dies of SIGKILL as the job's own process would (a shell
    reports 137), not of an OSError from setting a handler for SIGKILL (exit 1)."""
    code = CLIENT.replace("PRELOAD", "['warm_probe']")
    proc = client(warm_env, "oom")
    assert proc.returncode == -signal.SIGKILL and "in-process" not in proc.stderr and "OSError" not in proc.stderr
    shell = subprocess.run(
        ["sh", "-c", '"$0" -c "$1" oom; echo "exit $?"', sys.executable, code],
        env=warm_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shell.stdout.strip().splitlines()[-1] == "exit 137", shell.stderr


def test_the_key_falls_back_where_the_platform_has_no_affinity(monkeypatch):
    """macOS has no os.sched_getaffinity: the key is made without it, never an AttributeError."""
    from scalelab import warm

    with_affinity = warm.worker_key({}, "warm_probe:main", [])
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    without = warm.worker_key({}, "warm_probe:main", [])
    assert without and without != with_affinity


def test_an_edited_dependency_or_another_niceness_gets_another_worker(warm_env, tmp_path):
    """An installed distribution's file edited in place (same size, new mtime), and `nice`: both
    change what a fresh process would run with, so both change the worker."""
    site = tmp_path / "site"
    (site / "probe_dep-1.0.dist-info").mkdir(parents=True)
    module = site / "probe_dep.py"
    module.write_text("VALUE = 1\n")
    (site / "probe_dep-1.0.dist-info" / "RECORD").write_text("probe_dep.py,,\nprobe_dep-1.0.dist-info/RECORD,,\n")
    env = {**warm_env, "PYTHONPATH": f"{warm_env['PYTHONPATH']}:{site}"}
    first = context(client(env, "echo", "0", input=""))["ppid"]
    assert context(client(env, "echo", "0", input=""))["ppid"] == first
    module.write_text("VALUE = 2\n")
    os.utime(module, ns=(time.time_ns(), time.time_ns() + 10**9))
    edited = context(client(env, "echo", "0", input=""))["ppid"]
    assert edited != first
    niced = client(env, "echo", "0", input="", preexec_fn=lambda: os.nice(1))
    assert "in-process" not in niced.stderr and context(niced)["ppid"] not in (first, edited)


def test_a_worker_started_in_a_slurm_job_ends_with_the_job(warm_env):
    """Inside a Slurm job the client names the job step's top process (scalelab.warm.slurm_job_top;
    tests/test_slurm.py runs it under Slurm); the worker ends when that process does, long before
    its idle time, whatever the cluster's process tracking."""
    folder = Path(warm_env["SCALELAB_WARM_DIR"])
    folder.mkdir(mode=0o700)
    job_top = subprocess.Popen(["sleep", "600"])
    config = {
        "socket": str(folder / "job.sock"),
        "entry": "warm_probe:main",
        "preload": ["warm_probe"],
        "path": [str(REPO / "src"), str(TESTS), *sys.path],
        "idle_s": 600,
        "owner": job_top.pid,
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", "import scalelab.warm_worker as w; w.worker_main()", json.dumps(config)], env=warm_env
    )
    try:
        deadline = time.time() + 120
        while not (folder / "job.sock").exists() and time.time() < deadline and worker.poll() is None:
            time.sleep(0.1)
        assert (folder / "job.sock").exists() and worker.poll() is None  # serving
        job_top.kill()
        job_top.wait()
        assert worker.wait(timeout=15) == 0
        assert not (folder / "job.sock").exists()
    finally:
        for proc in (job_top, worker):
            if proc.poll() is None:
                proc.kill()
