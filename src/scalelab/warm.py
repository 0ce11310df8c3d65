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
Lightning's version files, the environment (but for the few variables a shell or a test runner
changes per command), the CPU affinity, the resource limits, the cgroup (a Slurm job's) and
the user. The environment being in the key means OMP_NUM_THREADS and the like are what they
were when the worker loaded libgomp and OpenBLAS, exactly as in a fresh process; a job's
`--threads` is applied by the command itself, after the fork. The worker runs no torch op and
initialises no CUDA before it forks (it checks the latter).

Any failure before the job starts (no socket, a dead worker, a worker that cannot start) runs the
job in the calling process as before, with one line on stderr. SCALELAB_WARM=0 turns the worker
off, SCALELAB_WARM=1 turns it on where it is off by default (inside a Slurm job, and for a rank
of a distributed run, which always runs in-process). The worker exits after
SCALELAB_WARM_IDLE seconds (default 30) without a job, or when its socket is removed. Sockets
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
_HEADER = struct.Struct("!I")  # the request's length
_REPLY = struct.Struct("!cq")  # b"P" child pid, then b"S" its wait status


class Unavailable(Exception):
    """No warm worker can run this job; it runs in the calling process instead."""


def enabled(env: dict) -> bool:
    if any(name in env for name in RANK_VARIABLES) or env.get("SLURM_STEP_NUM_TASKS", "1") not in ("", "1"):
        return False
    setting = env.get(SWITCH, "").strip()
    if setting in ("0", "1"):
        return setting == "1"
    return "SLURM_JOB_ID" not in env


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
    for package, names in (("torch", ("version.py", "__init__.py")),
                           ("lightning", ("__version__.py", "version.info", "__init__.py"))):
        spec = PathFinder.find_spec(package, sys.path)
        folder = os.path.dirname(spec.origin) if spec and spec.origin else None
        files += [os.path.join(folder, name) if folder else f"{package}:absent" for name in names]
    return files


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
        "path": sys.path, "path_stats": [_stat_text(p) for p in sys.path if p],
        "libraries": [_stat_text(p) for p in _library_files()],
        "env": sorted((k, v) for k, v in env.items() if k not in PER_COMMAND_VARIABLES),
        "affinity": sorted(os.sched_getaffinity(0)), "limits": limits, "cgroup": cgroup,
        "user": [os.getuid(), os.getgid(), os.getgroups()], "entry": entry, "preload": preload,
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
        config = json.dumps({"socket": str(path), "entry": entry, "preload": preload, "path": sys.path,
                             "idle_s": _idle_s()})
        env = dict(os.environ)
        with open(folder / f"{key}.log", "ab") as log:
            worker = subprocess.Popen(
                [sys.executable, *subprocess._args_from_interpreter_flags(), "-c",
                 "import scalelab.warm as w; w.worker_main()", config],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, cwd=folder, env=env,
                start_new_session=True, close_fds=True)
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


def _idle_s() -> float:
    try:
        return float(os.environ.get(IDLE_VARIABLE, IDLE_S))
    except ValueError:
        return IDLE_S


def _relay(sock: socket.socket, argv: list[str], env: dict) -> int | None:
    main = sys.modules.get("__main__")
    ignored = [int(s) for s in FORWARDED if signal.getsignal(s) is signal.SIG_IGN]
    request = json.dumps({
        "argv": argv, "cwd": os.getcwd(), "env": env, "umask": _umask(), "path": sys.path, "ignored": ignored,
        "main": {"spec": getattr(getattr(main, "__spec__", None), "name", None),
                 "file": getattr(main, "__file__", None)},
    }).encode()
    child = {"pid": 0, "pending": []}

    def forward(signum, frame):
        if child["pid"]:
            _signal_group(child["pid"], signum)
        else:
            child["pending"].append(signum)

    for signum in FORWARDED:
        if signum not in ignored:
            signal.signal(signum, forward)
    try:
        socket.send_fds(sock, [_HEADER.pack(len(request)) + request], [0, 1, 2])
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
        _signal_group(pid, signum)
    try:
        kind, status = _reply(sock)
    except OSError:
        print("scalelab: the warm worker died during the job", file=sys.stderr)
        return 1
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # killed by a signal: so is this process, as the job's own process would be
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def _reply(sock: socket.socket) -> tuple[bytes, int]:
    data = b""
    while len(data) < _REPLY.size:
        chunk = sock.recv(_REPLY.size - len(data))
        if not chunk:
            raise OSError("the worker closed the connection")
        data += chunk
    return _REPLY.unpack(data)


# ---------------------------------------------------------------------------------- the worker

def worker_main() -> None:
    config = json.loads(sys.argv[1])
    sys.path[:] = config["path"]
    Worker(Path(config["socket"]), config["entry"], config["preload"], float(config["idle_s"])).serve()


class Worker:
    def __init__(self, path: Path, entry: str, preload: list[str], idle_s: float):
        self.path, self.entry_name, self.preload, self.idle_s = path, entry, preload, idle_s
        self.jobs: dict[int, tuple[socket.socket, int]] = {}  # pidfd -> (connection, child pid)
        self.stopping = False

    def serve(self) -> None:
        import importlib
        import selectors

        module_name, function = self.entry_name.split(":")
        self.entry = getattr(importlib.import_module(module_name), function)
        for name in self.preload:
            importlib.import_module(name)
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():  # a fork would inherit a broken CUDA context
            raise SystemExit("scalelab warm worker: CUDA was initialised while importing; not serving")
        import gc

        gc.collect()
        gc.freeze()  # keep the imported objects' pages shared with the children
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._stop)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staging = self.path.with_name(f"{self.path.name}.{os.getpid()}")
        self.listener.bind(str(staging))
        self.listener.listen(64)
        os.rename(staging, self.path)  # clients connect only to a listening socket
        self.inode = os.stat(self.path).st_ino
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, ("accept", None))
        idle_since = time.monotonic()
        try:
            while True:
                if self.stopping or not self._socket_is_ours():
                    self._close_listener()
                    if not self.jobs:
                        break
                elif not self.jobs and time.monotonic() - idle_since > self.idle_s:
                    break
                for event, _ in self.selector.select(timeout=1.0):
                    what, data = event.data
                    if what == "accept":
                        self._accept()
                    elif what == "exit":
                        self._finish(event.fd)
                    elif what == "client":
                        self._client_event(event.fileobj, data)
                if self.jobs:
                    idle_since = time.monotonic()
        finally:
            self._close_listener()
            self._tidy()

    def _tidy(self) -> None:
        """Remove this key's lock, and its log when empty. (A client that still holds the old lock
        may start a worker beside another's: the one whose socket is replaced exits, no harm.)"""
        log = self.path.with_suffix(".log")
        try:
            if log.stat().st_size == 0:
                log.unlink()
        except OSError:
            pass
        self.path.with_suffix(".lock").unlink(missing_ok=True)

    def _stop(self, signum, frame) -> None:
        self.stopping = True
        for _, pid in self.jobs.values():  # a worker told to stop stops its jobs too
            _signal_group(pid, signum)

    def _socket_is_ours(self) -> bool:
        try:
            return os.stat(self.path).st_ino == self.inode
        except OSError:
            return False

    def _close_listener(self) -> None:
        if getattr(self, "listener", None) is None:
            return
        if self._socket_is_ours():
            self.path.unlink(missing_ok=True)
        self.selector.unregister(self.listener)
        self.listener.close()
        self.listener = None

    def _accept(self) -> None:
        import selectors

        conn, _ = self.listener.accept()
        try:
            _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != os.getuid():
                raise ValueError(f"a client of user {uid}")
            conn.settimeout(10.0)
            request, fds = _receive(conn)
        except (OSError, ValueError) as exc:
            print(f"scalelab warm worker: bad request: {exc}", file=sys.stderr)
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        worker_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            self.worker_pid = worker_pid
            self._child(conn, request, fds)  # never returns
        for fd in fds:
            os.close(fd)
        try:
            os.setpgid(pid, pid)  # as the child does: the client may signal the group at once
        except OSError:
            pass
        pidfd = os.pidfd_open(pid)
        self.jobs[pidfd] = (conn, pid)
        self.selector.register(pidfd, selectors.EVENT_READ, ("exit", None))
        self.selector.register(conn, selectors.EVENT_READ, ("client", pid))
        try:
            conn.sendall(_REPLY.pack(b"P", pid))
        except OSError:
            _signal_group(pid, signal.SIGKILL)

    def _client_event(self, conn: socket.socket, pid: int) -> None:
        try:
            data = conn.recv(64)
        except OSError:
            data = b""
        if not data:  # the client is gone (killed): so goes its job, as a job's own process would
            _signal_group(pid, signal.SIGKILL)
            self.selector.unregister(conn)

    def _finish(self, pidfd: int) -> None:
        conn, pid = self.jobs.pop(pidfd)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        try:
            self.selector.unregister(conn)
        except KeyError:
            pass
        try:
            conn.sendall(_REPLY.pack(b"S", status))
        except OSError:
            pass
        conn.close()

    def _child(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        """In the forked child: become the job's own process, run the entry point, exit."""
        code, interrupted = 1, False
        try:
            os.setpgid(0, 0)
            _die_with_parent(self.worker_pid, request["argv"])
            signal.set_wakeup_fd(-1)
            for signum in (*FORWARDED, signal.SIGCHLD):
                if signum in request["ignored"]:
                    signal.signal(signum, signal.SIG_IGN)
                else:
                    signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
            self.selector.close()
            if self.listener is not None:
                self.listener.close()
            for other, _ in self.jobs.values():
                other.close()
            for pidfd in self.jobs:
                os.close(pidfd)
            conn.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                if fd > 2:
                    os.close(fd)
            os.chdir(request["cwd"])
            os.umask(request["umask"])
            os.environ.clear()
            os.environ.update(request["env"])
            sys.argv[:] = request["argv"]
            sys.path[:] = request["path"]
            _become_main(request["main"])
            sys.stdout.reconfigure(line_buffering=os.isatty(1))  # a fresh process's buffering
            import tempfile

            tempfile.tempdir = None  # found again from the job's environment
            code = self.entry(list(request["argv"][1:]))
        except SystemExit as exc:
            code = exc.code
        except KeyboardInterrupt:
            sys.excepthook(*sys.exc_info())
            interrupted = True
        except BaseException:
            sys.excepthook(*sys.exc_info())
            code = 1
        _exit_like_python(code, interrupted)


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    if len(fds) != 3 or len(data) < _HEADER.size:
        for fd in fds:
            os.close(fd)
        raise ValueError("expected a request and three descriptors")
    (length,) = _HEADER.unpack_from(data)
    body = data[_HEADER.size:]
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            raise ValueError("truncated request")
        body += chunk
    return json.loads(body), fds


def _die_with_parent(worker_pid: int, argv: list[str]) -> None:
    """The job dies with its worker (PR_SET_PDEATHSIG): a killed worker leaves no orphan training.
    Its name (PR_SET_NAME, what `top` and `ps -o comm` show) is the job's: "scalelab train"."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    name = " ".join(["scalelab", *argv[1:2]]).encode()[:15]
    libc.prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME
    if os.getppid() != worker_pid:  # it died before the prctl
        os._exit(1)


def _become_main(main: dict) -> None:
    """`__main__` as the client had it: Lightning starts a DDP rank by re-running it."""
    import importlib.util
    import types

    module = types.ModuleType("__main__")
    module.__builtins__ = __builtins__
    module.__spec__ = importlib.util.find_spec(main["spec"]) if main["spec"] else None
    if main["file"]:
        module.__file__ = main["file"]
    sys.modules["__main__"] = module


def _exit_like_python(code, interrupted: bool) -> None:
    """End the child as the interpreter ends a process: join threads, run atexit, flush, exit."""
    import atexit
    import threading

    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        threading._shutdown()
        atexit._run_exitfuncs()
    except BaseException:
        code = code or 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    if interrupted:  # an uncaught Ctrl-C ends Python by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        code = 130
    os._exit(code & 0xFF)
