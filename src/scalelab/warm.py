"""A warm worker for the job commands: import torch and Lightning once, fork a child per job.

A train, trunk or evaluate job spends seconds importing torch, Lightning and what they pull in
before it computes. The first such job of a study that finds no worker starts one in the
background: a process that imports the heavy modules once and waits on a UNIX socket. Each job
command is then a thin client (no torch, no numpy): it sends its argv, cwd, umask, environment
and signal dispositions and passes its stdin/stdout/stderr descriptors; the worker forks a child
that takes all of them on, runs the same CLI entry point and exits with its code, which the
client relays (a child killed by a signal kills the client with the same signal). The client
forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the child's process group,
and a client that dies (SIGKILL) has its child killed by the worker.

Never stale, never shared across contexts: a worker serves only clients with its key, a hash
of the Python executable and its flags, sys.path (and the mtimes of its directories, which a
package install changes), every file of the scalelab package (contents), torch's and
Lightning's version files, every installed distribution's RECORD and the code files it lists
(by size and mtime), the environment (but for the few variables a shell or a test runner
changes per command), the CPU affinity (where the platform has it), the niceness, the resource
limits, the cgroup (a Slurm job's) and the user. The environment being in the key means
OMP_NUM_THREADS and the like are what they were when the worker loaded libgomp and OpenBLAS,
exactly as in a fresh process; a job's `--threads` is applied by the command itself, after the
fork. The worker runs no torch op and initialises no CUDA before it forks (it checks the latter).

Any failure before the job starts (no socket, a dead worker, a worker that cannot start) runs the
job in the calling process as before, with one line on stderr. SCALELAB_WARM=0 turns the worker
off; a rank of a distributed run always runs in-process. The worker exits after
SCALELAB_WARM_IDLE seconds (default 30) without a job, when its socket is removed, or, started
inside a Slurm job, when the process Slurm started for the job step ends (its jobs with it). Sockets
live in a private (0700) directory: $SCALELAB_WARM_DIR, else $XDG_RUNTIME_DIR/scalelab-warm,
else /tmp/scalelab-warm-<uid>.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

SWITCH = "SCALELAB_WARM"
IDLE_VARIABLE = "SCALELAB_WARM_IDLE"
DIR_VARIABLE = "SCALELAB_WARM_DIR"
IDLE_S = 30.0
START_TIMEOUT_S = 300.0  # a worker's imports on a loaded machine: seconds, rarely a minute
# Variables a shell or a test runner changes from one command to the next, which nothing reads
# at import time: left out of the key (the child still gets the job's values).
PER_COMMAND_VARIABLES = frozenset({"PWD", "OLDPWD", "SHLVL", "_", "PYTEST_CURRENT_TEST"})
# A rank of a distributed run (Lightning's launcher, torchrun, srun with several tasks) runs in
# its own process, as its launcher expects.
RANK_VARIABLES = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK")
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
CODE_SUFFIXES = (".py", ".so", ".pyd", ".pth")  # the files of a distribution a worker's imports read
HEADER = struct.Struct("!I")  # the request's length
REPLY = struct.Struct("!cq")  # b"P" child pid, then b"S" its wait status


class Unavailable(Exception):
    """No warm worker can run this job; it runs in the calling process instead."""


def enabled(env: dict) -> bool:
    if any(name in env for name in RANK_VARIABLES) or env.get("SLURM_STEP_NUM_TASKS", "1") not in ("", "1"):
        return False
    return env.get(SWITCH, "").strip() != "0"


def private_dir(env: dict) -> Path:
    """The per-user socket directory, created 0700; refused if someone else owns it or can enter it."""
    if env.get(DIR_VARIABLE):
        folder = Path(env[DIR_VARIABLE])
    elif env.get("XDG_RUNTIME_DIR"):
        folder = Path(env["XDG_RUNTIME_DIR"]) / "scalelab-warm"
    else:
        folder = Path("/tmp") / f"scalelab-warm-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(folder)
    except OSError as exc:
        raise Unavailable(f"{folder}: {exc.strerror}") from None
    import stat

    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise Unavailable(f"{folder}: not a private directory of this user")
    return folder


def _stat_text(path: str) -> str:
    try:
        info = os.stat(path)
    except OSError:
        return f"{path}:-"
    return f"{path}:{info.st_mtime_ns}:{info.st_size}"


def _package_digest(hasher) -> None:
    """Every file of the scalelab package, by relative path and contents."""
    root = os.path.dirname(os.path.abspath(__file__))
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            path = os.path.join(folder, name)
            hasher.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as handle:
                hasher.update(handle.read())


def _library_files() -> list[str]:
    """torch's and Lightning's version files, found without importing them."""
    from importlib.machinery import PathFinder

    files = []
    for package, names in (
        ("torch", ("version.py", "__init__.py")),
        ("lightning", ("__version__.py", "version.info", "__init__.py")),
    ):
        spec = PathFinder.find_spec(package, sys.path)
        folder = os.path.dirname(spec.origin) if spec and spec.origin else None
        files += [os.path.join(folder, name) if folder else f"{package}:absent" for name in names]
    return files


def _affinity() -> list[int] | None:
    """The CPUs this process may run on; None where the platform cannot say (macOS)."""
    getter = getattr(os, "sched_getaffinity", None)
    try:
        return sorted(getter(0)) if getter else None
    except OSError:
        return None


def _niceness() -> int | None:
    """This process's scheduling priority (`nice`), which a worker's children inherit."""
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):
        return None


def _distribution_stats() -> list[str]:
    """Every installed distribution on sys.path: its RECORD (an install, upgrade or removal) and the
    code files it lists (an in-place edit of a dependency), by path, size and mtime: stats only, no
    reads of the code itself."""
    stats = []
    for folder in dict.fromkeys(p for p in sys.path if p and os.path.isdir(p)):
        try:
            records = sorted(e.path for e in os.scandir(folder) if e.name.endswith(".dist-info"))
        except OSError:
            continue
        for info in records:
            record = os.path.join(info, "RECORD")
            stats.append(_stat_text(record))
            try:
                with open(record, encoding="utf-8", errors="replace") as handle:
                    listed = [line.rsplit(",", 2)[0] for line in handle]
            except OSError:
                continue
            stats += [_stat_text(os.path.join(folder, name)) for name in listed if name.endswith(CODE_SUFFIXES)]
    return stats


def worker_key(env: dict, entry: str, preload: list[str]) -> str:
    import hashlib
    import resource

    hasher = hashlib.blake2b(digest_size=12)
    try:
        cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        cgroup = ""
    limits = [resource.getrlimit(getattr(resource, name)) for name in dir(resource) if name.startswith("RLIMIT_")]
    context = {
        "python": [sys.executable, sys.version, repr(sys.flags), sys.warnoptions, sorted(sys._xoptions.items())],
        "path": sys.path,
        "path_stats": [_stat_text(p) for p in sys.path if p],
        "libraries": [_stat_text(p) for p in _library_files()],
        "env": sorted((k, v) for k, v in env.items() if k not in PER_COMMAND_VARIABLES),
        "affinity": _affinity(),
        "niceness": _niceness(),
        "distributions": _distribution_stats(),
        "limits": limits,
        "cgroup": cgroup,
        "user": [os.getuid(), os.getgid(), os.getgroups()],
        "entry": entry,
        "preload": preload,
    }
    hasher.update(json.dumps(context, sort_keys=True, default=str).encode())
    _package_digest(hasher)
    return hasher.hexdigest()


# ---------------------------------------------------------------------------------- the client


def run_in_worker(argv: list[str], entry: str, preload: list[str]) -> int | None:
    """Run `entry(argv[1:])` in a warm worker's child and return its exit code, or None if no
    worker could take the job (then the caller runs it itself; nothing has run)."""
    env = dict(os.environ)
    if not enabled(env):
        return None
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)
    except OSError:
        return None  # a closed standard stream: nothing to hand over
    try:
        folder = private_dir(env)
        key = worker_key(env, entry, preload)
        sock = _connect(folder / f"{key}.sock") or _start_and_connect(folder, key, entry, preload)
    except Unavailable as exc:
        print(f"scalelab: warm worker unavailable ({exc}); running in this process", file=sys.stderr)
        return None
    return _relay(sock, argv, env)


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock


def _start_and_connect(folder: Path, key: str, entry: str, preload: list[str]) -> socket.socket:
    """Start this key's worker (one client at a time, under a lock) and connect to it."""
    import fcntl
    import subprocess

    path = folder / f"{key}.sock"
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another client may be starting it: wait, then connect
        sock = _connect(path)
        if sock:
            return sock
        path.unlink(missing_ok=True)  # a dead worker's socket
        config = json.dumps(
            {
                "socket": str(path),
                "entry": entry,
                "preload": preload,
                "path": sys.path,
                "idle_s": _idle_s(),
                "owner": slurm_job_top() if "SLURM_JOB_ID" in os.environ else None,
            }
        )
        env = dict(os.environ)
        with open(folder / f"{key}.log", "ab") as log:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    *subprocess._args_from_interpreter_flags(),
                    "-c",
                    "import scalelab.warm_worker as w; w.worker_main()",
                    config,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=folder,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            sock = _connect(path)
            if sock:
                return sock
            if worker.poll() is not None:
                raise Unavailable(f"the worker exited with {worker.returncode}; see {folder / (key + '.log')}")
            time.sleep(0.05)
        worker.kill()
        raise Unavailable(f"the worker did not start within {START_TIMEOUT_S:.0f} s")


