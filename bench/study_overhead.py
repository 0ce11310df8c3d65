"""Where a finished study's time went: per rule, its jobs, their seconds, the stage's own compute
and the start-up and teardown around it, and the training share of the study's core-seconds.

    python bench/study_overhead.py STUDY [--log .snakemake/log/<file>.snakemake.log]

STUDY is a study folder a local Snakemake (`--cores N`) finished. Read, nothing run:
- Snakemake's log (default: the newest one under STUDY/.snakemake/log/ that started jobs): when
  each job started and finished (the log's timestamps have 1-second resolution, so a single job's
  start-up is good to about +-1 s; the medians over many jobs are what to compare), its threads,
  and the cores the invocation was given;
- the stage's own compute: `wall_s` in results/runs/<run>/metrics.json (train) and in each trunk
  segment's sidecar results/trunks/<family>/step<k>.json (trunk), `eval_s` in eval.json
  (evaluate); a train job that restored its run from the run store (its log says so) computed
  nothing. Other rules have no own-compute figure.

Start-up per job = job seconds - own compute (imports, the data's memmaps, writing outputs, the
process itself). Training share = the train and trunk jobs' own compute x their threads, over
the invocation's wall time x its cores. Jobs run inside a Snakemake job group (a cluster profile)
have no time of their own in the log: run this on a local study. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\s*\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")
RULE = re.compile(r"^\s*(?:local)?rule (\w+):")
FINISHED = re.compile(r"^\s*Finished jobid: (\d+) \(Rule: (\w+)\)")
FIELD = re.compile(r"^\s*(jobid|wildcards|threads): (.*)$")
CORES = re.compile(r"^Provided cores: (\d+)")
DATE = re.compile(r"^\s*Date: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")
COMPUTE_KEY = {"train": "wall_s", "trunk": "wall_s", "evaluate": "eval_s"}
TRAINING_RULES = ("train", "trunk")


def _time(text: str) -> datetime:
    return datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y")


def parse_log(text: str) -> dict:
    """Jobs (rule, wildcards, threads, start, end) and the invocation's cores and span."""
    jobs: dict[str, dict] = {}
    cores, first, last, stamp, current = None, None, None, None, None
    for line in text.splitlines():
        if (m := DATE.match(line)) and first is None:
            first = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
        if m := CORES.match(line):
            cores = int(m.group(1))
        if m := STAMP.match(line):
            stamp = last = _time(m.group(1))
            current = None
            continue
        if m := RULE.match(line):
            current = {"rule": m.group(1), "start": stamp, "threads": 1, "wildcards": {}}
            continue
        if current is not None and (m := FIELD.match(line)):
            key, value = m.groups()
            if key == "jobid":
                jobs[value] = current
            elif key == "threads":
                current["threads"] = int(value)
            else:
                current["wildcards"] = dict(part.split("=", 1) for part in value.split(", ") if "=" in part)
            continue
        if (m := FINISHED.match(line)) and m.group(1) in jobs:
            jobs[m.group(1)]["end"] = stamp
    return {
        "jobs": [j for j in jobs.values() if j.get("end") and j.get("start")],
        "cores": cores,
        "start": first,
        "end": last,
    }


def newest_log(study: Path) -> Path:
    logs = sorted((study / ".snakemake/log").glob("*.snakemake.log"), reverse=True)
    for path in logs:
        if "Finished jobid" in path.read_text(errors="replace"):
            return path
    raise SystemExit(f"study_overhead: no Snakemake log with finished jobs under {study / '.snakemake/log'}")


def _restored(log: Path) -> bool:
    try:
        return ": restored from " in log.read_text(errors="replace")
    except OSError:
        return False


def own_compute(study: Path, job: dict) -> float | None:
    """The stage's own seconds, from the file the job wrote; None where there is none."""
    key = COMPUTE_KEY.get(job["rule"])
    wildcards = job["wildcards"]
    if key is None:
        return None
    if job["rule"] == "trunk":
        path = study / "results/trunks" / wildcards.get("family", "") / f"step{wildcards.get('step', '')}.json"
    elif job["rule"] == "train" and _restored(study / "logs/train" / f"{wildcards.get('run', '')}.log"):
        return 0.0  # copied from the run store: its metrics.json keeps the original training's wall_s
    else:
        path = study / "results/runs" / wildcards.get("run", "") / ("metrics.json" if key == "wall_s" else "eval.json")
    try:
        value = json.loads(path.read_text()).get(key)
    except (OSError, ValueError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def summarise(study: Path, log: Path) -> dict:
    parsed = parse_log(log.read_text(errors="replace"))
    if not parsed["jobs"]:
        raise SystemExit(f"study_overhead: {log}: no finished jobs with their own start and end")
    rules: dict[str, dict] = {}
    training_core_s = 0.0
    for job in parsed["jobs"]:
        seconds = (job["end"] - job["start"]).total_seconds()
        compute = own_compute(study, job)
        row = rules.setdefault(job["rule"], {"jobs": 0, "job_s": 0.0, "compute_s": 0.0, "startup_s": []})
        row["jobs"] += 1
        row["job_s"] += seconds
        if compute is not None:
            row["compute_s"] += compute
            row["startup_s"].append(seconds - compute)
            if job["rule"] in TRAINING_RULES:
                training_core_s += compute * job["threads"]
    wall_s = (parsed["end"] - parsed["start"]).total_seconds() if parsed["start"] and parsed["end"] else None
    cores = parsed["cores"]
    study_core_s = wall_s * cores if wall_s and cores else None
    table = {
        rule: {
            "jobs": row["jobs"],
            "job_s": round(row["job_s"], 1),
            "compute_s": round(row["compute_s"], 2) if row["startup_s"] else None,
            "startup_median_s": round(statistics.median(row["startup_s"]), 2) if row["startup_s"] else None,
        }
        for rule, row in sorted(rules.items(), key=lambda item: -item[1]["job_s"])
    }
    return {
        "study": str(study),
        "log": str(log),
        "wall_s": wall_s,
        "cores": cores,
        "study_core_s": study_core_s,
        "training_core_s": round(training_core_s, 1),
        "training_share": round(training_core_s / study_core_s, 4) if study_core_s else None,
        "rules": table,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="a finished study folder")
    parser.add_argument("--log", type=Path, help="a Snakemake log (default: the newest with finished jobs)")
    args = parser.parse_args(argv)
    log = args.log or newest_log(args.study)
    result = summarise(args.study, log)
    print(f"{'rule':<10} {'jobs':>5} {'job s':>9} {'own compute s':>14} {'start-up median s':>18}")
    for rule, row in result["rules"].items():
        compute = "-" if row["compute_s"] is None else f"{row['compute_s']:.1f}"
        startup = "-" if row["startup_median_s"] is None else f"{row['startup_median_s']:.2f}"
        print(f"{rule:<10} {row['jobs']:>5} {row['job_s']:>9.1f} {compute:>14} {startup:>18}")
    share = result["training_share"]
    print(
        f"study: {result['wall_s']} s x {result['cores']} cores = {result['study_core_s']} core-s; training "
        f"{result['training_core_s']} core-s" + (f" ({share:.1%})" if share is not None else "")
    )
    print("(timestamps from Snakemake's log: 1-second resolution per job)", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
