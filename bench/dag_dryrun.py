"""How long Snakemake takes to plan: a dry run of a 1000-point grid (nothing run yet), and a
no-op dry run of a finished study (default: the repository's own results/, after `make run`).

    python bench/dag_dryrun.py [--study-dir .] [--points 1000]

The last line printed is a JSON object with the timings in seconds (best of --repeats).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def dry_run(args: list[str], repeats: int) -> tuple[float, str]:
    best, out = float("inf"), ""
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(
            [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--dry-run", "--cores", "2", *args],
            capture_output=True,
            text=True,
        )
        best = min(best, time.perf_counter() - start)
        out = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise SystemExit(f"dry run failed:\n{out[-3000:]}")
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-dir", type=Path, default=REPO, help="a finished study (for the no-op timing)")
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = {}

    if (args.study_dir / "results/metrics.csv").exists():
        seconds, out = dry_run(["--directory", str(args.study_dir)], args.repeats)
        result["noop_dry_run_s"] = round(seconds, 2)
        result["noop_nothing_to_do"] = "Nothing to be done" in out
        print(f"no-op dry run of {args.study_dir}: {seconds:.2f} s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp)
        (study / "corpus").mkdir()
        (study / "corpus/a.txt").write_text("a small corpus\n")
        models = {f"m{i}": {"n_layer": 2, "d_model": 32 * (i + 1), "n_head": 2} for i in range(10)}
        seeds = max(1, args.points // (10 * 20))
        config = {
            "data": {"source": {"files": ["corpus/*.txt"]}, "allow_repeat": True},
            "models": models,
            "grid": {
                "models": list(models),
                "tokens": [f"{50 * (k + 1)}K" for k in range(20)],
                "seeds": list(range(seeds)),
            },
        }
        (study / "config.yaml").write_text(yaml.safe_dump(config))
        seconds, out = dry_run(["--directory", str(study), "--configfile", str(study / "config.yaml")], args.repeats)
        trains = next((int(line.split()[1]) for line in out.splitlines() if line.startswith("train ")), None)
        result.update(grid_points=trains, grid_dry_run_s=round(seconds, 2))
        print(f"dry run of a {trains}-point grid: {seconds:.2f} s", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
