"""The warm worker's side (scalelab.warm explains the scheme): a process that has imported torch
and Lightning once, serves on a UNIX socket, and forks a child per job that becomes the job's
command, with its argv, cwd, umask, environment and standard streams."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

from .warm import FORWARDED, HEADER, REPLY, signal_group

# ---------------------------------------------------------------------------------- the worker


def worker_main() -> None:
    config = json.loads(sys.argv[1])
    sys.path[:] = config["path"]
    path, entry, preload, idle_s = Path(config["socket"]), config["entry"], config["preload"], float(config["idle_s"])
    Worker(path, entry, preload, idle_s, owner=config.get("owner")).serve()


class Worker:
    def __init__(self, path: Path, entry: str, preload: list[str], idle_s: float, owner: int | None = None):
        self.path, self.entry_name, self.preload, self.idle_s = path, entry, preload, idle_s
        self.owner = owner  # the Slurm job step's top process (scalelab.warm.slurm_job_top): ends with it
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
        if self.owner:
            try:
                self.selector.register(os.pidfd_open(self.owner), selectors.EVENT_READ, ("owner", None))
            except ProcessLookupError:  # the job has ended already
                self.stopping = True
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
                    elif what == "owner":  # its Slurm job ended: so do the worker and any job left
                        self.selector.unregister(event.fileobj)
                        self._stop(signal.SIGTERM, None)
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
            signal_group(pid, signum)

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
            conn.sendall(REPLY.pack(b"P", pid))
        except OSError:
            signal_group(pid, signal.SIGKILL)

    def _client_event(self, conn: socket.socket, pid: int) -> None:
        try:
            data = conn.recv(64)
        except OSError:
            data = b""
        if not data:  # the client is gone (killed): so goes its job, as a job's own process would
            signal_group(pid, signal.SIGKILL)
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
            conn.sendall(REPLY.pack(b"S", status))
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
    if len(fds) != 3 or len(data) < HEADER.size:
        for fd in fds:
            os.close(fd)
        raise ValueError("expected a request and three descriptors")
    (length,) = HEADER.unpack_from(data)
    body = data[HEADER.size :]
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