def slurm_job_top() -> int | None:
    """The process Slurm started for this job step (the child of `slurmstepd` among this process's
    ancestors), or None where there is none (an `salloc` shell) or /proc cannot say. A worker started
    inside a job ends with it, whatever the cluster's process tracking."""
    pid = os.getpid()
    for _ in range(64):
        try:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent <= 1:
                return None
            if Path(f"/proc/{parent}/comm").read_text().strip() == "slurmstepd":
                return pid
        except (OSError, IndexError, ValueError):
            return None
        pid = parent
    return None


def _idle_s() -> float:
    try:
        return float(os.environ.get(IDLE_VARIABLE, IDLE_S))
    except ValueError:
        return IDLE_S


def _relay(sock: socket.socket, argv: list[str], env: dict) -> int | None:
    main = sys.modules.get("__main__")
    ignored = [int(s) for s in FORWARDED if signal.getsignal(s) is signal.SIG_IGN]
    request = json.dumps(
        {
            "argv": argv,
            "cwd": os.getcwd(),
            "env": env,
            "umask": _umask(),
            "path": sys.path,
            "ignored": ignored,
            "main": {
                "spec": getattr(getattr(main, "__spec__", None), "name", None),
                "file": getattr(main, "__file__", None),
            },
        }
    ).encode()
    child = {"pid": 0, "pending": []}

    def forward(signum, frame):
        if child["pid"]:
            signal_group(child["pid"], signum)
        else:
            child["pending"].append(signum)

    for signum in FORWARDED:
        if signum not in ignored:
            signal.signal(signum, forward)
    try:
        socket.send_fds(sock, [HEADER.pack(len(request)) + request], [0, 1, 2])
        kind, pid = _reply(sock)
        if kind != b"P":
            raise OSError("no child")
    except OSError as exc:
        # the request never reached a child: nothing ran, so run it here after all
        for signum in FORWARDED:
            if signum not in ignored:
                signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        print(f"scalelab: warm worker unavailable ({exc}); running in this process", file=sys.stderr)
        for signum in child["pending"]:
            os.kill(os.getpid(), signum)
        return None
    child["pid"] = pid
    for signum in child["pending"]:
        signal_group(pid, signum)
    try:
        kind, status = _reply(sock)
    except OSError:
        print("scalelab: the warm worker died during the job", file=sys.stderr)
        return 1
    return _exit_like(os.waitstatus_to_exitcode(status))


def _exit_like(code: int) -> int:
    """The child's exit code; a child killed by a signal kills this process with the same signal, as
    the job's own process would have died (SIGKILL, the OOM killer's, can take no handler: it is sent
    as is, so a shell sees 137); 128 + the signal if this process survives it."""
    if code < 0:
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(-code, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def _reply(sock: socket.socket) -> tuple[bytes, int]:
    data = b""
    while len(data) < REPLY.size:
        chunk = sock.recv(REPLY.size - len(data))
        if not chunk:
            raise OSError("the worker closed the connection")
        data += chunk
    return REPLY.unpack(data)
