"""The docs are checked against the code: every shell command of README.md, config/README.md,
the example configs' headers, the Snakefile's header and the workflow catalog's flags.

Each command is either run (offline and quick: `scalelab check`, and every `snakemake` command
as a dry run, `-n`, in a folder laid out like the repository with a study in studies/foo) or
skipped for a stated reason (it installs, serves or needs a network, a cluster or a finished
study). Whatever its fate, a `snakemake` command that runs jobs must say how: `--cores` for a
local run, `--profile` for a cluster. The example headers' counts (model sizes, token counts,
runs) are checked against `scalelab check`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

BIN = Path(sys.executable).parent
EXAMPLES = sorted((REPO / "config" / "examples").glob("*.yaml"))
# first word -> why the test does not run it
NOT_RUN = {
    "make": "installs into .venv and runs the whole study or suite",
    "tensorboard": "serves a web page",
    "mlflow": "serves a web page",
    "wandb": "needs a W&B login and the network",
    "snakedeploy": "needs the network",
    "cd": "enters a deployed copy",
}


def _code_blocks(path: Path) -> list[list[str]]:
    text = path.read_text()
    return [block.splitlines() for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, re.S)]


def _commands() -> list[tuple[str, str, str]]:
    """(where, command without its comment, why not run or '') for every documented command."""
    found = []
    for path in (REPO / "README.md", REPO / "config" / "README.md"):
        for number, block in enumerate(_code_blocks(path)):
            skip_rest = ""
            joined = []
            for line in block:  # a command continued with a trailing backslash is one command
                if joined and joined[-1].rstrip().endswith("\\"):
                    joined[-1] = joined[-1].rstrip()[:-1] + " " + line.strip()
                else:
                    joined.append(line)
            for line in joined:
                command = line.split(" #")[0].strip()
                if not command or command.startswith("#"):
                    continue
                word = next(w for w in command.split() if not re.match(r"^\w+=", w))  # after VAR=value
                why = NOT_RUN.get(word, "") or skip_rest
                if word == "cd":
                    skip_rest = f"runs in a folder made by an earlier command of its block ({block[0].split()[0]})"
                found.append((f"{path.name} block {number + 1}", command, why))
    for path in EXAMPLES:
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            match = re.match(r"#\s+((?:snakemake|scalelab) .*)$", line)
            if match:
                found.append((path.name, match.group(1).strip(), ""))
    for line in (REPO / "workflow" / "Snakefile").read_text().splitlines()[:10]:
        for command in re.findall(r"`(snakemake [^`]+)`", line) + re.findall(r"#\s+(snakemake .*)$", line):
            found.append(("workflow/Snakefile", command.strip(), ""))
    flags = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]["mandatory-flags"]["flags"]
    found.append((".snakemake-workflow-catalog.yml", f"snakemake {flags}".strip(), ""))
    for i, (where, command, why) in enumerate(found):
        if not why and "--profile profiles/slurm" in command:
            found[i] = (where, command, "needs a Slurm cluster")
        elif not why and "--report" in command:
            found[i] = (where, command, "needs a finished study (tests/test_ecosystem.py builds one)")
        elif not why and re.match(r"scalelab (prune|suggest)\b", command):
            found[i] = (where, command, "needs a finished study")
        elif not why and "..." in command:
            found[i] = (where, command, "elides its arguments")
    return found


COMMANDS = _commands()


def test_the_docs_have_commands_to_check():
    where = {w.split(" block")[0] for w, _, _ in COMMANDS}
    assert {"README.md", "README.md", "workflow/Snakefile", ".snakemake-workflow-catalog.yml"} <= where
    assert {p.name for p in EXAMPLES} <= where, "every example header shows how to run it"
    assert sum(1 for _, _, why in COMMANDS if not why) >= 8


@pytest.mark.parametrize("where, command", [(w, c) for w, c, _ in COMMANDS if c.startswith("snakemake")])
def test_snakemake_commands_say_how_to_run_jobs(where, command):
    """Without --cores (or a profile that sets the executor), Snakemake refuses a local run."""
    words = shlex.split(command)
    runs_jobs = not {"--report", "--lint", "-n", "--dry-run"} & set(words)
    if runs_jobs:
        assert "--cores" in words or "--profile" in words, f"{where}: {command}"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A folder laid out like the repository (links to it), with a small offline study in
    studies/foo: README's commands use that path."""
    root = tmp_path_factory.mktemp("docs")
    for name in ("Snakefile", "workflow", "config", "profiles"):
        (root / name).symlink_to(REPO / name)
    (root / "studies" / "foo").mkdir(parents=True)
    shutil.copy(REPO / "config" / "examples" / "cosine-4x3.yaml", root / "studies" / "foo" / "config.yaml")
    return root


