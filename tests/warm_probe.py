"""An entry point for tests/test_warm.py: what a job's process sees, as `probe <action> ...`."""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def main(argv: list[str]) -> int:
    action = argv[0]
    if action == "echo":  # stdin to stdout, context to stderr, the exit code asked for
        sys.stdout.write("out:" + sys.stdin.read())
        context = {
            "cwd": os.getcwd(),
            "probe": os.environ.get("PROBE"),
            "umask": os.umask(0),
            "argv": sys.argv,
            "ppid": os.getppid(),
        }
        print(json.dumps(context), file=sys.stderr)
        return int(argv[1])
    if action == "sleep":  # until a signal: write the pid, then wait
        with open(argv[1], "w") as handle:
            handle.write(str(os.getpid()))
        try:
            time.sleep(120)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        return 0
    if action == "threads":  # what torch and the BLAS libraries start with
        import torch

        print(
            json.dumps(
                {
                    "intra": torch.get_num_threads(),
                    "interop": torch.get_num_interop_threads(),
                    "omp": os.environ.get("OMP_NUM_THREADS"),
                }
            )
        )
        return 0
    if action == "oom":  # killed as the OOM killer kills: SIGKILL, no handler runs
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "raise":
        raise RuntimeError("probe failure")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
