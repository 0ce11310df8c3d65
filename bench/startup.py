"""What a job pays before it computes: the wall time of importing a stage's module in a fresh
Python, against importing torch alone, measured alternately in one run (so a loaded machine
slows both alike) and reported as medians and ratios.

    python bench/startup.py [--rounds 7] [--python PATH] [--src DIR] [--baseline-src DIR]

`--src` is the scalelab source tree to measure (default: this checkout's); `--baseline-src` adds
another one (e.g. a checkout of main) to the same alternating loop, for a before/after measured
under the same load. The heavy modules each import pulls in are listed from
`python -X importtime`.

In the same loop, a job command's whole start-up: `python -m scalelab train --help` (and
`evaluate --help`), which imports the stage and parses its arguments, run in a fresh process
(SCALELAB_WARM=0) and through a warm worker (scalelab.warm; started before the loop, in a
private directory removed at the end, so the worker exits). `warm_to_cold` is their ratio. The
last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMPORTS = {
    "torch": "import torch",
    "scalelab.train": "import scalelab.train",
    "scalelab.evaluate.command": "import scalelab.evaluate.command",
}
# Modules a train job does not use; `heavy` says which of them an import still loads.
WATCHED = (
    "lightning",
    "torchmetrics",
    "torch._dynamo",
    "sympy",
    "scipy",
    "scipy.signal",
    "scipy.stats",
    "matplotlib",
    "pandas",
)


JOBS = ("train", "evaluate")  # `scalelab <stage> --help`, cold and warm


def seconds(python: str, statement: str | list[str], env: dict) -> float:
    """One fresh Python running `statement` (a `-c` program, or a command's arguments)."""
    arguments = ["-c", statement] if isinstance(statement, str) else statement
    start = time.perf_counter()
    subprocess.run([python, *arguments], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def loaded(python: str, statement: str, env: dict) -> dict[str, float]:
    """The cumulative import seconds of each WATCHED module this statement loads (-X importtime)."""
    proc = subprocess.run(
        [python, "-X", "importtime", "-c", statement], capture_output=True, text=True, env=env, check=True
    )
    found = {}
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() in WATCHED:
            found[parts[2].strip()] = int(parts[1]) / 1e6
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--src", type=Path, default=REPO / "src", help="the scalelab sources to import")
    parser.add_argument("--baseline-src", type=Path, default=None, help="another scalelab source tree, measured alike")
    args = parser.parse_args()
    trees = {"": args.src} | ({" (baseline)": args.baseline_src} if args.baseline_src else {})
    jobs = {}  # label -> (statement, environment)
    for suffix, src in trees.items():
        env = {**os.environ, "PYTHONPATH": str(src.resolve())}
        for name, statement in IMPORTS.items():
            if name != "torch" or not suffix:
                jobs[name + suffix] = (statement, env)
    sockets = tempfile.TemporaryDirectory(prefix="scalelab-warm-bench-")
    env = {
        **os.environ,
        "PYTHONPATH": str(args.src.resolve()),
        "SCALELAB_WARM_DIR": sockets.name,
        "SCALELAB_WARM_IDLE": "600",
    }
    for stage in JOBS:
        command = ["-m", "scalelab", stage, "--help"]
        jobs[f"job {stage}, cold"] = (command, {**env, "SCALELAB_WARM": "0"})
        jobs[f"job {stage}, warm"] = (command, {**env, "SCALELAB_WARM": "1"})
    for statement, env in jobs.values():
        seconds(args.python, statement, env)  # warm the caches once (and start the warm worker)
    times: dict[str, list[float]] = {label: [] for label in jobs}
    labels = list(jobs)
    for i in range(args.rounds):
        for label in labels[i % len(labels) :] + labels[: i % len(labels)]:  # rotate the order each round
            times[label].append(seconds(args.python, *jobs[label]))
    sockets.cleanup()  # the worker finds its socket gone and exits
    median = {label: statistics.median(values) for label, values in times.items()}
    warm_to_cold = {stage: round(median[f"job {stage}, warm"] / median[f"job {stage}, cold"], 3) for stage in JOBS}
    for label, values in times.items():
        print(
            f"{label:32s} median {median[label]:6.2f} s  min {min(values):6.2f} s  "
            f"ratio to torch {median[label] / median['torch']:.2f}"
        )
    print("warm / cold job start-up: " + ", ".join(f"{stage} {ratio:.3f}" for stage, ratio in warm_to_cold.items()))
    heavy = {
        label: loaded(args.python, *jobs[label]) for label in jobs if label != "torch" and not label.startswith("job ")
    }
    for label, found in heavy.items():
        print(f"{label} loads: " + (", ".join(f"{m} {s:.2f} s" for m, s in sorted(found.items())) or "none watched"))
    print(
        json.dumps(
            {
                "src": str(args.src),
                "baseline_src": str(args.baseline_src or ""),
                "rounds": args.rounds,
                "median_s": {k: round(v, 3) for k, v in median.items()},
                "ratio_to_torch": {k: round(v / median["torch"], 2) for k, v in median.items()},
                "warm_to_cold": warm_to_cold,
                "loads": {k: sorted(v) for k, v in heavy.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