@pytest.mark.e2e
@pytest.mark.parametrize("where, command", [(w, c) for w, c, why in COMMANDS if not why])
def test_documented_command_runs(sandbox, where, command):
    """Each runnable command, as written; a snakemake command as a dry run (training is long)."""
    words = shlex.split(command)
    if words[0] == "snakemake" and "-n" not in words:
        words.append("-n")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.run(words, cwd=sandbox, capture_output=True, text=True, timeout=300, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{where}: {command}\n{output[-2000:]}"
    assert "Traceback" not in output


def _check(path: Path) -> tuple[int, int, int]:
    """(runs, model sizes, grid token counts) as `scalelab check` lists them."""
    proc = subprocess.run([str(BIN / "scalelab"), "check", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    runs = int(re.search(r"valid, (\d+) runs", proc.stdout).group(1))
    lines = [line for line in proc.stdout.splitlines()[1:] if re.match(r"  \S+: \S+ \(\d+x\d+\), ", line)]
    models = {line.split(": ")[1].split(" (")[0] for line in lines}
    tokens = {line.split(", ")[1] for line in lines if "isoflop budget" not in line}
    assert len(lines) == runs
    return runs, len(models), len(tokens)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_headers_count_what_scalelab_check_lists(path):
    header = " ".join(line.lstrip("# ") for line in path.read_text().splitlines() if line.startswith("#"))
    runs, sizes, tokens = _check(path)
    claims = {"model sizes": sizes, "token counts": tokens, "runs": runs}
    checked = 0
    for words, actual in claims.items():
        for number in re.findall(rf"(\d+) {words}\b", header):
            assert int(number) == actual, f"{path.name}: says {number} {words}, scalelab check lists {actual}"
            checked += 1
    if path.name != "isoflop.yaml":  # it describes its budgets, not counts
        assert checked, f"{path.name}: its header states no count to check"


def test_default_study_script_writes_the_docs_from_a_finished_study(tmp_path):
    """bench/default_study.py --write-docs on a small finished study (a real fit and report of a
    known law): docs/benchmarks.md's marked section and the README figures become that study's."""
    import json

    import pandas as pd

    from test_report import make_study, run_report

    fit = make_study(tmp_path, isoflop=False, extras=False)
    assert run_report(tmp_path) == 0
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    shutil.copy(REPO / "docs" / "benchmarks.md", repo / "docs" / "benchmarks.md")
    before = (repo / "docs" / "benchmarks.md").read_text()
    command = [
        sys.executable,
        str(REPO / "bench" / "default_study.py"),
        "--study",
        str(tmp_path),
        "--write-docs",
        "--repo",
        str(repo),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    text = (repo / "docs" / "benchmarks.md").read_text()
    begin, end = text.index("<!-- default-study:begin"), text.index("<!-- default-study:end -->")
    assert text[:begin] == before[: before.index("<!-- default-study:begin")]  # the rest untouched
    section = text[begin:end]
    a3 = fit["approach3"]
    assert f"| alpha [95 %] | {a3['alpha']:.3g} [{a3['ci95']['alpha'][0]:.3g}, {a3['ci95']['alpha'][1]:.3g}]" in section
    assert f"width **{figures['beta_ci_width']:.3f}**" in section and f"**{figures['flops_ratio']:.3f}**" in section
    metrics = pd.read_csv(tmp_path / "results" / "metrics.csv")
    row = metrics[metrics["model"] == "l"].sort_values("tokens")
    assert f"| {int(row['params'].iloc[0]):,} (l) | " + " | ".join(f"{v:.3f}" for v in row["val_loss"]) in section
    for name in ("loss_vs_params", "frontier"):
        assert (repo / "docs" / f"{name}.png").read_bytes() == (
            tmp_path / "results" / "report" / "figures" / f"{name}.png"
        ).read_bytes()
    assert subprocess.run(command, capture_output=True, text=True, timeout=120).returncode == 0
    assert (repo / "docs" / "benchmarks.md").read_text() == text  # the same study writes the same docs
